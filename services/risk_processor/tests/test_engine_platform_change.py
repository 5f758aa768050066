"""Bybit risk-parameter changes: trial calculation, grace period, what lifts it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from risk_processor.engine import (
    AccountType,
    Position,
    Rule,
    Severity,
    Side,
    Wallet,
    account_margin,
    evaluate_platform_change,
    isolated_liq_price,
    load_tier_table,
    platform_change_alert,
)

D = Decimal
BUY, SELL = Side.BUY, Side.SELL
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

OLD = load_tier_table(
    "BTCUSDT",
    [
        {"id": 1, "riskLimitValue": "1000000", "maintenanceMargin": "0.0050",
         "initialMargin": "0.0100", "maxLeverage": "100", "mmDeduction": ""},
        {"id": 2, "riskLimitValue": "2600000", "maintenanceMargin": "0.0056",
         "initialMargin": "0.0111", "maxLeverage": "90", "mmDeduction": "600"},
        {"id": 3, "riskLimitValue": "3200000", "maintenanceMargin": "0.0062",
         "initialMargin": "0.0125", "maxLeverage": "80", "mmDeduction": "2160"},
    ],
).table  # fmt: skip

# Bybit tightens BTCUSDT: higher MMRs, lower leverage, smaller tiers.
NEW = load_tier_table(
    "BTCUSDT",
    [
        {"id": 1, "riskLimitValue": "500000", "maintenanceMargin": "0.01",
         "initialMargin": "0.02", "maxLeverage": "50", "mmDeduction": ""},
        {"id": 2, "riskLimitValue": "1000000", "maintenanceMargin": "0.02",
         "initialMargin": "0.04", "maxLeverage": "25", "mmDeduction": ""},
        {"id": 3, "riskLimitValue": "2000000", "maintenanceMargin": "0.04",
         "initialMargin": "0.08", "maxLeverage": "12.5", "mmDeduction": ""},
    ],
).table  # fmt: skip


def btc(side: Side, size: str, entry: str, leverage: str, mark: str) -> Position:
    return Position("main", "BTCUSDT", 0, side, D(size), D(entry), D(leverage), D(mark))


def wallet(margin_balance: str) -> Wallet:
    b = D(margin_balance)
    return Wallet(b, b, b, D(0), D(0), None, None, D(0))


# --------------------------------------------------------------------------- standard account


def test_standard_high_risk_long_gets_grace_period_until_now_plus_10_days() -> None:
    # 1 BTC long at 50k, 50x, mark 49.5k. New tier 1: MM 1 % = 500, IM 1,000 → LP 49,500;
    # 49,500 × 0.75 + 50,000 × 0.25 = 49,625 is not below the 49,500 mark.
    position = btc(BUY, "1", "50000", "50", "49500")
    impact = evaluate_platform_change(
        position, OLD, NEW, account_type=AccountType.STANDARD, now=NOW
    )
    assert impact.new_liq_price == D(49500)
    assert impact.criterion_value == D(49625)
    assert impact.criterion_limit == D(49500)
    assert not impact.risk_lower
    assert not impact.applies_immediately
    assert impact.grace_deadline == NOW + timedelta(days=10)
    assert impact.new_tier.tier.id == 1


def test_standard_high_risk_long_margin_to_add_is_the_exact_boundary() -> None:
    position = btc(BUY, "1", "50000", "50", "49500")
    impact = evaluate_platform_change(
        position, OLD, NEW, account_type=AccountType.STANDARD, now=NOW
    )
    assert impact.margin_to_add is not None
    # The liquidation price must fall below (49,500 − 12,500) / 0.75 = 49,333.33…
    assert abs(impact.margin_to_add - (D(49500) - D(37000) / D("0.75"))) < D("1e-20")

    def criterion(extra: Decimal) -> Decimal:
        lp = isolated_liq_price(BUY, D(1), D(50000), D(50), D("0.01"), D(0), extra)
        assert lp is not None
        return lp * D("0.75") + D(50000) * D("0.25")

    assert criterion(impact.margin_to_add + D("0.01")) < D(49500)
    assert criterion(impact.margin_to_add - D("0.01")) > D(49500)


def test_standard_low_risk_long_applies_at_once() -> None:
    # 5x: IM 10,000, MM 500 → LP 40,500; 30,375 + 12,500 = 42,875 < 49,500.
    position = btc(BUY, "1", "50000", "5", "49500")
    impact = evaluate_platform_change(
        position, OLD, NEW, account_type=AccountType.STANDARD, now=NOW
    )
    assert impact.risk_lower
    assert impact.applies_immediately
    assert impact.grace_deadline is None
    assert impact.margin_to_add == D(0)


def test_standard_short_uses_the_mirrored_criterion() -> None:
    # Short 1 at 50k, 50x, mark 50.5k: LP 50,500; 37,875 + 12,500 = 50,375 is not above 50,500.
    risky = btc(SELL, "1", "50000", "50", "50500")
    impact = evaluate_platform_change(risky, OLD, NEW, account_type=AccountType.STANDARD, now=NOW)
    assert impact.new_liq_price == D(50500)
    assert not impact.risk_lower
    calm = btc(SELL, "1", "50000", "5", "50500")
    assert evaluate_platform_change(
        calm, OLD, NEW, account_type=AccountType.STANDARD, now=NOW
    ).risk_lower


def test_size_reduction_brings_effective_value_within_new_leverage_cap() -> None:
    # 30 BTC at 50k (1.5M) at 20x: the new table allows 20x only up to 1M (tier 2, 25x).
    position = btc(BUY, "30", "50000", "20", "50000")
    impact = evaluate_platform_change(
        position, OLD, NEW, account_type=AccountType.STANDARD, now=NOW, extra_margin=D(10**6)
    )
    assert impact.leverage_cap == D(1_000_000)
    assert impact.size_reduction == D(10)
    assert impact.max_leverage_allowed == D("12.5")


def test_flat_position_with_leverage_above_new_maximum_blocks_orders() -> None:
    flat = Position("main", "BTCUSDT", 0, None, D(0), D(0), D(75))
    impact = evaluate_platform_change(flat, OLD, NEW, account_type=AccountType.STANDARD, now=NOW)
    assert impact.orders_blocked_until_leverage_lowered
    assert impact.risk_lower
    alert = platform_change_alert(impact)
    assert alert is not None
    assert (alert.severity, alert.threshold) == (Severity.WARNING, D(50))


# --------------------------------------------------------------------------- unified account

# 24 BTC at 50k (1.2M, new tier 3): MM 1.2M × 4 % − 25,000 = 23,000 under the new table.
BIG = btc(BUY, "24", "50000", "10", "50000")


def test_unified_high_risk_account_gets_grace_period_and_remedies() -> None:
    impact = evaluate_platform_change(
        BIG, OLD, NEW, account_type=AccountType.UNIFIED, now=NOW, wallet=wallet("25000")
    )
    assert impact.new_mm_rate == D(23000) / D(25000)
    assert not impact.risk_lower
    assert impact.grace_deadline == NOW + timedelta(days=10)
    assert impact.margin_to_add == D(23000) / D("0.75") - D(25000)
    # MM must fit 0.75 × 25,000 = 18,750: (18,750 + 25,000) / 4 % = 1,093,750 = 21.875 BTC.
    assert impact.size_reduction == D("2.125")


def test_unified_remedies_bring_the_mm_rate_to_75_pct() -> None:
    impact = evaluate_platform_change(
        BIG, OLD, NEW, account_type=AccountType.UNIFIED, now=NOW, wallet=wallet("25000")
    )
    assert impact.margin_to_add is not None
    assert impact.size_reduction is not None
    topped_up = account_margin(
        wallet(str(D(25000) + impact.margin_to_add)), [BIG], {"BTCUSDT": NEW}, {}
    )
    assert topped_up.mm_rate is not None
    assert abs(topped_up.mm_rate - D("0.75")) < D("1e-20")
    cut = btc(BUY, str(D(24) - impact.size_reduction), "50000", "10", "50000")
    reduced = account_margin(wallet("25000"), [cut], {"BTCUSDT": NEW}, {})
    assert reduced.mm_rate == D("0.75")


def test_unified_low_risk_account_applies_at_once() -> None:
    impact = evaluate_platform_change(
        BIG, OLD, NEW, account_type=AccountType.UNIFIED, now=NOW, wallet=wallet("100000")
    )
    assert impact.new_mm_rate == D("0.23")
    assert impact.applies_immediately
    assert impact.grace_deadline is None
    assert impact.margin_to_add == D(0)
    assert impact.size_reduction == D(0)


# --------------------------------------------------------------------------- alerts


def test_grace_period_alert_is_high_and_names_deadline_and_remedy() -> None:
    impact = evaluate_platform_change(
        BIG, OLD, NEW, account_type=AccountType.UNIFIED, now=NOW, wallet=wallet("25000")
    )
    alert = platform_change_alert(impact)
    assert alert is not None
    assert (alert.rule, alert.severity, alert.subject) == (
        Rule.PLATFORM_RISK_CHANGE,
        Severity.HIGH,
        "BTCUSDT",
    )
    assert "2026-06-11T12:00:00+00:00" in alert.reason
    assert "reduce size by 2.125" in alert.reason


def test_immediate_change_that_moves_rates_is_info() -> None:
    impact = evaluate_platform_change(
        BIG, OLD, NEW, account_type=AccountType.UNIFIED, now=NOW, wallet=wallet("100000")
    )
    alert = platform_change_alert(impact)
    assert alert is not None
    assert alert.severity is Severity.INFO


def test_change_that_leaves_the_positions_tier_as_it_was_raises_nothing() -> None:
    small = btc(BUY, "1", "50000", "10", "50000")
    assert (
        platform_change_alert(
            evaluate_platform_change(small, OLD, OLD, account_type=AccountType.STANDARD, now=NOW)
        )
        is None
    )
