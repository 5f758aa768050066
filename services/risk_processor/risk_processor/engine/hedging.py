"""Ways out of a HIGH/CRITICAL alert and what each costs and changes, on our own math.

The AI analyst may rank and explain options but never computes a figure, and it cannot
import this engine (no service imports another), so the figures are computed here, where
the account's positions, orders, wallet, tier tables and marks already are, and travel in
the alert. Each option is simulated by changing the position rows and re-running
``account_exposure``: the net exposure and tier after an option come from the same code
as every other figure we publish.

Three options around the alert's target position (the subject symbol, else the riskiest):
- ``reduce``: a market order against the target for ``amount`` USD;
- ``offset``: the same notional on the opposite side, on the target's own symbol in hedge
  mode, else on the account's largest other symbol (a cross hedge);
- ``add_margin``: a transfer into the account (cross/unified) or into the isolated position.

Liquidation prices after a change are estimates (Bybit's reported price no longer applies
to the changed row): isolated margin uses Bybit's isolated formula, cross margin the
single-position solution of ``liquidation.cross_liq_price_single`` with the other
positions' maintenance margin held constant. "Before" uses the same formulas so that the
change is like for like. Lot sizes are not known to the engine: quantities are rounded
down to 0.001.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

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
    MarginMode,
    Order,
    Position,
    PositionMode,
    Side,
    TierTable,
    Wallet,
)

DEFAULT_TAKER_FEE_RATE = Decimal("0.00055")
"""Bybit's base (non-VIP) taker fee on USDT perpetuals, 0.055 %."""

_QTY = Decimal("0.001")
_USD = Decimal("0.01")
_PCT = Decimal("0.01")
_HALF = Decimal("0.5")


@dataclass(frozen=True, slots=True)
class HedgeFigures:
    option_id: str
    action: str
    symbol: str | None
    side: Side | None
    qty: Decimal | None
    notional: Decimal
    taker_fee_rate: Decimal
    fee: Decimal
    margin_needed: Decimal
    net_before: Decimal
    net_after: Decimal
    tier_before: int | None
    tier_after: int | None
    nearest_liq_before: Decimal | None
    nearest_liq_after: Decimal | None


@dataclass(frozen=True, slots=True)
class _State:
    net: Decimal
    tier: int | None
    nearest_liq: Decimal | None
    initial_margin: Decimal


def _opposite(side: Side) -> Side:
    return SELL if side is BUY else BUY


def _usd(x: Decimal) -> Decimal:
    return x.quantize(_USD, rounding=ROUND_HALF_EVEN)


def _pct(x: Decimal | None) -> Decimal | None:
    return None if x is None else x.quantize(_PCT, rounding=ROUND_HALF_EVEN)


def _fmt(x: Decimal) -> str:
    return f"{x.normalize():f}"


def target_position(exposure: AccountExposure, subject: str) -> PositionExposure | None:
    """The alert's position: the largest one in the subject symbol, else the riskiest."""
    in_subject = [pe for pe in exposure.positions if pe.position.symbol == subject]
    if in_subject:
        return max(in_subject, key=lambda pe: pe.notional)
    return exposure.top_risks[0] if exposure.top_risks else None


def _trade(
    rows: Sequence[Position], row: Position, side: Side, qty: Decimal, price: Decimal
) -> list[Position]:
    """``rows`` after a one-way fill of ``qty`` on ``side`` in ``row``'s symbol."""
    held = row.size if row.side is BUY else -row.size
    delta = qty if side is BUY else -qty
    after = held + delta
    if after == 0:
        changed = replace(row, size=ZERO, side=None, liq_price=None)
    else:
        same_way = held == 0 or (held > 0) == (delta > 0)
        if same_way:
            entry = (abs(held) * row.entry_price + qty * price) / abs(after)
        elif (held > 0) == (after > 0):
            entry = row.entry_price  # a reduction keeps the average entry
        else:
            entry = price  # flipped: the rest opened at the fill price
        changed = replace(
            row, size=abs(after), side=BUY if after > 0 else SELL, entry_price=entry, liq_price=None
        )
    return [changed if r is row else r for r in rows]


