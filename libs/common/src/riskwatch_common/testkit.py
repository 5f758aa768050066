"""Test helpers shared by unit and integration tests of every member.

Kafka comes from ``KAFKA_BOOTSTRAP_SERVERS`` when set, otherwise from the local broker
``RISKWATCH_BROKER`` selects, started once per test session; each test isolates itself
with its own topic namespace.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from riskwatch_common.contracts import (
    AlertTransition,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    new_event_id,
)
from riskwatch_common.kafka import client_kwargs
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import TopicSpec

BRIEF_BTC_ROWS: tuple[dict[str, object], ...] = (
    {"id": 1, "riskLimitValue": "1000000", "maintenanceMargin": "0.0050",
     "initialMargin": "0.0100", "maxLeverage": "100", "mmDeduction": ""},
    {"id": 2, "riskLimitValue": "2600000", "maintenanceMargin": "0.0056",
     "initialMargin": "0.0111", "maxLeverage": "90", "mmDeduction": "600"},
    {"id": 3, "riskLimitValue": "3200000", "maintenanceMargin": "0.0062",
     "initialMargin": "0.0125", "maxLeverage": "80", "mmDeduction": "2160"},
)  # fmt: skip
"""docs/product.md's illustrative BTCUSDT risk-limit table as Bybit's ``/v5/market/risk-limit``
rows (tier 1's ``mmDeduction`` blank, as Bybit sends it): the one copy the tests share."""


class FakeClock:
    """Wall and monotonic time that move only when a test says so.

    ``clock()`` is the wall clock (``riskwatch_common.clock.Clock``), ``clock.monotonic()``
    the monotonic one; ``advance(seconds)`` moves both.
    """

    def __init__(self, start: datetime = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)) -> None:
        self.now = start
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


def make_alert(
    account: str = "main",
    rule: str = "net_exposure",
    subject: str = "account",
    *,
    transition: AlertTransition = AlertTransition.RAISED,
    severity: Severity = Severity.HIGH,
    reason: str = "Net exposure 12,500 USD > 10,000 USD",
    numbers: dict[str, Decimal] | None = None,
    event_id: str | None = None,
    at: datetime = datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
) -> RiskAlertChanged:
    """One alert transition with every envelope field filled: the test kit's one factory."""
    return RiskAlertChanged(
        event_id=event_id or new_event_id(),
        occurred_at=at,
        produced_at=at,
        source="risk-processor/0",
        correlation_id="corr-7f3a",
        alert_id=f"{account}:{rule}:{subject}",
        transition=transition,
        account=account,
        rule=rule,
        subject=subject,
        severity=severity,
        risk_level=RiskLevel.HIGH,
        reason=reason,
        numbers=numbers
        if numbers is not None
        else {"net_exposure_usd": Decimal("12500"), "threshold_usd": Decimal("10000")},
    )


def external_bootstrap() -> str | None:
    """The cluster named by the environment, if any."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


def fresh_namespace() -> str:
    """A fresh topic namespace, so tests sharing a broker never share topics."""
    return f"t{uuid.uuid4().hex[:10]}."


async def wait_until(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


async def read_topic(
    kafka: KafkaSettings, spec: TopicSpec, *, min_records: int = 1, timeout: float = 20.0
) -> list[tuple[bytes | None, bytes]]:
    """Every record of a topic from the beginning (key, value), waiting for ``min_records``."""
    topic = spec.qualified(kafka.topic_namespace)
    consumer = AIOKafkaConsumer(
        **client_kwargs(kafka), enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(kafka.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            for recs in batch.values():
                out.extend((r.key, r.value or b"") for r in recs)
            if len(out) >= min_records and not batch:
                break
        return out
    finally:
        await consumer.stop()


_TELEGRAM_TAGS = {"b", "i", "code"}


class _Checker(HTMLParser):
    """Checks what Telegram checks: known tags, full nesting, no raw < or & in text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[Any]) -> None:
        if tag not in _TELEGRAM_TAGS or attrs:
            self.problems.append(f"tag {tag}")
        if "code" in self.stack:
            self.problems.append("tag inside code")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unbalanced {tag}")

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self.problems.append(f"raw bracket in {data!r}")

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self.problems.append(f"entity {name}")


def assert_valid_telegram_html(text: str) -> None:
    """Fail unless ``text`` is HTML Telegram accepts (known tags, nested, escaped)."""
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert not checker.problems, (checker.problems, text)
    assert not checker.stack, text
    # every & starts an entity Telegram knows
    for i, ch in enumerate(text):
        if ch == "&":
            assert text[i:].startswith(("&lt;", "&gt;", "&amp;", "&quot;")), text


class ServiceProcess:
    """A service run as its own process (``python -m module``), as in production.

    Output goes to ``log_path`` so a failing test can show what the service said.
    """

    def __init__(self, module: str, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: the crash a restart must recover from."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (graceful shutdown); SIGKILL if it does not stop in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self, tail: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])
