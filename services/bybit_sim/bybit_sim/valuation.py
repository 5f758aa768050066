"""Account valuation under UTA cross margin: tiers, IM/MM, UPL, wallet totals, liq estimate.

Position value, IM and MM use the average entry price (docs/bybit-v5.md §4.1); only UPL follows the
mark price. So a price move changes margin balance, and with it accountMMRate, while MM stays
put; liquidation is accountMMRate = 100 % (docs/bybit-v5.md §4.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from bybit_sim.margin import (
    OrderLeg,
    PositionLeg,
    Tier,
    effective_position_value,
    maintenance_margin,
    max_position_value,
    opening_value,
    tier_for_value,
)
from bybit_sim.state import ZERO, Account, Market, Position

DEFAULT_LEVERAGE = Decimal(10)


@dataclass(frozen=True, slots=True)
class SymbolRisk:
    """The account's standing in one symbol's tier table (auto risk limit)."""

    symbol: str
    effective_value: Decimal
    tier: Tier
    leverage: Decimal
    max_value_at_leverage: Decimal

    @property
    def exceeds_leverage_cap(self) -> bool:
        return self.effective_value > self.max_value_at_leverage


@dataclass(frozen=True, slots=True)
class PositionView:
    position: Position
    tier: Tier
    mark_price: Decimal
    value: Decimal
    im: Decimal
    mm: Decimal
    upl: Decimal
    liq_price: Decimal | None


@dataclass(frozen=True, slots=True)
class WalletView:
    wallet_balance: Decimal
    upl: Decimal
    margin_balance: Decimal
    position_im: Decimal
    order_im: Decimal
    total_mm: Decimal
    cum_realised_pnl: Decimal

    @property
    def total_im(self) -> Decimal:
        return self.position_im + self.order_im

    @property
    def available(self) -> Decimal:
        return max(self.margin_balance - self.total_im, ZERO)

    @property
    def im_rate(self) -> Decimal:
        return _rate(self.total_im, self.margin_balance)

    @property
    def mm_rate(self) -> Decimal:
        return _rate(self.total_mm, self.margin_balance)


def _rate(margin: Decimal, balance: Decimal) -> Decimal:
    if margin == 0:
        return ZERO
    # A non-positive margin balance is past liquidation; report 100 % rather than divide.
    if balance <= 0:
        return Decimal(1)
    return margin / balance


def leverage_for(account: Account, symbol: str, position_idx: int) -> Decimal:
    position = account.positions.get((symbol, position_idx))
    if position is not None:
        return position.leverage
    return account.default_leverage.get(symbol, DEFAULT_LEVERAGE)


def _legs(account: Account, symbol: str) -> tuple[list[PositionLeg], list[OrderLeg]]:
    positions = [
        PositionLeg(p.side, p.size, p.entry_price, p.position_idx)
        for (sym, _), p in account.positions.items()
        if sym == symbol
    ]
    orders = [
        OrderLeg(o.side, o.leaves_qty, o.price, o.reduce_only, o.position_idx)
        for o in account.open_orders.values()
        if o.symbol == symbol
    ]
    return positions, orders


def symbol_risk(account: Account, market: Market) -> SymbolRisk:
    positions, orders = _legs(account, market.symbol)
    value = effective_position_value(positions, orders, hedge=account.hedge)
    # In hedge mode both sides share one leverage setting per symbol on Bybit UTA cross.
    idx = 1 if account.hedge else 0
    leverage = leverage_for(account, market.symbol, idx)
    tier = tier_for_value(market.tiers, value)
    # Auto risk limit moves the tier only within what the chosen leverage allows
    # (docs/bybit-v5.md §4.5); an order past that cap is one Bybit would have refused.
    allowed = [t for t in market.tiers if t.max_leverage >= leverage]
    if allowed and tier.id > allowed[-1].id:
        tier = allowed[-1]
    return SymbolRisk(
        symbol=market.symbol,
        effective_value=value,
        tier=tier,
        leverage=leverage,
        max_value_at_leverage=max_position_value(market.tiers, leverage),
    )


def unrealised_pnl(position: Position, mark: Decimal) -> Decimal:
    if not position.is_open:
        return ZERO
    direction = 1 if position.side == "Buy" else -1
    return (mark - position.entry_price) * position.size * direction


def order_im(account: Account, markets: Mapping[str, Market]) -> Decimal:
    """Σ opening order value / leverage: active orders reserve initial margin (§4.4)."""
    total = ZERO
    for order in account.open_orders.values():
        if order.symbol not in markets:
            continue
        positions, _ = _legs(account, order.symbol)
        leg = OrderLeg(
            order.side, order.leaves_qty, order.price, order.reduce_only, order.position_idx
        )
        value = opening_value(leg, positions, hedge=account.hedge)
        total += value / leverage_for(account, order.symbol, order.position_idx)
    return total


def _position_margins(
    account: Account, markets: Mapping[str, Market]
) -> list[tuple[Position, Tier, Decimal, Decimal, Decimal, Decimal]]:
    risks = {symbol: symbol_risk(account, market) for symbol, market in markets.items()}
    out = []
    for position in account.positions.values():
        market = markets[position.symbol]
        tier = risks[position.symbol].tier
        value = position.size * position.entry_price
        im = value / position.leverage if position.is_open else ZERO
        mm = maintenance_margin(tier, value) if position.is_open else ZERO
        upl = unrealised_pnl(position, market.mark_price)
        out.append((position, tier, value, im, mm, upl))
    return out


def wallet_view(account: Account, markets: Mapping[str, Market]) -> WalletView:
    margins = _position_margins(account, markets)
    upl = sum((m[5] for m in margins), ZERO)
    return WalletView(
        wallet_balance=account.wallet_balance,
        upl=upl,
        margin_balance=account.wallet_balance + upl,
        position_im=sum((m[3] for m in margins), ZERO),
        order_im=order_im(account, markets),
        total_mm=sum((m[4] for m in margins), ZERO),
        cum_realised_pnl=account.cum_realised_pnl,
    )


def position_views(
    account: Account, markets: Mapping[str, Market]
) -> dict[tuple[str, int], PositionView]:
    margins = _position_margins(account, markets)
    wallet = wallet_view(account, markets)
    cushion = wallet.margin_balance - wallet.total_mm
    views = {}
    for position, tier, value, im, mm, upl in margins:
        market = markets[position.symbol]
        views[(position.symbol, position.position_idx)] = PositionView(
            position=position,
            tier=tier,
            mark_price=market.mark_price,
            value=value,
            im=im,
            mm=mm,
            upl=upl,
            liq_price=_liq_price(position, market, cushion),
        )
    return views


def _liq_price(position: Position, market: Market, cushion: Decimal) -> Decimal | None:
    """Cross-margin estimate: the mark at which margin balance meets total MM, all else held.

    Bybit calls its own cross liqPrice an estimate too (docs/bybit-v5.md §2.1).
    """
    if not position.is_open:
        return None
    move = cushion / position.size
    if position.side == "Buy":
        price = market.mark_price - move
        rounding = ROUND_CEILING
    else:
        price = market.mark_price + move
        rounding = ROUND_FLOOR
    if price <= 0:
        return None
    return (price / market.tick_size).to_integral_value(rounding=rounding) * market.tick_size
