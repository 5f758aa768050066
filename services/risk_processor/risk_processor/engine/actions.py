"""What the trader should do about an alert, computed from the same figures as the alert.

Computed once per published transition (raised, escalated, updated), never per event: an
evaluation that only confirms an open alert computes nothing here. Every amount is a
minimum that is enough once rounded: margin to add rounds up to the cent, sizes to cut
round up to ``QTY_STEP`` (one step past the level for rules that still fire at it: MM
rate, liquidation distance), leverage targets are the exact tier maxima.

The figures, rule by rule (thresholds are the rule's *clear* levels, so doing what the
action says also resolves the alert instead of leaving it at the edge of its hysteresis):

- account MM rate ``MM / MB``: add ``MM / target − MB``; or cut the position holding the
  most maintenance margin until its MM fell by ``MM − target × MB`` (by its tier table);
- liquidation distance ``d`` % of a position of value ``V``: adding margin ``x`` moves the
  liquidation price by ``x / size``, so ``x = V × (target − d) / 100``; cutting the size
  to ``size × d / target`` keeps the free margin and gives the same distance (an estimate:
  the maintenance margin falls too, so it is if anything more than enough);
- order blocked by leverage: lower the leverage to the highest one allowing the effective
  value; or shrink the smallest open order that covers the excess (cancel when shrinking
  leaves nothing); or cut the position by the excess;
- near the leverage cap: lower the leverage to the one that allows the next order of the
  usual size (the open orders' value), else the next tier's; near a tier limit: watch;
- net exposure (USD, share of equity): cut ``|net|`` to the clear level;
- unrealized loss: cut the worst losing position by the share of its loss that is over
  the limit (cutting realizes it; the alert is about the open loss);
- direction bias / correlation (shares of position *counts*): close the smallest positions
  on the crowded side until the share is back inside the limit;
- tier moved up: margin for the new tier's initial margin, or cut back below the old
  tier's limit;
- Bybit grace period (risk-limit change): add more than the trial calculation's margin, or
  cut by its size reduction, before the deadline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final, Protocol

from risk_processor.engine.exposure import AccountExposure, PortfolioExposure, PositionExposure
from risk_processor.engine.margin import value_for_maintenance_margin
from risk_processor.engine.rules import Rule, Thresholds, lifting_leverage
from risk_processor.engine.types import BUY, HUNDRED, ONE, SELL, ZERO, Order, Side

QTY_STEP = Decimal("0.001")
"""Sizes are rounded up to this: lot sizes are not known to the engine."""

_CENT = Decimal("0.01")


class ActionKind:
    """Values of ``riskwatch_common.contracts.ActionKind``."""

    ADD_MARGIN: Final = "add_margin"
    REDUCE_POSITION: Final = "reduce_position"
    LOWER_LEVERAGE: Final = "lower_leverage"
    CANCEL_ORDER: Final = "cancel_order"
    REDUCE_EXPOSURE: Final = "reduce_exposure"
    CHECK_LINK: Final = "check_link"
    MONITOR: Final = "monitor"


@dataclass(frozen=True, slots=True)
class Action:
    """The engine's form of ``contracts.SuggestedAction`` (same fields, same meaning)."""

    kind: str
    account: str
    symbol: str | None = None
    side: Side | None = None
    qty: Decimal | None = None
    amount_usd: Decimal | None = None
    leverage: Decimal | None = None
    order_id: str | None = None
    deadline: datetime | None = None
    alternatives: tuple[Action, ...] = ()


