"""Risk-limit tier maths for USDT linear contracts (docs/bybit-v5.md §4, docs/product.md).

Pure functions over Decimal; the exchange core uses them for riskId, positionMM and the
leverage cap, and the tests check the worked examples of docs/product.md against them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

ZERO = Decimal(0)
# IMR × maxLeverage is ≈ 1 in Bybit's tables (0.0111 × 90 = 0.999); 1 % absorbs the rounding.
IMR_LEVERAGE_TOLERANCE = Decimal("0.01")


class TierCheckError(ValueError):
    pass


class TierSpecLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def risk_limit_value(self) -> Decimal: ...
    @property
    def maintenance_margin(self) -> Decimal: ...
    @property
    def initial_margin(self) -> Decimal: ...
    @property
    def max_leverage(self) -> Decimal: ...
    @property
    def mm_deduction(self) -> Decimal | None: ...
    @property
    def is_lowest_risk(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Tier:
    id: int
    risk_limit_value: Decimal
    mmr: Decimal
    imr: Decimal
    max_leverage: Decimal
    mm_deduction: Decimal
    is_lowest_risk: bool


def expected_deductions(rows: Sequence[tuple[Decimal, Decimal]]) -> list[Decimal]:
    """Deductions for (riskLimitValue, MMR) rows in tier order.

    deduction(n) = riskLimit(n-1) × (MMR(n) - MMR(n-1)) + deduction(n-1); the lowest is 0.
    """
    out: list[Decimal] = []
    for n, (_, mmr) in enumerate(rows):
        if n == 0:
            out.append(ZERO)
            continue
        prev_limit, prev_mmr = rows[n - 1]
        out.append(prev_limit * (mmr - prev_mmr) + out[-1])
    return out


def build_tiers(specs: Iterable[TierSpecLike]) -> tuple[Tier, ...]:
    """Validate a tier table and fill in missing deductions.

    Raises TierCheckError when the table is not a plausible Bybit table: limits, MMR and
    IMR not increasing, maxLeverage not decreasing, IMR × maxLeverage far from 1, or a
    published deduction that disagrees with the formula.
    """
    rows = sorted(specs, key=lambda s: s.risk_limit_value)
    if not rows:
        raise TierCheckError("empty tier table")
    limits = [r.risk_limit_value for r in rows]
    if len(set(limits)) != len(limits):
        raise TierCheckError("duplicate riskLimitValue")
    ids = [r.id for r in rows]
    if ids != sorted(ids) or len(set(ids)) != len(ids):
        raise TierCheckError("tier ids must increase with riskLimitValue")
    deductions = expected_deductions([(r.risk_limit_value, r.maintenance_margin) for r in rows])
    tiers = []
    for n, row in enumerate(rows):
        if n > 0:
            prev = rows[n - 1]
            if row.maintenance_margin < prev.maintenance_margin:
                raise TierCheckError(f"tier {row.id}: MMR decreases")
            if row.initial_margin < prev.initial_margin:
                raise TierCheckError(f"tier {row.id}: IMR decreases")
            if row.max_leverage > prev.max_leverage:
                raise TierCheckError(f"tier {row.id}: maxLeverage increases")
        if row.initial_margin <= row.maintenance_margin:
            raise TierCheckError(f"tier {row.id}: IMR must exceed MMR")
        if abs(row.initial_margin * row.max_leverage - 1) > IMR_LEVERAGE_TOLERANCE:
            raise TierCheckError(
                f"tier {row.id}: initialMargin × maxLeverage = "
                f"{row.initial_margin * row.max_leverage}, expected ≈ 1 (fractions, not percent)"
            )
        if row.mm_deduction is not None and row.mm_deduction != deductions[n]:
            raise TierCheckError(
                f"tier {row.id}: mmDeduction {row.mm_deduction} != formula {deductions[n]}"
            )
        lowest = n == 0
        if row.is_lowest_risk is not None and bool(row.is_lowest_risk) != lowest:
            raise TierCheckError(f"tier {row.id}: isLowestRisk must mark only the first tier")
        tiers.append(
            Tier(
                id=row.id,
                risk_limit_value=row.risk_limit_value,
                mmr=row.maintenance_margin,
                imr=row.initial_margin,
                max_leverage=row.max_leverage,
                mm_deduction=deductions[n],
                is_lowest_risk=lowest,
            )
        )
    return tuple(tiers)


def tier_for_value(tiers: Sequence[Tier], value: Decimal) -> Tier:
    """The lowest tier whose riskLimitValue is at least `value`; the top tier beyond it."""
    for tier in tiers:
        if value <= tier.risk_limit_value:
            return tier
    return tiers[-1]


def max_position_value(tiers: Sequence[Tier], leverage: Decimal) -> Decimal:
    """Largest riskLimitValue among tiers whose maxLeverage is at least `leverage`.

    Zero when the leverage is above every tier's maximum (Bybit then rejects orders).
    """
    allowed = [t.risk_limit_value for t in tiers if t.max_leverage >= leverage]
    return max(allowed, default=ZERO)


def maintenance_margin(tier: Tier, value: Decimal) -> Decimal:
    return max(value * tier.mmr - tier.mm_deduction, ZERO)


@dataclass(frozen=True, slots=True)
class PositionLeg:
    side: str  # "Buy", "Sell" or "" when flat
    size: Decimal
    entry_price: Decimal
    position_idx: int


@dataclass(frozen=True, slots=True)
class OrderLeg:
    side: str
    qty: Decimal  # leaves quantity
    price: Decimal
    reduce_only: bool
    position_idx: int


def opening_value(order: OrderLeg, positions: Sequence[PositionLeg], *, hedge: bool) -> Decimal:
    """Value of the part of an order that opens or extends a position.

    One-way: an order against the current position first closes it and only the remainder
    opens the opposite side. Hedge: Buy on idx 1 / Sell on idx 2 open; the others close.
    """
    if order.reduce_only:
        return ZERO
    if hedge:
        opens = (order.position_idx == 1 and order.side == "Buy") or (
            order.position_idx == 2 and order.side == "Sell"
        )
        return order.qty * order.price if opens else ZERO
    current = next((p for p in positions if p.position_idx == 0 and p.size > 0), None)
    if current is None or current.side == order.side:
        return order.qty * order.price
    return max(order.qty - current.size, ZERO) * order.price


def effective_position_value(
    positions: Sequence[PositionLeg], orders: Sequence[OrderLeg], *, hedge: bool
) -> Decimal:
    """max(long value + opening long orders, short value + opening short orders).

    Position value uses the average entry price, order value the order price
    (docs/product.md, "Effective position value").
    """
    long_value = sum(
        (p.size * p.entry_price for p in positions if p.side == "Buy" and p.size > 0), ZERO
    )
    short_value = sum(
        (p.size * p.entry_price for p in positions if p.side == "Sell" and p.size > 0), ZERO
    )
    for order in orders:
        value = opening_value(order, positions, hedge=hedge)
        if order.side == "Buy":
            long_value += value
        else:
            short_value += value
    return max(long_value, short_value)
