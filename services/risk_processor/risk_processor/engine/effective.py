"""Effective position value: what Bybit selects the risk-limit tier from.

Rule (docs/product.md, from Bybit's help page)::

    effective = max(long position value + open long order value,
                    short position value + open short order value)

Position value is at the average entry price, order value at the order price. An order
counts when, filled, it adds to a position or closes it and opens the opposite one; then
only the opening part counts, on the opposite side. Reduce-only, close-on-trigger and
untriggered conditional orders never count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from risk_processor.engine.tiers import TierMatch, tier_for_value
from risk_processor.engine.types import (
    BUY,
    HEDGE,
    SELL,
    ZERO,
    Order,
    Position,
    PositionMode,
    TierTable,
)


@dataclass(slots=True, frozen=True)
class EffectiveValue:
    """Both sides of the rule and their maximum, ``value``."""

    long_value: Decimal
    short_value: Decimal
    value: Decimal


def _flip_value(closable: Decimal, opposite: list[tuple[Decimal, Decimal]]) -> Decimal:
    """Value of the part of ``opposite`` orders (price, qty) left after closing ``closable``.

    Orders are evaluated against the current position, not against each other's fills, as
    in example 2 of docs/product.md (a pending buy does not enlarge what a sell can close). When
    several orders together exceed the position, the ones with the lowest price are taken
    to close it, so the opening remainder is valued at the highest prices. That is the
    largest value the rule allows (an upper bound, which is the safe side for a warning);
    for sells against a long it is also the order in which resting sells fill as the price
    rises. The result depends only on the orders' prices and quantities, never on their
    listing order.
    """
    total = ZERO
    for _, qty in opposite:
        total += qty
    excess = total - closable
    if excess <= ZERO:
        return ZERO
    if len(opposite) == 1:
        return excess * opposite[0][0]
    opposite.sort(reverse=True)
    value = ZERO
    for price, qty in opposite:
        take = qty if qty < excess else excess
        value += take * price
        excess -= take
        if not excess:
            break
    return value


def effective_value(
    symbol: str,
    positions: Sequence[Position],
    orders: Sequence[Order],
    mode: PositionMode,
) -> EffectiveValue:
    """Effective position value of ``symbol`` from an account's positions and open orders.

    Rows of other symbols are ignored, so the whole account can be passed.

    Hedge mode: ``position_idx`` 1 is the Buy side, 2 the Sell side. A Buy order on side 1
    and a Sell order on side 2 add; an opposite order on a side only closes that side and
    never opens the other one, so it does not count (brief example 3).

    One-way mode: orders on the position's side count in full; opposite orders first close
    the position and count only for the part beyond its size, on the opposite side (brief
    example 2). See ``_flip_value`` for how several opposite orders share the position.

    Raises ``ValueError`` when ``position_idx`` does not match ``mode``.
    """
    long_value, short_value = effective_sides(symbol, positions, orders, mode)
    return EffectiveValue(
        long_value, short_value, long_value if long_value >= short_value else short_value
    )


def effective_sides(
    symbol: str,
    positions: Sequence[Position],
    orders: Sequence[Order],
    mode: PositionMode,
) -> tuple[Decimal, Decimal]:
    """(long side, short side) of ``effective_value`` without building the result object."""
    long_size = short_size = long_value = short_value = ZERO
    hedge = mode is HEDGE
    for p in positions:
        if p.symbol != symbol:
            continue
        if (p.position_idx != 0) is not hedge:
            raise ValueError(f"{symbol}: position_idx {p.position_idx} in {mode} mode")
        size = p.size
        if not size:
            continue
        if p.side is BUY:
            long_size += size
            long_value += size * p.entry_price
        else:
            short_size += size
            short_value += size * p.entry_price
    if long_size and short_size and not hedge:
        raise ValueError(f"{symbol}: one-way mode cannot hold both a long and a short")

    opposite: list[tuple[Decimal, Decimal]] = []
    for o in orders:
        if (
            o.symbol != symbol
            or o.reduce_only
            or o.close_on_trigger
            or o.is_conditional_untriggered
        ):
            continue
        qty = o.qty
        if qty <= ZERO:
            continue
        idx = o.position_idx
        if hedge:
            if idx == 0:
                raise ValueError(f"{symbol}: order {o.order_id} has position_idx 0 in hedge mode")
            # An order against its side's direction only closes that side.
            if idx == 1:
                if o.side is BUY:
                    long_value += qty * o.price
            elif o.side is SELL:
                short_value += qty * o.price
            continue
        if idx:
            raise ValueError(f"{symbol}: order {o.order_id} has position_idx {idx} in one-way mode")
        if o.side is BUY:
            if short_size:
                opposite.append((o.price, qty))
            else:
                long_value += qty * o.price
        elif long_size:
            opposite.append((o.price, qty))
        else:
            short_value += qty * o.price
    if opposite:
        if long_size:
            short_value += _flip_value(long_size, opposite)
        else:
            long_value += _flip_value(short_size, opposite)

    return long_value, short_value


def effective_value_with_order(
    symbol: str,
    positions: Sequence[Position],
    orders: Sequence[Order],
    mode: PositionMode,
    new_order: Order,
) -> EffectiveValue:
    """Effective value of ``symbol`` if ``new_order`` were placed next to ``orders``."""
    return effective_value(symbol, positions, [*orders, new_order], mode)


@dataclass(slots=True, frozen=True)
class OrderCheck:
    """What placing an order does to a symbol's tier and whether Bybit would accept it.

    ``leverage_cap`` is the largest value the leverage allows (``None``: the leverage is
    above every tier's maximum). ``blocked`` when the order raises a side of the rule and
    that side then exceeds the cap; an order that raises nothing (it only closes) is
    accepted even when the position is already above the cap. ``max_leverage_allowing`` is
    the highest leverage at which the value after the order is allowed (``None``: above
    the top tier at any leverage).
    """

    before: EffectiveValue
    after: EffectiveValue
    tier_before: TierMatch
    tier_after: TierMatch
    leverage_cap: Decimal | None
    blocked: bool
    max_leverage_allowing: Decimal | None


def check_order(
    table: TierTable,
    positions: Sequence[Position],
    orders: Sequence[Order],
    mode: PositionMode,
    leverage: Decimal,
    new_order: Order,
) -> OrderCheck:
    """Tier before/after placing ``new_order`` at ``leverage`` and whether it is blocked."""
    symbol = table.symbol
    before = effective_value(symbol, positions, orders, mode)
    after = effective_value_with_order(symbol, positions, orders, mode, new_order)
    cap = table.cap_at_leverage(leverage)
    grew_long = after.long_value > before.long_value
    grew_short = after.short_value > before.short_value
    if cap is None:
        blocked = grew_long or grew_short
    else:
        blocked = (grew_long and after.long_value > cap) or (grew_short and after.short_value > cap)
    i = table.index_for_value(after.value)
    max_lev = table.max_leverage_from(i) if i < len(table.tiers) else None
    return OrderCheck(
        before=before,
        after=after,
        tier_before=tier_for_value(table, before.value),
        tier_after=tier_for_value(table, after.value),
        leverage_cap=cap,
        blocked=blocked,
        max_leverage_allowing=max_lev,
    )
