"""Tier tables: loading Bybit rows, units, deductions, lookups (docs/product.md, §2.4/§4)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk_processor.engine import (
    DeductionMismatch,
    RateUnits,
    Tier,
    TierTable,
    detect_rate_units,
    load_tier_table,
    maintenance_margin_for_value,
    max_leverage_for_value,
    max_position_value_at_leverage,
    recompute_deductions,
    tier_for_value,
    value_for_maintenance_margin,
)
from riskwatch_common.testkit import BRIEF_BTC_ROWS

D = Decimal
# Property tests check results, not speed; a busy shared machine must not fail them.
no_deadline = settings(deadline=None)

# The illustrative BTCUSDT table of docs/product.md, under which the 90x example holds exactly.
BRIEF_ROWS = BRIEF_BTC_ROWS

# The captured linear rows quoted in docs/bybit-v5.md §2.4 (api-testnet 2026-09), plus the 2.6M tier
# of the older capture, whose deductions docs/bybit-v5.md §4.1 works through.
CAPTURED_ROWS = [
    {"id": 1, "symbol": "BTCUSDT", "riskLimitValue": "300000", "maintenanceMargin": "0.0033",
     "initialMargin": "0.0066", "isLowestRisk": 1, "maxLeverage": "150.00", "mmDeduction": ""},
    {"id": 2, "symbol": "BTCUSDT", "riskLimitValue": "2000000", "maintenanceMargin": "0.005",
     "initialMargin": "0.01", "isLowestRisk": 0, "maxLeverage": "100.00", "mmDeduction": "510"},
    {"id": 3, "symbol": "BTCUSDT", "riskLimitValue": "2600000", "maintenanceMargin": "0.0056",
     "initialMargin": "0.0111", "isLowestRisk": 0, "maxLeverage": "90.00", "mmDeduction": "1710"},
]  # fmt: skip


def brief_table() -> TierTable:
    return load_tier_table("BTCUSDT", BRIEF_ROWS).table


def test_deductions_of_brief_table_recompute_to_600_and_2160() -> None:
    limits_and_mmrs = [
        (D(1_000_000), D("0.005")),
        (D(2_600_000), D("0.0056")),
        (D(3_200_000), D("0.0062")),
    ]
    assert recompute_deductions(limits_and_mmrs) == (D(0), D(600), D(2160))


def test_load_of_brief_rows_reports_no_deduction_mismatch() -> None:
    loaded = load_tier_table("BTCUSDT", BRIEF_ROWS)
    assert loaded.mismatches == ()
    assert [t.mm_deduction for t in loaded.table.tiers] == [D(0), D(600), D(2160)]


def test_deductions_of_captured_rows_recompute_to_510_and_1710() -> None:
    loaded = load_tier_table("BTCUSDT", CAPTURED_ROWS)
    assert loaded.units is RateUnits.FRACTION
    assert loaded.mismatches == ()
    assert [t.mm_deduction for t in loaded.table.tiers] == [D(0), D(510), D(1710)]


def test_maintenance_margin_of_2_5m_in_captured_tiers_is_12290() -> None:
    table = load_tier_table("BTCUSDT", CAPTURED_ROWS).table
    assert tier_for_value(table, D(2_500_000)).tier.id == 3
    # One step: 2.5M × 0.56 % − 1,710; piecewise: 300k × 0.33 % + 1.7M × 0.5 % + 0.5M × 0.56 %.
    assert maintenance_margin_for_value(table, D(2_500_000)) == D(12290)


def test_published_deduction_that_disagrees_is_reported_not_raised_and_kept() -> None:
    rows = [dict(r) for r in CAPTURED_ROWS]
    rows[2]["mmDeduction"] = "1200"  # the older table's figure, stale once the 300k tier exists
    loaded = load_tier_table("BTCUSDT", rows)
    assert loaded.mismatches == (DeductionMismatch(3, D(1200), D(1710)),)
    assert loaded.table.tiers[2].mm_deduction == D(1200)


def test_empty_published_deduction_above_lowest_tier_is_filled_with_recomputed() -> None:
    rows = [dict(r) for r in CAPTURED_ROWS]
    rows[1]["mmDeduction"] = ""
    loaded = load_tier_table("BTCUSDT", rows)
    assert loaded.table.tiers[1].mm_deduction == D(510)
    assert loaded.mismatches == ()


def test_percent_rows_are_detected_and_converted_to_fractions() -> None:
    # The docs' inverse example: 0.5 / 1 at 100x reads as percent.
    rows = [
        {
            "id": 1,
            "symbol": "BTCUSD",
            "riskLimitValue": "150",
            "maintenanceMargin": "0.5",
            "initialMargin": "1",
            "isLowestRisk": 1,
            "maxLeverage": "100.00",
            "mmDeduction": "",
        }
    ]
    loaded = load_tier_table("BTCUSD", rows)
    assert loaded.units is RateUnits.PERCENT
    tier = loaded.table.tiers[0]
    assert (tier.mmr, tier.imr) == (D("0.005"), D("0.01"))


def test_fraction_rows_are_detected_and_kept() -> None:
    loaded = load_tier_table("BTCUSDT", BRIEF_ROWS)
    assert loaded.units is RateUnits.FRACTION
    assert loaded.table.tiers[1].imr == D("0.0111")


def test_units_neither_fraction_nor_percent_raise_a_clear_error() -> None:
    with pytest.raises(ValueError, match="neither"):
        detect_rate_units([(D("0.05"), D(100))])  # 5: neither ≈1 nor ≈100


def test_units_mixed_across_rows_raise() -> None:
    with pytest.raises(ValueError, match="mix"):
        detect_rate_units([(D("0.01"), D(100)), (D("1"), D(100))])


def test_rows_with_missing_required_field_raise_naming_it() -> None:
    rows = [dict(BRIEF_ROWS[0], maintenanceMargin="")]
    with pytest.raises(ValueError, match="maintenanceMargin"):
        load_tier_table("BTCUSDT", rows)


def test_rows_with_non_numeric_value_raise_naming_it() -> None:
    rows = [dict(BRIEF_ROWS[0], riskLimitValue="1e6x")]
    with pytest.raises(ValueError, match="riskLimitValue"):
        load_tier_table("BTCUSDT", rows)


def test_rows_out_of_order_are_sorted_by_risk_limit_value() -> None:
    table = load_tier_table("BTCUSDT", list(reversed(BRIEF_ROWS))).table
    assert [t.id for t in table.tiers] == [1, 2, 3]


def test_tier_for_value_takes_lowest_tier_whose_limit_is_at_least_the_value() -> None:
    table = brief_table()
    assert tier_for_value(table, D(0)).tier.id == 1
    assert tier_for_value(table, D(1_000_000)).tier.id == 1
    assert tier_for_value(table, D("1000000.01")).tier.id == 2
    assert tier_for_value(table, D(2_600_000)).tier.id == 2
    assert tier_for_value(table, D(3_000_000)).tier.id == 3


def test_tier_for_value_above_top_tier_returns_top_tier_flagged_over_limit() -> None:
    match = tier_for_value(brief_table(), D(3_200_001))
    assert (match.tier.id, match.over_limit) == (3, True)
    assert not tier_for_value(brief_table(), D(3_200_000)).over_limit


def test_max_position_value_at_90x_is_2_6m_and_at_80x_is_3_2m() -> None:
    table = brief_table()
    assert max_position_value_at_leverage(table, D(90)) == D(2_600_000)
    assert max_position_value_at_leverage(table, D(80)) == D(3_200_000)
    assert max_position_value_at_leverage(table, D(100)) == D(1_000_000)
    assert max_position_value_at_leverage(table, D(95)) == D(1_000_000)


def test_max_position_value_above_every_tier_leverage_is_none() -> None:
    assert max_position_value_at_leverage(brief_table(), D(101)) is None


def test_highest_leverage_allowing_3m_is_80() -> None:
    assert max_leverage_for_value(brief_table(), D(3_000_000)) == D(80)
    assert max_leverage_for_value(brief_table(), D(2_600_000)) == D(90)
    assert max_leverage_for_value(brief_table(), D(3_200_001)) is None


# --------------------------------------------------------------------------- properties

_RATE_STEP = D("0.0001")


@st.composite
def tier_tables(draw: st.DrawFn) -> TierTable:
    """Random consistent tables: rising limits and MMRs, falling leverage, IMR = 1/maxLev."""
    n = draw(st.integers(1, 6))
    limits = sorted(draw(st.sets(st.integers(1, 10_000), min_size=n, max_size=n)))
    mmr_steps = draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    leverages = sorted(draw(st.lists(st.integers(1, 150), min_size=n, max_size=n)), reverse=True)
    rows = []
    mmr = D("0.001")
    for i, (limit, step, lev) in enumerate(zip(limits, mmr_steps, leverages, strict=True)):
        mmr += step * _RATE_STEP
        rows.append(
            {
                "id": i + 1,
                "riskLimitValue": str(limit * 100_000),
                "maintenanceMargin": str(mmr),
                "initialMargin": str(D(1) / D(lev)),
                "maxLeverage": str(lev),
                "mmDeduction": "",
            }
        )
    return load_tier_table("SYMUSDT", rows).table


values = st.decimals(min_value=0, max_value=2_000_000_000, places=2)


def ref_tier_index(table: TierTable, value: Decimal) -> int:
    for i, tier in enumerate(table.tiers):
        if tier.risk_limit_value >= value:
            return i
    return len(table.tiers) - 1


def ref_maintenance_margin(tiers: tuple[Tier, ...], value: Decimal) -> Decimal:
    """Each slice of value between two boundaries at the MMR of the tier above the slice."""
    total = D(0)
    lower = D(0)
    for tier in tiers:
        if value <= lower:
            break
        total += (min(value, tier.risk_limit_value) - lower) * tier.mmr
        lower = tier.risk_limit_value
    if value > lower:
        total += (value - lower) * tiers[-1].mmr
    return total


@no_deadline
@given(tier_tables(), values)
def test_tier_for_value_matches_linear_scan(table: TierTable, value: Decimal) -> None:
    match = tier_for_value(table, value)
    assert match.index == ref_tier_index(table, value)
    assert match.over_limit == (value > table.tiers[-1].risk_limit_value)


@no_deadline
@given(tier_tables(), st.decimals(min_value=1, max_value=200, places=2))
def test_max_position_value_matches_linear_scan(table: TierTable, leverage: Decimal) -> None:
    allowed = [t.risk_limit_value for t in table.tiers if t.max_leverage >= leverage]
    assert max_position_value_at_leverage(table, leverage) == (max(allowed) if allowed else None)


@no_deadline
@given(tier_tables(), values)
def test_max_leverage_for_value_is_the_largest_leverage_whose_cap_holds_the_value(
    table: TierTable, value: Decimal
) -> None:
    found = max_leverage_for_value(table, value)
    fitting = [t.max_leverage for t in table.tiers if t.risk_limit_value >= value]
    assert found == (max(fitting) if fitting else None)
    if found is not None:
        cap = max_position_value_at_leverage(table, found)
        assert cap is not None
        assert cap >= value


@no_deadline
@given(tier_tables(), values)
def test_maintenance_margin_equals_piecewise_slices(table: TierTable, value: Decimal) -> None:
    assert maintenance_margin_for_value(table, value) == ref_maintenance_margin(table.tiers, value)


@no_deadline
@given(tier_tables(), st.decimals(min_value=0, max_value=50_000_000, places=2))
def test_value_for_maintenance_margin_inverts_maintenance_margin(
    table: TierTable, budget: Decimal
) -> None:
    value = value_for_maintenance_margin(table, budget)
    assert abs(maintenance_margin_for_value(table, value) - budget) < D("1e-12")
