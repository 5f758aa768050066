"""Test support for the risk processor: event builders and an in-process runner.

Used by this service's tests and its benchmark; not in the production package (the wheel
holds `risk_processor` only) and on the test path through `pythonpath` in pyproject.toml. The
builders fill every envelope field so a test states only what it is about.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from risk_processor.app import RiskProcessor
from risk_processor.settings import RiskProcessorSettings
from riskwatch_common.broker import free_port
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import (
    Event,
    MarkPriceUpdated,
    OrderUpdated,
    PositionUpdated,
    RiskLimitTableUpdated,
    RiskTier,
    Side,
    WalletUpdated,
)
from riskwatch_common.kafka import Producer
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import read_topic, wait_until
from riskwatch_common.topics import ACCOUNT_EVENTS, MARK_PRICES, RISK_LIMITS, TopicSpec

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)

D = Decimal


def _envelope(prefix: str, at: datetime, correlation_id: str | None) -> dict[str, Any]:
    n = next(_ids)
    return {
        "event_id": f"{prefix}-{n}",
        "occurred_at": at,
        "produced_at": datetime.now(UTC),
        "source": "test",
        "correlation_id": correlation_id or f"corr-{prefix}-{n}",
    }


def position(
    account: str,
    symbol: str,
    side: Side | None,
    size: str | int,
    entry: str | int,
    leverage: str | int | None,
    *,
    seq: int = 1,
    idx: int = 0,
    mark: str | int | None = None,
    liq: str | int | None = None,
    risk_id: int | None = None,
    at: datetime = T0,
    correlation_id: str | None = None,
) -> PositionUpdated:
    return PositionUpdated(
        **_envelope(f"pos-{account}-{symbol}", at, correlation_id),
        account=account,
        symbol=symbol,
        position_idx=idx,
        side=side,
        size=D(size),
        entry_price=D(entry),
        leverage=D(leverage) if leverage is not None else None,
        mark_price=D(mark) if mark is not None else None,
        liq_price=D(liq) if liq is not None else None,
        risk_id=risk_id,
        seq=seq,
        updated_at=at,
    )


def order(
    account: str,
    symbol: str,
    order_id: str,
    side: Side,
    qty: str | int,
    price: str | int,
    *,
    status: str = "New",
    reduce_only: bool = False,
    at: datetime = T0,
) -> OrderUpdated:
    return OrderUpdated(
        **_envelope(f"ord-{account}-{order_id}", at, None),
        account=account,
        symbol=symbol,
        order_id=order_id,
        side=side,
        order_type="Limit",
        order_status=status,
        price=D(price),
        qty=D(qty),
        leaves_qty=D(qty) if status in OrderUpdated.OPEN_STATUSES else D(0),
        reduce_only=reduce_only,
        updated_at=at,
    )


def wallet(
    account: str,
    *,
    equity: str | int,
    margin_balance: str | int | None = None,
    maintenance_margin: str | int = 0,
    initial_margin: str | int = 0,
    perp_upl: str | int = 0,
    account_type: str = "UNIFIED",
    at: datetime = T0,
) -> WalletUpdated:
    margin = D(margin_balance if margin_balance is not None else equity)
    return WalletUpdated(
        **_envelope(f"wallet-{account}", at, None),
        account=account,
        account_type=account_type,
        total_equity=D(equity),
        total_wallet_balance=D(equity),
        total_margin_balance=margin,
        total_available_balance=margin,
        total_perp_upl=D(perp_upl),
        total_initial_margin=D(initial_margin),
        total_maintenance_margin=D(maintenance_margin),
        account_mm_rate=D(maintenance_margin) / margin if margin else None,
    )


def mark(symbol: str, price: str | int, *, at: datetime | None = None) -> MarkPriceUpdated:
    return MarkPriceUpdated(
        **_envelope(f"mark-{symbol}", at or datetime.now(UTC), None),
        symbol=symbol,
        mark_price=D(price),
    )


TierRow = tuple[int, str | int, str, str, str | int, str | int]
"""(tier id, risk-limit value, MMR, IMR, max leverage, MM deduction), rates as fractions."""

BRIEF_BTC_TIERS: tuple[TierRow, ...] = (
    (1, 1_000_000, "0.0050", "0.0100", 100, 0),
    (2, 2_600_000, "0.0056", "0.0111", 90, 600),
    (3, 3_200_000, "0.0062", "0.0125", 80, 2160),
)
"""The illustrative BTCUSDT table of docs/product.md (deductions per its formula)."""


def tier_table(symbol: str, rows: Sequence[TierRow], *, at: datetime = T0) -> RiskLimitTableUpdated:
    return RiskLimitTableUpdated(
        **_envelope(f"tiers-{symbol}", at, None),
        symbol=symbol,
        tiers=tuple(
            RiskTier(
                tier_id=tier_id,
                risk_limit_value=D(limit),
                maintenance_margin_rate=D(mmr),
                initial_margin_rate=D(imr),
                max_leverage=D(lev),
                mm_deduction=D(ded),
            )
            for tier_id, limit, mmr, imr, lev, ded in rows
        ),
    )


def _spec_and_key(event: Event) -> tuple[TopicSpec, str]:
    if isinstance(event, MarkPriceUpdated):
        return MARK_PRICES, event.symbol
    if isinstance(event, RiskLimitTableUpdated):
        return RISK_LIMITS, event.symbol
    return ACCOUNT_EVENTS, event.account  # type: ignore[attr-defined]


async def publish(kafka: KafkaSettings, events: Iterable[Event]) -> None:
    """Send events to their registry topics, keyed as the ingestor keys them."""
    producer = Producer(kafka, service="test")
    await producer.start()
    try:
        for event in events:
            spec, key = _spec_and_key(event)
            await producer.send(spec, key, event)
        await producer.flush()
    finally:
        await producer.stop()


async def publish_paced(kafka: KafkaSettings, events: Sequence[Event], per_second: float) -> None:
    """Send ``events`` at ``per_second`` (a stimulus with a rate, e.g. a mark-price burst)."""
    producer = Producer(kafka, service="test")
    await producer.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for i, event in enumerate(events):
            delay = start + i / per_second - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            spec, key = _spec_and_key(event)
            await producer.send_and_wait(spec, key, event)
    finally:
        await producer.stop()


async def publish_raw(kafka: KafkaSettings, spec: TopicSpec, key: str, value: bytes) -> None:
    producer = Producer(kafka, service="test")
    await producer.start()
    try:
        await (await producer.send_raw(spec.qualified(kafka.topic_namespace), key.encode(), value))
    finally:
        await producer.stop()


async def read_models(
    kafka: KafkaSettings, spec: TopicSpec, *, min_records: int = 0, timeout: float = 5.0
) -> list[Any]:
    """Every record of ``spec`` from the beginning, decoded with the registry model."""
    records = await read_topic(kafka, spec, min_records=min_records, timeout=timeout)
    return [spec.decode(value) for _, value in records]


def settings_for(kafka: KafkaSettings, data_dir: Path, **overrides: Any) -> RiskProcessorSettings:
    return RiskProcessorSettings(kafka=kafka, http_port=0, data_dir=data_dir, **overrides)


@contextlib.asynccontextmanager
async def running(
    kafka: KafkaSettings, data_dir: Path, *, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[RiskProcessor]:
    """A risk processor in this process and event loop, ready (assigned and recovered);
    ``clock`` replaces its wall clock (e.g. a ``FakeClock`` to move past a deadline)."""
    proc = RiskProcessor(settings_for(kafka, data_dir, **overrides), clock=clock or utc_now)
    task = asyncio.ensure_future(proc.run())

    def ready() -> bool:
        if task.done():
            task.result()  # raise what stopped it
        return proc.ready

    try:
        await wait_until(ready, timeout=60, message="risk processor ready")
        yield proc
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Worker:
    """``python -m risk_processor`` as a child process, configured like a deployment."""

    def __init__(
        self, kafka: KafkaSettings, data_dir: Path, log: Path, *, instance: str = "0"
    ) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            **kafka.as_env(),
            "RISK_PROCESSOR_HTTP_PORT": str(self.port),
            "RISK_PROCESSOR_DATA_DIR": str(data_dir),
            "RISK_PROCESSOR_INSTANCE": instance,
            "LOG_FORMAT": "console",
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "risk_processor"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def get(self, path: str) -> tuple[int, bytes]:
        """``GET path`` on the worker's HTTP server: (status, body); (0, b"") if down."""
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{self.port}{path}") as r,
            ):
                return r.status, await r.read()
        except aiohttp.ClientError:
            return 0, b""

    async def ready(self, timeout: float = 60) -> None:
        async def answers() -> bool:
            assert self.alive, self.log.read_text(errors="replace")
            return (await self.get("/readyz"))[0] == 200

        await wait_until(answers, timeout=timeout, interval=0.2, message="worker ready")

    def kill(self, sig: signal.Signals) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
