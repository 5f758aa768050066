"""Risk-limit tier tables: loading Bybit rows and looking tiers up.

Bybit's rules (docs/product.md): the tier is the lowest one whose ``riskLimitValue`` is at
least the effective position value; leverage L allows at most the largest
``riskLimitValue`` among tiers whose ``maxLeverage`` >= L; the deduction of tier n is
``riskLimit(n-1) × (MMR(n) − MMR(n-1)) + deduction(n-1)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from risk_processor.engine.types import HUNDRED, ONE, ZERO, Tier, TierTable


class RateUnits(StrEnum):
    FRACTION = "fraction"
    PERCENT = "percent"


@dataclass(slots=True, frozen=True)
class DeductionMismatch:
    """A published ``mmDeduction`` that disagrees with the recomputed one."""

    tier_id: int
    published: Decimal
    recomputed: Decimal


@dataclass(slots=True, frozen=True)
class TierTableLoad:
    """A loaded table with what the loader found: the rate units and deduction mismatches."""

    table: TierTable
    units: RateUnits
    mismatches: tuple[DeductionMismatch, ...]


@dataclass(slots=True, frozen=True)
class TierMatch:
    """The tier a value falls in; ``over_limit`` when the value exceeds the top tier."""

    tier: Tier
    index: int
    over_limit: bool


# IMR × maxLeverage is 1 by construction (IMR ≈ 1/maxLev), give or take Bybit's rounding of
# maxLeverage (0.0066 × 150 = 0.99, 0.0175 × 57.14 = 0.99995); a 10 % band leaves a factor
# of 100 between the two readings, so the test cannot confuse them.
_UNIT_TOLERANCE = Decimal("0.1")


def _decimal(row: Mapping[str, object], key: str, symbol: str) -> Decimal | None:
    raw = row.get(key)
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise ValueError(f"{symbol}: {key}={raw!r} is not a number")
    try:
        # repr() keeps the shortest exact spelling of a float, so 0.005 stays 0.005.
        value = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{symbol}: {key}={raw!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{symbol}: {key}={raw!r} is not finite")
    return value


def _required(row: Mapping[str, object], key: str, symbol: str) -> Decimal:
    value = _decimal(row, key, symbol)
    if value is None:
        raise ValueError(f"{symbol}: {key} is missing or empty in a risk-limit row")
    return value


def detect_rate_units(imr_and_max_leverage: Iterable[tuple[Decimal, Decimal]]) -> RateUnits:
    """Decide whether IMR/MMR values are fractions or percent from ``IMR × maxLeverage``.

    About 1 means fractions, about 100 means percent. Pairs with no leverage are skipped.
    Raises ``ValueError`` when no pair is usable, a pair fits neither reading, or pairs
    disagree.
    """
    found: set[RateUnits] = set()
    for imr, max_leverage in imr_and_max_leverage:
        if max_leverage <= 0:
            continue
        product = imr * max_leverage
        if abs(product - ONE) <= _UNIT_TOLERANCE:
            found.add(RateUnits.FRACTION)
        elif abs(product - HUNDRED) <= _UNIT_TOLERANCE * HUNDRED:
            found.add(RateUnits.PERCENT)
        else:
            raise ValueError(
                f"initialMargin × maxLeverage = {product} (IMR {imr}, maxLeverage {max_leverage})"
                " is neither ≈1 (fractions) nor ≈100 (percent); refusing to guess the units"
            )
    if not found:
        raise ValueError("no risk-limit row has both initialMargin and maxLeverage; units unknown")
    if len(found) > 1:
        raise ValueError("risk-limit rows mix fraction and percent rates")
    return found.pop()


def recompute_deductions(
    limits_and_mmrs: Sequence[tuple[Decimal, Decimal]],
) -> tuple[Decimal, ...]:
    """Deductions for tiers given as (riskLimitValue, MMR) in ascending order.

    ``deduction(1) = 0``; ``deduction(n) = riskLimit(n-1) × (MMR(n) − MMR(n-1)) + deduction(n-1)``.
    This makes ``value × MMR(n) − deduction(n)`` equal to charging each slice of value between
    two tier boundaries at the rate of the tier above the slice.
    """
    out: list[Decimal] = []
    previous_limit = previous_mmr = deduction = ZERO
    for i, (limit, mmr) in enumerate(limits_and_mmrs):
        if i:
            deduction = previous_limit * (mmr - previous_mmr) + deduction
        out.append(deduction)
        previous_limit, previous_mmr = limit, mmr
    return tuple(out)


def load_tier_table(
    symbol: str,
    rows: Iterable[Mapping[str, object]],
    *,
    deduction_tolerance: Decimal = Decimal("0.01"),
) -> TierTableLoad:
    """Build a ``TierTable`` from ``/v5/market/risk-limit`` rows of one symbol.

    Rates are normalised to fractions (percent rows are divided by 100). Each tier's
    deduction is recomputed; the published ``mmDeduction`` is kept when present because it is
    what Bybit charges, the recomputed one fills ``""``, and any published value further
    than ``deduction_tolerance`` USD from the recomputed one is returned as a mismatch.
    Raises ``ValueError`` on a malformed row or unknown units.
    """
    parsed: list[tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal | None]] = []
    for position, row in enumerate(rows):
        raw_id = row.get("id")
        if raw_id is None or raw_id == "":
            tier_id = position + 1
        elif isinstance(raw_id, int | str) and not isinstance(raw_id, bool):
            tier_id = int(raw_id)
        else:
            raise ValueError(f"{symbol}: tier id {raw_id!r} is not an integer")
        parsed.append(
            (
                tier_id,
                _required(row, "riskLimitValue", symbol),
                _required(row, "maintenanceMargin", symbol),
                _required(row, "initialMargin", symbol),
                _required(row, "maxLeverage", symbol),
                _decimal(row, "mmDeduction", symbol),
            )
        )
    if not parsed:
        raise ValueError(f"{symbol}: no risk-limit rows")
    parsed.sort(key=lambda r: r[1])

    units = detect_rate_units((r[3], r[4]) for r in parsed)
    scale = HUNDRED if units is RateUnits.PERCENT else ONE
    recomputed = recompute_deductions([(r[1], r[2] / scale) for r in parsed])

    tiers: list[Tier] = []
    mismatches: list[DeductionMismatch] = []
    for (tier_id, limit, mmr, imr, max_lev, published), own in zip(parsed, recomputed, strict=True):
        if published is not None and abs(published - own) > deduction_tolerance:
            mismatches.append(DeductionMismatch(tier_id, published, own))
        tiers.append(
            Tier(
                id=tier_id,
                risk_limit_value=limit,
                mmr=mmr / scale,
                imr=imr / scale,
                max_leverage=max_lev,
                mm_deduction=own if published is None else published,
            )
        )
    return TierTableLoad(TierTable(symbol, tuple(tiers)), units, tuple(mismatches))


def tier_for_value(table: TierTable, value: Decimal) -> TierMatch:
    """The lowest tier whose ``risk_limit_value`` >= ``value``.

    Above the top tier, the top tier comes back with ``over_limit=True``: Bybit would
    reject whatever pushed the value there.
    """
    i = table.index_for_value(value)
    top = len(table.tiers) - 1
    if i > top:
        return TierMatch(table.tiers[top], top, True)
    return TierMatch(table.tiers[i], i, False)


def max_position_value_at_leverage(table: TierTable, leverage: Decimal) -> Decimal | None:
    """Largest ``risk_limit_value`` among tiers whose ``max_leverage`` >= ``leverage``.

    ``None`` when the leverage is above every tier's maximum: no order can be placed.
    """
    return table.cap_at_leverage(leverage)


def max_leverage_for_value(table: TierTable, value: Decimal) -> Decimal | None:
    """Highest leverage at which a position (plus orders) of ``value`` is allowed.

    ``None`` when the value is above the top tier at any leverage.
    """
    i = table.index_for_value(value)
    if i >= len(table.tiers):
        return None
    return table.max_leverage_from(i)
