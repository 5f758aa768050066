"""Market data through the processor: tier-table changes and mark-price bursts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from processor_testkit import (
    BRIEF_BTC_TIERS,
    mark,
    position,
    publish,
    publish_paced,
    read_models,
    running,
    tier_table,
    wallet,
)
from riskwatch_common.contracts import (
    AlertTransition,
    ExposureSnapshotted,
    RiskAlertChanged,
    Severity,
    Side,
)
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import FakeClock, wait_until
from riskwatch_common.topics import ALERTS, EXPOSURES

pytestmark = pytest.mark.integration

D = Decimal

# BTCUSDT tightened: every tier's MMR at least doubles and max leverage drops. Deductions
# follow the formula in docs/product.md: 500,000 x (0.02 - 0.01) = 5,000; 1,000,000 x 0.02 + 5,000.
TIGHTER_BTC = (
    (1, 500_000, "0.01", "0.02", 50, 0),
    (2, 1_000_000, "0.02", "0.04", 25, 5_000),
    (3, 2_000_000, "0.04", "0.08", "12.5", 25_000),
)


async def _snapshots(kafka: KafkaSettings, account: str) -> list[ExposureSnapshotted]:
    return [s for s in await read_models(kafka, EXPOSURES, timeout=0.5) if s.account == account]


async def test_tier_table_tightening_starts_a_grace_period_for_a_risky_account_and_applies_at_once_to_a_safe_one(  # noqa: E501
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    changed_at = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    async with running(kafka, tmp_path) as proc:
        await publish(
            kafka,
            [
                tier_table("BTCUSDT", BRIEF_BTC_TIERS),
                mark("BTCUSDT", 70000),
                # Unified accounts: the trial calculation is the account MM rate.
                wallet("risky", equity=20_000),
                wallet("safe", equity=50_000),
            ],
        )
        await wait_until(lambda: proc.marks.get("BTCUSDT") and proc.tiers.get("BTCUSDT"))
        await publish(
            kafka,
            [
                # 1.4 M in tier 2 of the old table: MM 1.4 M x 0.56 % - 600 = 7,240 (36 %).
                position("risky", "BTCUSDT", Side.BUY, 20, 70000, 10),
                # 35,000 in tier 1: MM 175.
                position("safe", "BTCUSDT", Side.BUY, "0.5", 70000, 5),
            ],
        )
        for account in ("risky", "safe"):
            await wait_until(lambda a=account: _snapshots(kafka, a), message=f"{account} seen")

        await publish(kafka, [tier_table("BTCUSDT", TIGHTER_BTC, at=changed_at)])

        async def platform_alerts() -> dict[str, RiskAlertChanged] | None:
            found = {
                a.account: a
                for a in await read_models(kafka, ALERTS, timeout=0.5)
                if a.rule == "platform_risk_change"
            }
            return found if len(found) == 2 else None

        found = await wait_until(platform_alerts, message="both accounts' trial calculation")

    risky = found["risky"]
    # New table: 1.4 M is in tier 3: 1.4 M x 4 % - 25,000 = 31,000 of MM on a 20,000
    # margin balance = 155 %, not below 75 %: higher risk, so a 10-day grace period.
    assert risky.transition is AlertTransition.RAISED
    assert risky.severity is Severity.HIGH
    assert risky.subject == "BTCUSDT"
    assert risky.numbers["new_mm_rate"] == D("1.55")
    deadline = changed_at + timedelta(days=10)
    assert f"reduce-only until {deadline.isoformat()}" in risky.reason
    assert risky.numbers["margin_to_add"] > 0

    safe = found["safe"]
    # 35,000 x 1 % = 350 on 50,000 = 0.7 % < 75 %: the new parameters apply at once.
    assert safe.severity is Severity.INFO
    assert "apply at once" in safe.reason
    assert safe.numbers["new_mm_rate"] == D("0.007")


async def test_mark_price_burst_gives_a_bounded_number_of_snapshots_ending_at_the_last_price(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    seconds, per_second = 3, 10
    prices = [3500 + i for i in range(1, seconds * per_second + 1)]
    async with running(kafka, tmp_path):
        await publish(
            kafka, [mark("ETHUSDT", 3500), position("burst", "ETHUSDT", Side.BUY, 2, 3500, 5)]
        )
        await wait_until(lambda: _snapshots(kafka, "burst"), message="first snapshot")
        before = len(await _snapshots(kafka, "burst"))
        await publish_paced(kafka, [mark("ETHUSDT", p) for p in prices], per_second)

        async def settled() -> list[ExposureSnapshotted] | None:
            got = await _snapshots(kafka, "burst")
            return got if got[-1].total_long == 2 * prices[-1] else None

        snapshots = await wait_until(settled, message="a snapshot at the last price")

    during = snapshots[before:]
    # Re-evaluation on mark moves is at most once a second per account, plus the first
    # move at once: 30 ticks in 3 s give at most 3 + 2 snapshots, not 30.
    assert 1 <= len(during) <= seconds + 2
    last = during[-1]
    assert last.unrealised_pnl == 2 * (prices[-1] - 3500)
    assert last.positions[0].notional == 2 * prices[-1]


async def test_an_idle_account_is_re_evaluated_when_its_grace_period_ends(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    # Nothing about the account changes after the tightening; only time passes the
    # grace period's deadline, and the new table must apply then, unprompted.
    clock = FakeClock(datetime.now(UTC))
    async with running(kafka, tmp_path, clock=clock) as proc:
        await publish(
            kafka,
            [
                tier_table("BTCUSDT", BRIEF_BTC_TIERS),
                mark("BTCUSDT", 70000),
                wallet("idle", equity=20_000),
            ],
        )
        await wait_until(lambda: proc.marks.get("BTCUSDT") and proc.tiers.get("BTCUSDT"))
        await publish(kafka, [position("idle", "BTCUSDT", Side.BUY, 20, 70000, 10)])
        await wait_until(lambda: _snapshots(kafka, "idle"), message="idle seen")
        await publish(kafka, [tier_table("BTCUSDT", TIGHTER_BTC, at=clock())])

        def mmr(s: ExposureSnapshotted) -> Decimal:
            rate = s.positions[0].maintenance_margin_rate
            assert rate is not None
            return rate

        async def in_grace() -> bool:
            alerts = await read_models(kafka, ALERTS, timeout=0.5)
            return any(a.rule == "platform_risk_change" and a.account == "idle" for a in alerts)

        await wait_until(in_grace, message="the grace period started")
        # The old table's tier 2 still applies during the grace period.
        assert mmr((await _snapshots(kafka, "idle"))[-1]) == D("0.0056")

        clock.advance(10 * 24 * 3600 + 1)

        async def new_table_applied() -> bool:
            got = await _snapshots(kafka, "idle")
            return bool(got) and mmr(got[-1]) == D("0.04")

        await wait_until(new_table_applied, timeout=20, message="re-evaluated at the deadline")
