"""Margin figures of USDT linear positions (docs/bybit-v5.md §4.1, §4.4).

- initial margin = position value / leverage (or value × tier IMR for the tier's minimum);
- maintenance margin = position value × MMR(tier) − deduction(tier);
- unrealized PnL: long (mark − entry) × size, short (entry − mark) × size;
- account MM rate (UTA cross) = total maintenance margin / margin balance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from risk_processor.engine.types import BUY, ONE, ZERO, Position, Side, Tier, TierTable, Wallet


def initial_margin(value: Decimal, leverage: Decimal) -> Decimal:
    """Initial margin of a position value at the chosen leverage."""
    if leverage <= 0:
        raise ValueError(f"leverage must be positive, got {leverage}")
    return value / leverage


def initial_margin_for_tier(value: Decimal, tier: Tier) -> Decimal:
    """Initial margin at the tier's IMR: the least margin the tier accepts for ``value``."""
    return value * tier.imr


def maintenance_margin(value: Decimal, tier: Tier) -> Decimal:
    """``value × MMR − deduction`` of ``tier``, floored at 0.

    Within the tier's own value range this equals the piecewise charge (each slice of
    value at the MMR of the tier it lies in) and is never negative; the floor only matters
    when a tier is applied to a value far below its range.
    """
    mm = value * tier.mmr - tier.mm_deduction
    return mm if mm > ZERO else ZERO


def maintenance_margin_for_value(table: TierTable, value: Decimal) -> Decimal:
    """Maintenance margin of ``value`` in the tier that value falls in.

    Above the top tier the top tier's rate keeps applying, which is what the piecewise
    rule extends to.
    """
    i = table.index_for_value(value)
    tiers = table.tiers
    return maintenance_margin(value, tiers[i] if i < len(tiers) else tiers[-1])


def value_for_maintenance_margin(table: TierTable, mm: Decimal) -> Decimal:
    """Largest position value whose maintenance margin (tier by value) is at most ``mm``.

    The inverse of ``maintenance_margin_for_value``, used to size a reduction that brings
    maintenance margin under a budget. Returns 0 for a budget <= 0.
    """
    if mm <= 0:
        return ZERO
    lower = ZERO
    for tier in table.tiers:
        if tier.mmr > 0:
            v = (mm + tier.mm_deduction) / tier.mmr
            if v <= tier.risk_limit_value:
                # A published deduction that breaks continuity can put v under the tier's
                # range; the tier's lower boundary is then the largest value that fits.
                return v if v > lower else lower
        lower = tier.risk_limit_value
    top = table.tiers[-1]
    if top.mmr <= 0:
        raise ValueError(f"{table.symbol}: top tier has no maintenance margin rate")
    return (mm + top.mm_deduction) / top.mmr


def unrealized_pnl(side: Side, size: Decimal, entry_price: Decimal, mark_price: Decimal) -> Decimal:
    """Unrealized PnL of a linear position at ``mark_price``."""
    if side is BUY:
        return (mark_price - entry_price) * size
    return (entry_price - mark_price) * size


def mark_price_of(position: Position, marks: Mapping[str, Decimal]) -> Decimal:
    """The freshest price known for a position: ticker mark, then row mark, then entry."""
    mark = marks.get(position.symbol)
    if mark is not None:
        return mark
    if position.mark_price:
        return position.mark_price
    return position.entry_price


@dataclass(slots=True, frozen=True)
class AccountMargin:
    """Account margin recomputed at current marks.

    ``mm_rate`` is ``None`` when the margin balance is <= 0 (the rate is unbounded).
    ``in_liquidation`` when the margin balance is <= 0 or the rate has reached 100 %.
    ``complete`` is False when a position had no tier table and Bybit's reported
    ``position_mm`` (or nothing) stood in for it.
    """

    margin_balance: Decimal
    total_maintenance_margin: Decimal
    mm_rate: Decimal | None
    in_liquidation: bool
    complete: bool


def mm_rate_of(margin_balance: Decimal, total_mm: Decimal) -> tuple[Decimal | None, bool]:
    """(rate, in_liquidation) from a margin balance and a total maintenance margin."""
    if margin_balance <= ZERO:
        return None, True
    rate = total_mm / margin_balance
    return rate, rate >= ONE


def position_mm_at_mark(
    position: Position, mark: Decimal, table: TierTable | None
) -> tuple[Decimal, bool]:
    """(maintenance margin at ``mark``, tier by that value; whether a table was used).

    Without a table, Bybit's last reported ``position_mm`` stands in (0 if none).
    """
    if table is None:
        return (position.position_mm or ZERO), False
    return maintenance_margin_for_value(table, position.size * mark), True


def account_margin(
    wallet: Wallet,
    positions: Sequence[Position],
    tables: Mapping[str, TierTable],
    marks: Mapping[str, Decimal],
) -> AccountMargin:
    """Unified-account (cross) MM rate between wallet updates.

    Bybit pushes no wallet event when unrealized PnL moves, so the wallet's rate goes stale
    as prices move. Approximation (docs/bybit-v5.md §4.4), documented because it is not Bybit's
    exact figure:

    - margin balance ≈ ``total_margin_balance − total_perp_upl + Σ UPL at current marks``,
      i.e. wallet balance + current perp UPL, keeping whatever else Bybit folded into the
      margin balance at the last wallet update (spot borrow);
    - total MM ≈ Σ over positions of ``value at mark × MMR − deduction``, tier chosen by
      that value. Order MM, borrowing MM, haircut/order loss and Bybit's estimated closing
      fee are left out, so the rate reads slightly below Bybit's;
    - rate = total MM / margin balance; a margin balance <= 0 means liquidation.

    Valid for cross margin; under portfolio margin there are no per-contract tiers and the
    wallet's own ``account_mm_rate`` is the figure to use.
    """
    upl = ZERO
    total_mm = ZERO
    complete = True
    for p in positions:
        if not p.size or p.side is None:
            continue
        mark = mark_price_of(p, marks)
        upl += unrealized_pnl(p.side, p.size, p.entry_price, mark)
        mm, computed = position_mm_at_mark(p, mark, tables.get(p.symbol))
        total_mm += mm
        complete = complete and computed
    balance = wallet.total_margin_balance - wallet.total_perp_upl + upl
    rate, liquidating = mm_rate_of(balance, total_mm)
    return AccountMargin(balance, total_mm, rate, liquidating, complete)
