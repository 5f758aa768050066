"""Account-link statuses on a real broker: ``account_link`` alerts on ``risk.alerts.v1``,
the query API's link status, and the portfolio warm-up waiting for the first resync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from processor_testkit import mark, position, publish, read_models, running, wallet
from riskwatch_common.contracts import (
    AccountStatusChanged,
    ActionKind,
    AlertTransition,
    ExposureSnapshotted,
    RiskAlertChanged,
    Severity,
    Side,
    StreamStatus,
)
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import wait_until
from riskwatch_common.topics import ALERTS, EXPOSURES

pytestmark = pytest.mark.integration

_n = iter(range(1, 1_000_000))


def status(account: str, value: StreamStatus, **fields: Any) -> AccountStatusChanged:
    n = next(_n)
    now = datetime.now(UTC)
    return AccountStatusChanged(
        event_id=f"status-{account}-{n}-{now.timestamp()}",
        occurred_at=now,
        produced_at=now,
        source="test",
        correlation_id=f"corr-status-{account}-{n}",
        account=account,
        status=value,
        **fields,
    )


async def _link_alerts(kafka: KafkaSettings, account: str) -> list[RiskAlertChanged]:
    return [
        a
        for a in await read_models(kafka, ALERTS, timeout=0.5)
        if a.account == account and a.rule == "account_link"
    ]


async def _row(base: str, account: str) -> dict[str, Any] | None:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/accounts") as r:
        body = orjson.loads(await r.read())
    return next((row for row in body["accounts"] if row["account"] == account), None)


async def test_link_statuses_raise_and_resolve_account_link_alerts_seen_by_the_query_api(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    down_since = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    async with running(kafka, tmp_path) as proc:
        base = f"http://127.0.0.1:{proc.http.port}"
        await publish(
            kafka,
            [
                mark("BTCUSDT", 70000),
                status("sub_x", StreamStatus.CONNECTED),
                position("sub_x", "BTCUSDT", Side.BUY, "0.1", 69000, 5),
                status("sub_x", StreamStatus.RESYNCED),
            ],
        )
        await wait_until(lambda: _row(base, "sub_x"), message="sub_x evaluated")
        await publish(
            kafka,
            [status("sub_x", StreamStatus.LINK_DOWN, down_since=down_since, reason="no data")],
        )

        [alert] = await wait_until(
            lambda: _link_alerts(kafka, "sub_x"), message="account_link raised"
        )
        assert alert.transition is AlertTransition.RAISED
        assert alert.severity is Severity.HIGH
        assert alert.subject == "account"
        assert f"since {down_since:%H:%M} UTC" in alert.reason
        assert alert.action is not None
        assert alert.action.kind is ActionKind.CHECK_LINK

        async def down() -> dict[str, Any] | None:
            row = await _row(base, "sub_x")
            return row if row is not None and row["link"]["status"] == "down" else None

        row = await wait_until(down, message="query API shows the link down")
        assert "no data from Bybit for sub_x" in row["link"]["reason"]

        # A key refused on an account that never sent any data: raised all the same.
        await publish(kafka, [status("sub_y", StreamStatus.AUTH_FAILED, ret_code=10003)])
        [refused] = await wait_until(
            lambda: _link_alerts(kafka, "sub_y"), message="sub_y account_link raised"
        )
        assert refused.severity is Severity.CRITICAL
        assert "refused the API key of sub_y" in refused.reason

        # The stream is back: resolved by that one status, with no further event.
        await publish(kafka, [status("sub_x", StreamStatus.RESYNCED)])

        async def resolved() -> list[RiskAlertChanged] | None:
            got = await _link_alerts(kafka, "sub_x")
            return got if len(got) == 2 else None

        transitions = await wait_until(resolved, message="account_link resolved")
        assert [a.transition for a in transitions] == [
            AlertTransition.RAISED,
            AlertTransition.RESOLVED,
        ]

        async def ok() -> bool:
            row = await _row(base, "sub_x")
            return row is not None and row["link"]["status"] == "ok"

        await wait_until(ok, message="query API shows the link ok again")


async def test_portfolio_rules_wait_for_the_first_resync_then_time_out_without_new_events(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(
        "thresholds: {net_exposure_usd: 1000}\nportfolio_warmup: {timeout_s: 3}\n"
    )
    async with running(kafka, tmp_path, thresholds_file=thresholds):
        # Both accounts report a link; only main completes its first resync.
        await publish(
            kafka,
            [
                mark("ETHUSDT", 3500),
                status("main", StreamStatus.CONNECTED),
                status("sub_late", StreamStatus.CONNECTED),
                position("main", "ETHUSDT", Side.BUY, 2, 3400, 5),
                wallet("main", equity=50000),
                status("main", StreamStatus.RESYNCED),
            ],
        )

        async def portfolio() -> ExposureSnapshotted | None:
            for s in reversed(await read_models(kafka, EXPOSURES, timeout=0.5)):
                if s.account == "portfolio" and s.net == Decimal(7000):
                    return s  # type: ignore[no-any-return]
            return None

        await wait_until(portfolio, message="portfolio snapshot with main's 7,000 net")
        # Warm-up: sub_late has not resynced, so no portfolio alert yet although net > 1,000.
        assert await _portfolio_alerts(kafka) == []
        # No further event: the snapshot timer re-evaluates and the timeout fires.
        [alert] = await wait_until(
            lambda: _portfolio_alerts(kafka), timeout=30, message="warm-up timed out"
        )
        assert alert.rule == "net_exposure_usd"
        assert "warm-up timed out: 1 account(s) not loaded yet: sub_late" in alert.reason
        assert alert.numbers["accounts_missing"] == Decimal(1)


async def _portfolio_alerts(kafka: KafkaSettings) -> list[RiskAlertChanged]:
    return [a for a in await read_models(kafka, ALERTS, timeout=0.5) if a.account == "portfolio"]


async def test_an_open_link_alert_survives_a_restart_and_resolves_after_it(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    down_since = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    async with running(kafka, tmp_path):
        await publish(
            kafka,
            [status("sub_r", StreamStatus.LINK_DOWN, down_since=down_since, reason="no data")],
        )
        await wait_until(lambda: _link_alerts(kafka, "sub_r"), message="account_link raised")
    async with running(kafka, tmp_path) as proc:
        # The link state came back with the risk table's changelog.
        held = await wait_until(lambda: proc.risk.get("sub_r"), message="risk book restored")
        assert held.link is not None
        assert held.link.stream == "link_down"
        assert held.link.since == down_since
        await publish(kafka, [status("sub_r", StreamStatus.CONNECTED)])

        async def resolved() -> list[RiskAlertChanged] | None:
            got = await _link_alerts(kafka, "sub_r")
            return got if got and got[-1].transition is AlertTransition.RESOLVED else None

        transitions = await wait_until(resolved, message="resolved after the restart")
    # Raised once (not again after the restart), then resolved.
    assert [a.transition for a in transitions] == [
        AlertTransition.RAISED,
        AlertTransition.RESOLVED,
    ]
