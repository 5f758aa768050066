"""Risk-limit tables: units check (IMR × maxLeverage), percent conversion, deduction recompute."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest

from ingestor import normalize as n
from ingestor import tiers

NOW = datetime(2026, 1, 1, tzinfo=UTC)

# The capture in docs/bybit-v5.md §2.4 (fractions), consistent with the §4.1 formula.
CAPTURED = [
    {"id": 1, "symbol": "BTCUSDT", "riskLimitValue": "300000", "maintenanceMargin": "0.0033",
     "initialMargin": "0.0066", "isLowestRisk": 1, "maxLeverage": "150.00", "mmDeduction": ""},
    {"id": 2, "symbol": "BTCUSDT", "riskLimitValue": "2000000", "maintenanceMargin": "0.005",
     "initialMargin": "0.01", "isLowestRisk": 0, "maxLeverage": "100.00", "mmDeduction": "510"},
    {"id": 3, "symbol": "BTCUSDT", "riskLimitValue": "2600000", "maintenanceMargin": "0.0056",
     "initialMargin": "0.0111", "isLowestRisk": 0, "maxLeverage": "90.00", "mmDeduction": "1710"},
]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> n.TierTable:
    return n.risk_limit_table("BTCUSDT", rows, produced_at=NOW, source="ingestor/t")


def test_fraction_table_passes_and_deductions_match_the_formula() -> None:
    out = table(CAPTURED)

    assert out.units is tiers.Units.FRACTION
    assert out.mismatches == []
    assert [t.mm_deduction for t in out.event.tiers] == [D(0), D(510), D(1710)]
    assert out.event.tiers[0].is_lowest_risk
    assert out.event.tiers[0].max_leverage == D(150)


def test_recomputed_deductions_follow_the_recurrence() -> None:
    raw = [n.dec(r["riskLimitValue"]) for r in CAPTURED]
    rates = [n.dec(r["maintenanceMargin"]) for r in CAPTURED]
    rows = [tiers.RawTier(i, raw[i], rates[i], D(1), D(1), None, i == 0) for i in range(3)]

    # ded(2) = 300000 × (0.005 − 0.0033) = 510; ded(3) = 2000000 × 0.0006 + 510 = 1710
    assert tiers.recompute_deductions(rows) == [D(0), D("510.0000"), D("1710.0000")]


def test_percent_table_is_converted_to_fractions() -> None:
    percent = [
        {**r, "maintenanceMargin": str(D(r["maintenanceMargin"]) * 100),
         "initialMargin": str(D(r["initialMargin"]) * 100)}
        for r in CAPTURED
    ]  # fmt: skip

    out = table(percent)

    assert out.units is tiers.Units.PERCENT
    assert [t.maintenance_margin_rate for t in out.event.tiers] == [
        D("0.0033"),
        D("0.005"),
        D("0.0056"),
    ]
    assert out.event.tiers[1].initial_margin_rate == D("0.01")
    assert out.mismatches == []


def test_docs_inverse_example_in_percent_is_recognised() -> None:
    row = {
        "id": 1, "symbol": "BTCUSD", "riskLimitValue": "150", "maintenanceMargin": "0.5",
        "initialMargin": "1", "isLowestRisk": 1, "maxLeverage": "100.00", "mmDeduction": "",
    }  # fmt: skip
    out = n.risk_limit_table("BTCUSD", [row], produced_at=NOW, source="t")
    assert out.units is tiers.Units.PERCENT
    assert out.event.tiers[0].maintenance_margin_rate == D("0.005")


def test_published_deduction_that_disagrees_is_reported_but_kept() -> None:
    rows = [dict(r) for r in CAPTURED]
    rows[2]["mmDeduction"] = "1800"

    out = table(rows)

    assert out.mismatches == [tiers.DeductionMismatch(3, D(1800), D("1710.0000"))]
    assert out.event.tiers[2].mm_deduction == D(1800)  # Bybit's number is what it charges


def test_table_whose_units_fit_neither_reading_is_refused() -> None:
    rows = [dict(r) for r in CAPTURED]
    rows[1]["initialMargin"] = "0.1"  # × 100 = 10

    with pytest.raises(ValueError, match="neither"):
        table(rows)


def test_mixed_units_are_refused() -> None:
    rows = [dict(r) for r in CAPTURED]
    rows[0] = {**rows[0], "initialMargin": "0.66", "maintenanceMargin": "0.33"}

    with pytest.raises(ValueError, match="disagree"):
        table(rows)


def test_unchanged_table_has_the_same_event_id() -> None:
    """Only a changed table is republished; the id is derived from the content."""
    assert table(CAPTURED).event.event_id == table(list(reversed(CAPTURED))).event.event_id
    changed = [dict(r) for r in CAPTURED]
    changed[0]["riskLimitValue"] = "400000"
    assert table(changed).event.event_id != table(CAPTURED).event.event_id