def _state(
    exposure: AccountExposure,
    rows: Sequence[Position],
    orders: Sequence[Order],
    wallet: Wallet | None,
    tables: Mapping[str, TierTable],
    marks: Mapping[str, Decimal],
    symbol: str,
    extra_margin: Decimal = ZERO,
    isolated_extra: tuple[str, int] | None = None,
) -> _State:
    profile = exposure.profile
    # Bybit's reported liquidation price describes the rows as they are, not as changed
    bare = [replace(r, liq_price=None) for r in rows]
    after = account_exposure(profile, bare, orders, wallet, tables, marks)
    total_mm = sum((pe.maintenance_margin or ZERO for pe in after.positions), ZERO)
    nearest: Decimal | None = None
    tier: int | None = None
    initial = ZERO
    for pe in after.positions:
        p = pe.position
        assert p.side is not None
        if p.leverage:
            initial += pe.notional / p.leverage
        if p.symbol == symbol and pe.tier is not None:
            tier = pe.tier.id if tier is None else max(tier, pe.tier.id)
        liq = _liq_price(profile.margin_mode, pe, wallet, total_mm, extra_margin, isolated_extra)
        distance = liq_distance_pct(p.side, pe.mark_price, liq)
        if distance is not None and (nearest is None or distance < nearest):
            nearest = distance
    return _State(after.net, tier, nearest, initial)


def _liq_price(
    mode: MarginMode,
    pe: PositionExposure,
    wallet: Wallet | None,
    total_mm: Decimal,
    extra_margin: Decimal,
    isolated_extra: tuple[str, int] | None,
) -> Decimal | None:
    p = pe.position
    assert p.side is not None
    tier = pe.tier
    if mode is MarginMode.PORTFOLIO or tier is None:
        return None
    if mode is MarginMode.ISOLATED:
        if not p.leverage:
            return None
        extra = extra_margin if isolated_extra == (p.symbol, p.position_idx) else ZERO
        return isolated_liq_price(
            p.side, p.size, p.entry_price, p.leverage, tier.mmr, tier.mm_deduction, extra
        )
    if wallet is None:
        return None
    own_mm = pe.maintenance_margin or ZERO
    return cross_liq_price_single(
        p.side,
        p.size,
        p.entry_price,
        wallet.total_wallet_balance + extra_margin,
        tier.mmr,
        tier.mm_deduction,
        total_mm - own_mm,
    )


def _offset_row(
    exposure: AccountExposure,
    rows: Sequence[Position],
    target: Position,
    marks: Mapping[str, Decimal],
) -> tuple[Position, Decimal] | None:
    """The row an offset trades in, and its price; a new flat row when there is none."""
    assert target.side is not None
    if exposure.profile.position_mode is PositionMode.HEDGE:
        idx = 2 if target.side is BUY else 1
        for r in rows:
            if r.symbol == target.symbol and r.position_idx == idx:
                return r, marks.get(r.symbol) or r.mark_price or r.entry_price
        mark = marks.get(target.symbol) or target.mark_price or target.entry_price
        flat = Position(target.account, target.symbol, idx, None, ZERO, mark, target.leverage, mark)
        return flat, mark
    others = [
        pe for pe in exposure.positions if pe.position.symbol != target.symbol and pe.mark_price > 0
    ]
    if not others:
        return None
    best = max(others, key=lambda pe: pe.notional)
    return best.position, best.mark_price


