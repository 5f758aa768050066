"""Test support for the query API: a ``LiveState`` over plain dicts, snapshot builders,
and the routes served on a real local port. Used by the query API's tests and the CLI's;
nothing here runs in production."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web
from pydantic import SecretStr

from risk_processor.engine import (
    AccountProfile,
    Order,
    Position,
    Side,
    Wallet,
    load_tier_table,
)
from risk_processor.query import http
from risk_processor.query.live import AccountInputs, NotOwned, UnknownAccount
from risk_processor.query.views import alerts_key, exposure_key
from riskwatch_common.clock import Clock
from riskwatch_common.testkit import BRIEF_BTC_ROWS

D = Decimal
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

BRIEF_ROWS = BRIEF_BTC_ROWS


def bob_inputs() -> AccountInputs:
    """Bob of docs/product.md: a 1 M BTCUSDT long at 90x and a resting 1 M buy."""
    return AccountInputs(
        profile=AccountProfile("bob"),
        positions=(Position("bob", "BTCUSDT", 0, Side.BUY, D(20), D(50000), D(90)),),
        orders=(Order("resting", "BTCUSDT", Side.BUY, D(50000), D(20)),),
        wallet=Wallet(D(100000), D(100000), D(100000), D(11111), D(5000), D("0.05"), None, D(0)),
        tables={"BTCUSDT": load_tier_table("BTCUSDT", BRIEF_ROWS).table},
        marks={"BTCUSDT": D(50000)},
    )


def snapshot(
    account: str,
    *,
    net: str,
    equity: str | None = "20000",
    at: datetime = T0,
    positions: tuple[dict[str, Any], ...] = (),
    risk_level: str = "LOW",
    mm_rate: str | None = "0.05",
) -> bytes:
    """An ``ExposureSnapshotted`` in wire form, as the processor stores it in ``views``."""
    n = D(net)
    doc = {
        "event_id": f"snap-{account}-{net}",
        "event_type": "ExposureSnapshotted",
        "schema_version": 1,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "produced_at": at.isoformat().replace("+00:00", "Z"),
        "source": "test",
        "correlation_id": f"corr-{account}",
        "scope": "portfolio" if account == "portfolio" else "account",
        "account": account,
        "accounts": [account],
        "total_long": str(max(n, D(0))),
        "total_short": str(max(-n, D(0))),
        "net": net,
        "gross": str(abs(n)),
        "equity": equity,
        "unrealised_pnl": "125.5",
        "account_mm_rate": mm_rate,
        "risk_level": risk_level,
        "positions": list(positions),
    }
    return orjson.dumps(doc)


def position_row(
    account: str, symbol: str, notional: str, *, liq_pct: str | None, headroom: str | None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "account": account,
        "symbol": symbol,
        "side": "Buy",
        "size": "1",
        "notional": notional,
    }
    if liq_pct is not None:
        row["liquidation_distance_pct"] = liq_pct
    if headroom is not None:
        row["headroom_to_next_tier"] = headroom
    return row


def alert_state(
    account: str, rule: str, *, severity: str = "WARNING", value: str = "12000",
    threshold: str = "10000", subject: str = "account", reason: str = "net above the limit",
) -> dict[str, Any]:  # fmt: skip
    return {
        "alert_id": f"{account}/{rule}/{subject}",
        "account": account,
        "rule": rule,
        "subject": subject,
        "severity": severity,
        "notified_severity": severity,
        "raised_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
        "absent_count": 0,
        "lower_count": 0,
        "value": value,
        "threshold": threshold,
        "reason": reason,
        "numbers": {"value": value, "threshold": threshold},
    }


@dataclass
class FakeState:
    """``LiveState`` over dicts: ``views`` as the processor stores it, ``inputs`` per
    account, and the accounts another worker owns (by partition)."""

    views_: dict[str, bytes] = field(default_factory=dict)
    inputs: dict[str, AccountInputs] = field(default_factory=dict)
    elsewhere: dict[str, int] = field(default_factory=dict)
    stopping: bool = False

    def views(self) -> Mapping[str, bytes]:
        return self.views_

    def closing(self) -> bool:
        return self.stopping

    def account_inputs(self, account: str, symbol: str) -> AccountInputs:
        if account in self.elsewhere:
            raise NotOwned(account, self.elsewhere[account])
        if account not in self.inputs:
            raise UnknownAccount(account)
        return self.inputs[account]

    def put_snapshot(self, account: str, body: bytes) -> None:
        self.views_[exposure_key(account)] = body

    def put_alerts(self, account: str, states: list[dict[str, Any]]) -> None:
        self.views_[alerts_key(account)] = orjson.dumps(states)


def demo_state() -> FakeState:
    """The sample portfolio's accounts (docs/product.md) with a few figures and alerts."""
    s = FakeState()
    s.put_snapshot(
        "main",
        snapshot("main", net="52600", equity="20000", risk_level="HIGH", positions=(
            position_row("main", "BTCUSDT", "35000", liq_pct="8.25", headroom="965000"),
            position_row("main", "ETHUSDT", "17600", liq_pct="19.5", headroom="982400"),
        )),
    )  # fmt: skip
    s.put_snapshot(
        "sub_trading",
        snapshot("sub_trading", net="-17650", equity="8000", positions=(
            position_row("sub_trading", "SOLUSDT", "17650", liq_pct="40.1", headroom="482350"),
        )),
    )  # fmt: skip
    s.put_snapshot("sub_hedge", snapshot("sub_hedge", net="11680", equity="5000"))
    s.put_snapshot("portfolio", snapshot("portfolio", net="46630", equity="33000"))
    s.put_alerts("main", [alert_state("main", "net_exposure_usd", value="52600")])
    s.put_alerts(
        "portfolio",
        [alert_state("portfolio", "net_exposure_usd", value="46630", subject="portfolio")],
    )
    s.inputs["bob"] = bob_inputs()
    s.elsewhere["far_away"] = 7
    return s


@contextlib.asynccontextmanager
async def serving(
    state: Any,
    *,
    token: str | None = None,
    clock: Clock | None = None,
    poll_s: float = 0.05,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[str]:
    """The query API's routes over ``state`` on a free local port; yields the base URL."""
    app = web.Application()
    app.add_routes(
        http.routes(
            state,
            token=SecretStr(token) if token else None,
            clock=clock or (lambda: T0),
            stream_poll_s=poll_s,
        )
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
