"""Risk-limit tier tables: unit detection and the maintenance-margin deduction check.

Bybit has published the same rates both as fractions (0.005) and as percent (0.5), and the
deduction it prints may drift from the formula; neither is trusted blindly (docs/bybit-v5.md
docs/bybit-v5.md §2.4, §4.1, §6.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

_HUNDRED = Decimal(100)


class Units(StrEnum):
    FRACTION = "fraction"
    PERCENT = "percent"


@dataclass(frozen=True, slots=True)
class RawTier:
    tier_id: int
    risk_limit_value: Decimal
    mmr: Decimal
    imr: Decimal
    max_leverage: Decimal
    mm_deduction: Decimal | None
    is_lowest_risk: bool


def detect_units(tiers: Sequence[RawTier]) -> Units:
    """IMR × maxLeverage is ≈ 1 when rates are fractions and ≈ 100 when they are percent.

    Every tier must agree; one that fits neither means the table is not what we think it
    is, and publishing it would mislead every margin number downstream.
    """
    votes: set[Units] = set()
    for t in tiers:
        product = t.imr * t.max_leverage
        if Decimal("0.5") <= product <= Decimal(2):
            votes.add(Units.FRACTION)
        elif Decimal(50) <= product <= Decimal(200):
            votes.add(Units.PERCENT)
        else:
            raise ValueError(
                f"tier {t.tier_id}: initialMargin {t.imr} × maxLeverage {t.max_leverage} = "
                f"{product}, neither ≈ 1 (fractions) nor ≈ 100 (percent)"
            )
    if len(votes) != 1:
        raise ValueError("tiers disagree on units (some fractions, some percent)")
    return votes.pop()


def to_fractions(tiers: Sequence[RawTier], units: Units) -> list[RawTier]:
    if units is Units.FRACTION:
        return list(tiers)
    return [
        RawTier(
            t.tier_id,
            t.risk_limit_value,
            t.mmr / _HUNDRED,
            t.imr / _HUNDRED,
            t.max_leverage,
            t.mm_deduction,
            t.is_lowest_risk,
        )
        for t in tiers
    ]


def recompute_deductions(tiers: Sequence[RawTier]) -> list[Decimal]:
    """ded(n) = limit(n-1) × (MMR(n) − MMR(n-1)) + ded(n-1), ded(lowest) = 0 (§4.1).

    ``tiers`` must be sorted by risk-limit value, rates as fractions.
    """
    out: list[Decimal] = []
    for i, t in enumerate(tiers):
        if i == 0:
            out.append(Decimal(0))
        else:
            prev = tiers[i - 1]
            out.append(prev.risk_limit_value * (t.mmr - prev.mmr) + out[-1])
    return out


@dataclass(frozen=True, slots=True)
class DeductionMismatch:
    tier_id: int
    published: Decimal
    expected: Decimal


def deduction_mismatches(tiers: Sequence[RawTier]) -> list[DeductionMismatch]:
    """Tiers whose published deduction differs from the formula by more than a cent."""
    expected = recompute_deductions(tiers)
    tolerance = Decimal("0.01")
    out = []
    for t, exp in zip(tiers, expected, strict=True):
        published = t.mm_deduction if t.mm_deduction is not None else Decimal(0)
        if abs(published - exp) > tolerance + abs(exp) * Decimal("1e-9"):
            out.append(DeductionMismatch(t.tier_id, published, exp))
    return out


def sort_tiers(tiers: Sequence[RawTier]) -> list[RawTier]:
    return sorted(tiers, key=lambda t: (t.risk_limit_value, t.tier_id))
