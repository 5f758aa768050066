"""Pre-trade what-if: what one more order would do to an account, before it is placed.

Pure: the caller passes the account's positions, open orders, wallet, tier tables and
marks as the processor holds them. Two questions, answered by the same code as every
other figure we publish:

- **Would Bybit accept it?** ``check_order`` at the leverage the order would be placed
  at (the request's, else the position's): the tier before and after (effective value:
  positions plus open orders plus this order), the cap the leverage allows, whether the
  order is rejected (Bybit's 110090), and the highest leverage that would allow it.
- **What if it filled?** The position rows after a fill at the order's price, re-run
  through ``account_exposure``: initial margin and maintenance margin of the symbol, its
  liquidation price and distance, the account's MM rate and net, and the portfolio's net.

Liquidation prices after a fill are estimates, as in ``hedging``: Bybit's reported price
describes the rows as they are. Isolated margin uses Bybit's isolated formula, cross
margin the single-position solution with the other positions' maintenance margin held
constant, portfolio margin has none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from risk_processor.engine.effective import OrderCheck, check_order
from risk_processor.engine.exposure import AccountExposure, PositionExposure, account_exposure
from risk_processor.engine.liquidation import (
    cross_liq_price_single,
    isolated_liq_price,
    liq_distance_pct,
)
from risk_processor.engine.types import (
    BUY,
    SELL,
    ZERO,
    AccountProfile,
    MarginMode,
    Order,
    Position,
    PositionMode,
    Side,
    TierTable,
    Wallet,
)

WHAT_IF_ORDER_ID = "what-if"


class WhatIfError(ValueError):
    """The question cannot be answered from the state held (e.g. no tier table)."""


@dataclass(frozen=True, slots=True)
class WhatIf:
    """The answer for one order. Money in USD, rates as fractions, distance in percent.

    ``leverage_source`` is ``request`` or ``position``. ``leverage_cap`` is the largest
    value the leverage allows (``None``: no tier allows that leverage). ``cap_at_max_leverage``
    is the value allowed at ``max_leverage_allowing``. The ``*_after`` figures assume the
    order filled at its price; the symbol figures are those of the order's position row
    (its side in hedge mode); ``None`` where they cannot be known (no wallet, flat after).
    """

    account: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    reduce_only: bool
    leverage: Decimal
    leverage_source: str
    check: OrderCheck
    rejected: bool
    cap_at_max_leverage: Decimal | None
    position_value_after: Decimal
    initial_margin_after: Decimal
    maintenance_margin_after: Decimal
    liq_price_after: Decimal | None
    liq_distance_pct_after: Decimal | None
    account_mm_rate_before: Decimal | None
    account_mm_rate_after: Decimal | None
    account_net_before: Decimal
    account_net_after: Decimal
    portfolio_net_before: Decimal | None
    portfolio_net_after: Decimal | None


def _row_index(mode: PositionMode, side: Side, reduce_only: bool) -> int:
    if mode is not PositionMode.HEDGE:
        return 0
    opens_long = side is BUY
    # In hedge mode a reduce-only Sell closes the long (idx 1), a reduce-only Buy the short.
    if reduce_only:
        opens_long = not opens_long
    return 1 if opens_long else 2


def _fill(
    rows: Sequence[Position], row: Position, side: Side, qty: Decimal, price: Decimal
) -> Position:
    """``row`` after ``qty`` filled on ``side`` at ``price`` (average entry on an increase,
    entry kept on a reduction, the fill price for the part that flips the position)."""
    held = row.size if row.side is BUY else (-row.size if row.side is SELL else ZERO)
    delta = qty if side is BUY else -qty
    after = held + delta
    if after == 0:
        return replace(row, size=ZERO, side=None, liq_price=None)
    if held == 0 or (held > 0) == (delta > 0):
        entry = (abs(held) * row.entry_price + qty * price) / abs(after)
    elif (held > 0) == (after > 0):
        entry = row.entry_price
    else:
        entry = price
    return replace(
        row, size=abs(after), side=BUY if after > 0 else SELL, entry_price=entry, liq_price=None
    )


def _liq_after(
    mode: MarginMode, pe: PositionExposure, wallet: Wallet | None, total_mm: Decimal
) -> Decimal | None:
    p = pe.position
    tier = pe.tier
    if p.side is None or tier is None or mode is MarginMode.PORTFOLIO:
        return None
    if mode is MarginMode.ISOLATED:
        if not p.leverage:
            return None
        return isolated_liq_price(
            p.side, p.size, p.entry_price, p.leverage, tier.mmr, tier.mm_deduction
        )
    if wallet is None:
        return None
    own = pe.maintenance_margin or ZERO
    return cross_liq_price_single(
        p.side,
        p.size,
        p.entry_price,
        wallet.total_wallet_balance,
        tier.mmr,
        tier.mm_deduction,
        total_mm - own,
    )


def _mm_rate(exposure: AccountExposure) -> Decimal | None:
    return exposure.margin.mm_rate if exposure.margin is not None else None


def what_if(
    profile: AccountProfile,
    positions: Sequence[Position],
    orders: Sequence[Order],
    wallet: Wallet | None,
    tables: Mapping[str, TierTable],
    marks: Mapping[str, Decimal],
    *,
    symbol: str,
    side: Side,
    qty: Decimal,
    price: Decimal,
    leverage: Decimal | None = None,
    reduce_only: bool = False,
    portfolio_net: Decimal | None = None,
) -> WhatIf:
    """What placing (and then filling) one limit order would do; see the module doc.

    ``portfolio_net`` is the portfolio's net exposure now (its latest snapshot); the
    portfolio's net after is it plus the change of this account's net.
    Raises ``WhatIfError`` when the symbol has no tier table, or no leverage is known
    (no position row in the symbol and none in the request).
    """
    if qty <= 0 or price <= 0:
        raise WhatIfError("qty and price must be positive")
    table = tables.get(symbol)
    if table is None:
        raise WhatIfError(f"no risk-limit table for {symbol} yet")
    mode = profile.position_mode
    idx = _row_index(mode, side, reduce_only)
    row = next(
        (p for p in positions if p.symbol == symbol and p.position_idx == idx),
        None,
    )
    if leverage is not None:
        if leverage <= 0:
            raise WhatIfError("leverage must be positive")
        used, source = leverage, "request"
    else:
        held = row.leverage if row is not None else None
        if held is None:
            held = next((p.leverage for p in positions if p.symbol == symbol and p.leverage), None)
        if not held:
            raise WhatIfError(f"no leverage known for {symbol}: pass one")
        used, source = held, "position"
    order = Order(
        order_id=WHAT_IF_ORDER_ID,
        symbol=symbol,
        side=side,
        price=price,
        qty=qty,
        position_idx=idx,
        reduce_only=reduce_only,
    )
    check = check_order(table, positions, orders, mode, used, order)
    max_lev = check.max_leverage_allowing
    cap_at_max = table.cap_at_leverage(max_lev) if max_lev is not None else None

    before = account_exposure(profile, positions, orders, wallet, tables, marks)
    if row is None:
        row = Position(
            account=profile.account,
            symbol=symbol,
            position_idx=idx,
            side=None,
            size=ZERO,
            entry_price=price,
            leverage=used,
        )
        rows = [*positions, row]
    else:
        rows = list(positions)
    # Bybit's leverage is per symbol (per side in hedge mode): the request's applies to
    # the row the order fills into.
    filled = replace(_fill(rows, row, side, qty, price), leverage=used)
    # Reported liquidation prices describe the rows as they are, not as changed.
    rows_after = [replace(filled if r is row else r, liq_price=None) for r in rows]
    rows_after = [r for r in rows_after if r.side is not None]
    after = account_exposure(profile, rows_after, orders, wallet, tables, marks)

    total_mm = sum((pe.maintenance_margin or ZERO for pe in after.positions), ZERO)
    pe = next(
        (
            x
            for x in after.positions
            if x.position.symbol == symbol and x.position.position_idx == idx
        ),
        None,
    )
    if pe is None:
        value_after = im_after = mm_after = ZERO
        liq_after = distance_after = None
    else:
        value_after = pe.notional
        im_after = pe.notional / used
        mm_after = pe.maintenance_margin or ZERO
        liq_after = _liq_after(profile.margin_mode, pe, wallet, total_mm)
        assert pe.position.side is not None
        distance_after = liq_distance_pct(pe.position.side, pe.mark_price, liq_after)
    net_change = after.net - before.net
    return WhatIf(
        account=profile.account,
        symbol=symbol,
        side=side,
        qty=qty,
        price=price,
        reduce_only=reduce_only,
        leverage=used,
        leverage_source=source,
        check=check,
        rejected=check.blocked,
        cap_at_max_leverage=cap_at_max,
        position_value_after=value_after,
        initial_margin_after=im_after,
        maintenance_margin_after=mm_after,
        liq_price_after=liq_after,
        liq_distance_pct_after=distance_after,
        account_mm_rate_before=_mm_rate(before),
        account_mm_rate_after=_mm_rate(after),
        account_net_before=before.net,
        account_net_after=after.net,
        portfolio_net_before=portfolio_net,
        portfolio_net_after=None if portfolio_net is None else portfolio_net + net_change,
    )