def hedge_options(
    exposure: AccountExposure,
    orders: Sequence[Order],
    wallet: Wallet | None,
    tables: Mapping[str, TierTable],
    marks: Mapping[str, Decimal],
    *,
    subject: str,
    amount_usd: Decimal | None = None,
    margin_usd: Decimal | None = None,
    taker_fee_rate: Decimal = DEFAULT_TAKER_FEE_RATE,
) -> tuple[HedgeFigures, ...]:
    """Up to three options for an alert on ``subject``, each with its figures.

    ``amount_usd`` is the position value to trade (the computed action's cut, when it has
    one), else half the target; ``margin_usd`` the transfer for ``add_margin`` (the
    action's margin), else the initial margin of ``amount_usd`` at the target's leverage.
    """
    pe = target_position(exposure, subject)
    if pe is None or pe.mark_price <= 0:
        return ()
    target = pe.position
    assert target.side is not None
    mark = pe.mark_price
    rows = [x.position for x in exposure.positions]
    amount = amount_usd if amount_usd is not None and amount_usd > 0 else pe.notional * _HALF
    amount = min(amount, pe.notional)
    qty = (amount / mark).quantize(_QTY, rounding=ROUND_DOWN)
    if qty <= 0:
        return ()
    symbol = target.symbol
    before = _state(exposure, rows, orders, wallet, tables, marks, symbol)

    def figures(
        option_id: str,
        action: str,
        after: _State,
        *,
        on: str | None,
        side: Side | None,
        size: Decimal | None,
        notional: Decimal,
        transfer: Decimal = ZERO,
    ) -> HedgeFigures:
        fee = notional * taker_fee_rate
        return HedgeFigures(
            option_id=option_id,
            action=action,
            symbol=on,
            side=side,
            qty=size,
            notional=_usd(notional),
            taker_fee_rate=taker_fee_rate,
            fee=_usd(fee),
            margin_needed=_usd(after.initial_margin - before.initial_margin + transfer),
            net_before=_usd(before.net),
            net_after=_usd(after.net),
            tier_before=before.tier,
            tier_after=after.tier,
            nearest_liq_before=_pct(before.nearest_liq),
            nearest_liq_after=_pct(after.nearest_liq),
        )

    out: list[HedgeFigures] = []
    close = _opposite(target.side)
    notional = qty * mark
    reduced = _trade(rows, target, close, qty, mark)
    out.append(
        figures(
            "reduce",
            f"{close.value.lower()} {_fmt(qty)} {symbol} at market (reduce-only)",
            _state(exposure, reduced, orders, wallet, tables, marks, symbol),
            on=symbol,
            side=close,
            size=qty,
            notional=notional,
        )
    )

    found = _offset_row(exposure, rows, target, marks)
    if found is not None:
        row, price = found
        hedge_qty = (amount / price).quantize(_QTY, rounding=ROUND_DOWN)
        if hedge_qty > 0:
            hedged = rows if row in rows else [*rows, row]
            hedged = _trade(hedged, row, close, hedge_qty, price)
            out.append(
                figures(
                    "offset",
                    f"{close.value.lower()} {_fmt(hedge_qty)} {row.symbol} at market "
                    f"to offset {symbol}",
                    _state(exposure, hedged, orders, wallet, tables, marks, symbol),
                    on=row.symbol,
                    side=close,
                    size=hedge_qty,
                    notional=hedge_qty * price,
                )
            )

    transfer = margin_usd if margin_usd is not None and margin_usd > 0 else None
    if transfer is None and target.leverage:
        transfer = notional / target.leverage
    if transfer is not None:
        transfer = _usd(transfer)
        isolated = exposure.profile.margin_mode is MarginMode.ISOLATED
        where = f"{symbol} isolated margin" if isolated else f"{exposure.profile.account}"
        out.append(
            figures(
                "add_margin",
                f"transfer {_fmt(transfer)} USDT into {where}",
                _state(
                    exposure,
                    rows,
                    orders,
                    wallet,
                    tables,
                    marks,
                    symbol,
                    extra_margin=transfer,
                    isolated_extra=(symbol, target.position_idx) if isolated else None,
                ),
                on=None,
                side=None,
                size=None,
                notional=ZERO,
                transfer=transfer,
            )
        )
    return tuple(out)