class Finding(Protocol):
    """What an action is computed from: an alert's (or a candidate's) rule and figures."""

    @property
    def account(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def value(self) -> Decimal: ...
    @property
    def threshold(self) -> Decimal: ...
    @property
    def numbers(self) -> Mapping[str, Decimal]: ...


def _usd_up(x: Decimal) -> Decimal:
    return x.quantize(_CENT, rounding=ROUND_CEILING)


def _usd(x: Decimal) -> Decimal:
    return x.quantize(_CENT)


def _qty_up(x: Decimal) -> Decimal:
    return (x / QTY_STEP).to_integral_value(rounding=ROUND_CEILING) * QTY_STEP


def _above(x: Decimal, step: Decimal) -> Decimal:
    """The first multiple of ``step`` strictly above ``x``: for a rule that still fires
    at its clear level (MM rate >= level, liquidation distance <= level)."""
    return ((x / step).to_integral_value(rounding=ROUND_FLOOR) + 1) * step


def _closing(side: Side | None) -> Side | None:
    """The order side that reduces a position on ``side``."""
    if side is None:
        return None
    return SELL if side is BUY else BUY


def _symbol_of(subject: str) -> str:
    return subject.split(":", 1)[0]


def _position(exposure: AccountExposure, subject: str) -> PositionExposure | None:
    """The position an alert's subject names (``SYMBOL`` or ``SYMBOL:Side``), largest first."""
    symbol, _, side = subject.partition(":")
    found = [
        pe
        for pe in exposure.positions
        if pe.position.symbol == symbol
        and pe.position.size > 0
        and (not side or (pe.position.side is not None and pe.position.side.value == side))
    ]
    return max(found, key=lambda pe: pe.notional) if found else None


def _cut(account: str, pe: PositionExposure, qty: Decimal, *, strict: bool = False) -> Action:
    """Reduce ``pe`` by ``qty`` (rounded up, or strictly above with ``strict``; at most
    the whole position)."""
    size = pe.position.size
    qty = min(_above(qty, QTY_STEP) if strict else _qty_up(qty), size) if qty < size else size
    return Action(
        ActionKind.REDUCE_POSITION,
        account,
        symbol=pe.position.symbol,
        side=_closing(pe.position.side),
        qty=qty,
        amount_usd=_usd(qty * pe.mark_price),
    )


def _cut_value(
    account: str, pe: PositionExposure, value: Decimal, *, strict: bool = False
) -> Action:
    qty = value / pe.mark_price if pe.mark_price > 0 else pe.position.size
    return _cut(account, pe, qty, strict=strict)


def _add_margin(
    account: str, amount: Decimal, *alternatives: Action | None, strict: bool = False
) -> Action:
    return Action(
        ActionKind.ADD_MARGIN,
        account,
        amount_usd=_above(amount, _CENT) if strict else _usd_up(amount),
        alternatives=tuple(a for a in alternatives if a is not None),
    )


def _mm_rate(f: Finding, e: AccountExposure, t: Thresholds) -> Action | None:
    m = e.margin
    if m is None:
        return None
    target = t.clear.mm_rate_warning
    mm, balance = m.total_maintenance_margin, m.margin_balance
    add = mm / target - balance
    if add <= 0:
        return None
    excess_mm = mm - target * balance
    cut: Action | None = None
    holder = max(
        (pe for pe in e.positions if pe.maintenance_margin is not None),
        key=lambda pe: pe.maintenance_margin or ZERO,
        default=None,
    )
    held_mm = holder.maintenance_margin if holder is not None else None
    if holder is not None and held_mm is not None and held_mm > excess_mm and holder.table:
        kept = value_for_maintenance_margin(holder.table, held_mm - excess_mm)
        cut = _cut_value(f.account, holder, holder.notional - kept, strict=True)
    return _add_margin(f.account, add, cut, strict=True)


def _liquidation(f: Finding, e: AccountExposure, t: Thresholds) -> Action | None:
    pe = _position(e, f.subject)
    distance = pe.liq_distance_pct if pe is not None else None
    if pe is None or distance is None:
        return None
    target = t.clear.liq_distance_warning_pct
    if distance >= target:
        return None
    add = pe.notional * (target - distance) / HUNDRED
    size = pe.position.size
    cut = size * (ONE - distance / target) if distance > 0 else size
    return _add_margin(f.account, add, _cut(f.account, pe, cut, strict=True), strict=True)


def _adding_orders(orders: Sequence[Order], symbol: str) -> list[Order]:
    return [
        o for o in orders if o.symbol == symbol and not o.reduce_only and not o.close_on_trigger
    ]


def _order_blocked(f: Finding, e: AccountExposure, orders: Sequence[Order]) -> Action | None:
    pe = _position(e, f.subject)
    if pe is None:
        pe = next((p for p in e.positions if p.position.symbol == f.subject), None)
    if pe is None:
        return None
    symbol = pe.position.symbol
    cap = pe.leverage_cap if pe.leverage_cap is not None else ZERO
    excess = pe.effective_value - cap
    ways: list[Action] = []
    if pe.max_leverage_allowing is not None:
        ways.append(
            Action(
                ActionKind.LOWER_LEVERAGE,
                f.account,
                symbol=symbol,
                leverage=pe.max_leverage_allowing,
            )
        )
    covering = [o for o in _adding_orders(orders, symbol) if o.qty * o.price >= excess]
    if covering:
        order = min(covering, key=lambda o: o.qty * o.price)
        keep = ((order.qty * order.price - excess) / order.price).quantize(
            QTY_STEP, rounding=ROUND_FLOOR
        )
        keep = keep if keep > 0 else ZERO
        ways.append(
            Action(
                ActionKind.CANCEL_ORDER,
                f.account,
                symbol=symbol,
                side=order.side,
                qty=keep,
                amount_usd=_usd(order.qty * order.price) if keep == 0 else None,
                order_id=order.order_id,
            )
        )
    if pe.position.size > 0 and excess > 0 and excess <= pe.notional:
        ways.append(_cut_value(f.account, pe, excess))
    if not ways:
        # No single step fits the cap (no leverage allows the value, no order or cut is
        # large enough alone): cancel the largest adding order first; the alert stays
        # and its next action covers the rest.
        adding = _adding_orders(orders, symbol)
        if not adding:
            return _cut(f.account, pe, pe.position.size) if pe.position.size > 0 else None
        largest = max(adding, key=lambda o: o.qty * o.price)
        return Action(
            ActionKind.CANCEL_ORDER,
            f.account,
            symbol=symbol,
            side=largest.side,
            qty=ZERO,
            amount_usd=_usd(largest.qty * largest.price),
            order_id=largest.order_id,
        )
    return _with_alternatives(ways)


def _with_alternatives(ways: Sequence[Action]) -> Action:
    return replace(ways[0], alternatives=tuple(ways[1:]))


def _cap_proximity(f: Finding, e: AccountExposure, t: Thresholds) -> Action | None:
    pe = next((p for p in e.positions if p.position.symbol == f.subject), None)
    if pe is None:
        return None
    cap = pe.leverage_cap
    if cap is not None and pe.tier is not None and cap <= pe.tier.risk_limit_value:
        lifting = lifting_leverage(pe)
        if lifting is not None:
            return Action(ActionKind.LOWER_LEVERAGE, f.account, symbol=f.subject, leverage=lifting)
        # No leverage allows more: the cap is final. Get back under the warning level.
        excess = pe.effective_value - t.clear.cap_floor * cap
        if pe.position.size > 0 and ZERO < excess <= pe.notional:
            return _cut_value(f.account, pe, excess, strict=True)
    # Near a tier limit only the next tier's higher margin applies: nothing is blocked.
    return Action(ActionKind.MONITOR, f.account, symbol=f.subject)


def _net_exposure(f: Finding, net: Decimal, target: Decimal) -> Action | None:
    cut = abs(net) - target
    if cut <= 0:
        return None
    return Action(
        ActionKind.REDUCE_EXPOSURE,
        f.account,
        side=SELL if net > 0 else BUY,
        amount_usd=_usd_up(cut),
    )


def _worst_loss(
    f: Finding, positions: Sequence[PositionExposure], upl: Decimal, limit: Decimal
) -> Action | None:
    over = limit - upl  # loss beyond the limit, positive
    losing = [pe for pe in positions if pe.unrealized_pnl < 0 and pe.position.size > 0]
    if over <= 0 or not losing:
        return None
    worst = min(losing, key=lambda pe: pe.unrealized_pnl)
    share = over / -worst.unrealized_pnl
    qty = worst.position.size * share if share < ONE else worst.position.size
    return _cut(worst.position.account, worst, qty)


def _crowded(
    f: Finding, positions: Sequence[PositionExposure], buy_limit: Decimal, sell_limit: Decimal
) -> Action | None:
    """Close the smallest positions on the crowded side until its share of the position
    count is at most its limit (``buy_limit`` for buys, ``sell_limit`` for sells)."""
    open_ = [pe for pe in positions if pe.position.size > 0 and pe.position.side is not None]
    buys = [pe for pe in open_ if pe.position.side is BUY]
    sells = [pe for pe in open_ if pe.position.side is SELL]
    crowded = buys if len(buys) >= len(sells) else sells
    limit = buy_limit if crowded is buys else sell_limit
    n, k = len(open_), len(crowded)
    chosen: list[PositionExposure] = []
    for pe in sorted(crowded, key=lambda pe: pe.notional):
        if n and Decimal(k) / Decimal(n) <= limit:
            break
        chosen.append(pe)
        k, n = k - 1, n - 1
    if not chosen:
        return None
    if len(chosen) == 1:
        pe = chosen[0]
        return _cut(pe.position.account, pe, pe.position.size)
    side = crowded[0].position.side
    return Action(
        ActionKind.REDUCE_EXPOSURE,
        f.account,
        side=_closing(side),
        amount_usd=_usd(sum((pe.notional for pe in chosen), ZERO)),
    )


def _tier_moved(f: Finding, e: AccountExposure) -> Action | None:
    symbol = _symbol_of(f.subject)
    pe = _position(e, symbol)
    extra = f.numbers.get("extra_initial_margin")
    back: Action | None = None
    if pe is not None and pe.table is not None:
        old_id = int(f.threshold)
        old = next((t for t in pe.table.tiers if t.id == old_id), None)
        if old is not None and pe.notional > old.risk_limit_value:
            back = _cut_value(f.account, pe, pe.notional - old.risk_limit_value)
    if extra is not None and extra > 0:
        return _add_margin(f.account, extra, back)
    return back or Action(ActionKind.MONITOR, f.account, symbol=symbol)


def _platform_change(f: Finding, e: AccountExposure, deadline: datetime | None) -> Action | None:
    symbol = _symbol_of(f.subject)
    margin = f.numbers.get("margin_to_add")
    reduction = f.numbers.get("size_reduction")
    pe = _position(e, f.subject)
    if deadline is None:  # applied at once, or orders blocked by the leverage
        allowed = f.numbers.get("max_leverage_allowed")
        if allowed is not None and "leverage_cap" not in f.numbers:
            # the leverage is above every new tier's maximum: no order until it is lowered
            return Action(ActionKind.LOWER_LEVERAGE, f.account, symbol=symbol, leverage=allowed)
        return Action(ActionKind.MONITOR, f.account, symbol=symbol)
    cut = _cut(f.account, pe, reduction) if pe is not None and reduction else None
    if cut is not None:
        cut = replace(cut, deadline=deadline)
    if margin:
        # "more than" the boundary: one cent above it
        return replace(_add_margin(f.account, margin + _CENT, cut), deadline=deadline)
    return cut or Action(
        ActionKind.REDUCE_POSITION,
        f.account,
        symbol=symbol,
        side=_closing(pe.position.side) if pe else None,
        deadline=deadline,
    )


def account_action(
    f: Finding,
    exposure: AccountExposure,
    thresholds: Thresholds,
    orders: Sequence[Order] = (),
    deadlines: Mapping[str, datetime] | None = None,
) -> Action | None:
    """The action for an alert of one account (``None``: nothing is computable)."""
    rule = f.rule
    t = thresholds
    if rule == Rule.ACCOUNT_MM_RATE:
        return _mm_rate(f, exposure, t)
    if rule == Rule.LIQUIDATION_DISTANCE:
        return _liquidation(f, exposure, t)
    if rule == Rule.ORDER_BLOCKED:
        return _order_blocked(f, exposure, orders)
    if rule == Rule.TIER_CAP_PROXIMITY:
        return _cap_proximity(f, exposure, t)
    if rule == Rule.TIER_MOVED_UP:
        return _tier_moved(f, exposure)
    if rule == Rule.PLATFORM_RISK_CHANGE:
        return _platform_change(f, exposure, (deadlines or {}).get(_symbol_of(f.subject)))
    if rule == Rule.BYBIT_REDUCE_ONLY:
        pe = _position(exposure, f.subject)
        return Action(
            ActionKind.REDUCE_POSITION,
            f.account,
            symbol=_symbol_of(f.subject),
            side=_closing(pe.position.side) if pe is not None else None,
        )
    if rule == Rule.BYBIT_SYSTEM_ADJUSTMENT:
        return Action(ActionKind.MONITOR, f.account, symbol=_symbol_of(f.subject))
    return _shared_action(
        f, exposure.net, exposure.equity, exposure.unrealized_pnl, exposure.positions, t
    )


def portfolio_action(
    f: Finding, exposure: PortfolioExposure, thresholds: Thresholds
) -> Action | None:
    """The action for a portfolio alert (account ``portfolio``)."""
    positions = [pe for a in exposure.accounts for pe in a.positions]
    return _shared_action(
        f, exposure.net, exposure.equity, exposure.unrealized_pnl, positions, thresholds
    )


def _shared_action(
    f: Finding,
    net: Decimal,
    equity: Decimal | None,
    upl: Decimal,
    positions: Sequence[PositionExposure],
    t: Thresholds,
) -> Action | None:
    """Rules an account and the portfolio share."""
    rule = f.rule
    if rule == Rule.NET_EXPOSURE_USD:
        limit = t.clear.net_exposure_usd
        return _net_exposure(f, net, limit) if limit is not None else None
    if rule == Rule.NET_EXPOSURE_SHARE:
        if equity is None or equity <= 0:
            return None
        return _net_exposure(f, net, t.clear.net_share_warning * equity)
    if rule == Rule.UNREALIZED_LOSS:
        return _worst_loss(f, positions, upl, t.clear.unrealized_loss_usd)
    if rule == Rule.DIRECTION_BIAS:
        return _crowded(f, positions, t.clear.buy_share_high, ONE - t.clear.buy_share_low)
    if rule == Rule.CORRELATION_RISK:
        same = t.clear.same_side_share
        return _crowded(f, positions, same, same)
    return None


__all__ = [
    "QTY_STEP",
    "Action",
    "ActionKind",
    "Finding",
    "account_action",
    "portfolio_action",
]
