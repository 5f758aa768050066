"""Tier maths against the worked examples of docs/product.md."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from bybit_sim.margin import (
    OrderLeg,
    PositionLeg,
    TierCheckError,
    build_tiers,
    effective_position_value,
    expected_deductions,
    maintenance_margin,
    max_position_value,
    tier_for_value,
)
from bybit_sim.scenario import TierSpec


def brief_tiers() -> list[TierSpec]:
    rows = [
        (1, "1000000", "0.0050", "0.0100", "100"),
        (2, "2600000", "0.0056", "0.0111", "90"),
        (3, "3200000", "0.0062", "0.0125", "80"),
    ]
    return [
        TierSpec(
            id=i,
            riskLimitValue=D(limit),
            maintenanceMargin=D(mmr),
            initialMargin=D(imr),
            maxLeverage=D(lev),
        )
        for i, limit, mmr, imr, lev in rows
    ]


def test_deductions_of_brief_table_follow_formula_to_0_600_2160() -> None:
    rows = [(t.risk_limit_value, t.maintenance_margin) for t in brief_tiers()]

    assert expected_deductions(rows) == [D(0), D(600), D(2160)]


def test_build_tiers_with_missing_deductions_fills_them_from_formula() -> None:
    tiers = build_tiers(brief_tiers())

    assert [t.mm_deduction for t in tiers] == [D(0), D(600), D(2160)]
    assert [t.is_lowest_risk for t in tiers] == [True, False, False]


def test_build_tiers_with_wrong_published_deduction_raises() -> None:
    specs = brief_tiers()
    specs[1] = specs[1].model_copy(update={"mm_deduction": D(1200)})

    with pytest.raises(TierCheckError, match="mmDeduction"):
        build_tiers(specs)


def test_build_tiers_with_percent_units_raises() -> None:
    specs = [s.model_copy(update={"initial_margin": s.initial_margin * 100}) for s in brief_tiers()]

    with pytest.raises(TierCheckError, match="maxLeverage"):
        build_tiers(specs)


@pytest.mark.parametrize(
    ("value", "tier_id"),
    [("0", 1), ("1000000", 1), ("1000000.01", 2), ("2600000", 2), ("3000000", 3), ("9e9", 3)],
)
def test_tier_for_value_is_lowest_tier_at_or_above_value(value: str, tier_id: int) -> None:
    assert tier_for_value(build_tiers(brief_tiers()), D(value)).id == tier_id


def test_max_position_value_at_90x_is_2_6m_and_at_80x_is_3_2m() -> None:
    tiers = build_tiers(brief_tiers())

    assert max_position_value(tiers, D(90)) == D(2_600_000)
    assert max_position_value(tiers, D(80)) == D(3_200_000)
    assert max_position_value(tiers, D(125)) == 0


def test_maintenance_margin_is_continuous_across_tier_boundary() -> None:
    t1, t2, _ = build_tiers(brief_tiers())

    assert maintenance_margin(t1, D(1_000_000)) == maintenance_margin(t2, D(1_000_000)) == 5000


LONG_1_AT_40K = PositionLeg("Buy", D(1), D(40000), 0)


def test_effective_value_one_way_long_plus_buy_order_is_55k() -> None:
    orders = [OrderLeg("Buy", D("0.5"), D(30000), False, 0)]

    assert effective_position_value([LONG_1_AT_40K], orders, hedge=False) == D(55000)


def test_effective_value_one_way_flip_order_counts_only_opening_part_100k() -> None:
    orders = [
        OrderLeg("Buy", D("0.5"), D(30000), False, 0),
        OrderLeg("Sell", D(3), D(50000), False, 0),
    ]

    assert effective_position_value([LONG_1_AT_40K], orders, hedge=False) == D(100000)


def test_effective_value_hedge_close_on_empty_short_side_does_not_count_55k() -> None:
    positions = [PositionLeg("Buy", D(1), D(40000), 1)]
    orders = [
        OrderLeg("Buy", D("0.5"), D(30000), False, 1),
        OrderLeg("Buy", D(1), D(50000), False, 2),
    ]

    assert effective_position_value(positions, orders, hedge=True) == D(55000)


def test_effective_value_hedge_both_sides_takes_larger_side_110k() -> None:
    positions = [PositionLeg("Buy", D(1), D(40000), 1), PositionLeg("Sell", D(1), D(50000), 2)]
    orders = [
        OrderLeg("Buy", D("0.5"), D(30000), False, 1),
        OrderLeg("Sell", D(1), D(60000), False, 2),
    ]

    assert effective_position_value(positions, orders, hedge=True) == D(110000)


def test_effective_value_reduce_only_order_does_not_count() -> None:
    orders = [OrderLeg("Sell", D(5), D(50000), True, 0)]

    assert effective_position_value([LONG_1_AT_40K], orders, hedge=False) == D(40000)
