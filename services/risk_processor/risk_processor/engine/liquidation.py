"""Liquidation price estimates and distance to liquidation (docs/bybit-v5.md §4.3, §4.4).

Bybit's own ``liqPrice`` includes fees and is what Bybit acts on; these estimates are for
what-if questions (a new tier, more margin) and for rows where Bybit sent none.
"""

from __future__ import annotations

from decimal import Decimal

from risk_processor.engine.types import BUY, HUNDRED, ONE, ZERO, Side


def isolated_liq_price(
    side: Side,
    size: Decimal,
    entry_price: Decimal,
    leverage: Decimal,
    mmr: Decimal,
    mm_deduction: Decimal = ZERO,
    extra_margin: Decimal = ZERO,
) -> Decimal | None:
    """Isolated-margin liquidation price (Bybit's USDT-contract article).

    ``IM = size × entry / leverage``, ``MM = size × entry × MMR − deduction``;
    long ``LP = entry − (IM − MM)/size − extra/size``, short ``LP = entry + (IM − MM)/size
    + extra/size``. ``extra_margin`` is margin added beyond IM; for a classic cross
    position pass the available balance (Bybit's "sustainable loss = available + IM − MM").
    ``None`` when the long price would be <= 0 (never liquidated) or the size is 0.
    """
    if size <= 0:
        return None
    if leverage <= 0:
        raise ValueError(f"leverage must be positive, got {leverage}")
    value = size * entry_price
    im = value / leverage
    mm = value * mmr - mm_deduction
    cushion = (im - mm + extra_margin) / size
    if side is BUY:
        price = entry_price - cushion
        return price if price > ZERO else None
    return entry_price + cushion


def cross_liq_price_single(
    side: Side,
    size: Decimal,
    entry_price: Decimal,
    wallet_balance: Decimal,
    mmr: Decimal,
    mm_deduction: Decimal = ZERO,
    other_mm: Decimal = ZERO,
) -> Decimal | None:
    """Cross-margin liquidation mark price when one USDT perp is the account's only risk.

    Solves ``margin balance(P) = total MM(P)`` (docs/bybit-v5.md §4.4, derived by us, not Bybit's):
    long ``P = (size × entry − wallet + other_mm − d) / (size × (1 − MMR))``,
    short ``P = (wallet + size × entry + d − other_mm) / (size × (1 + MMR))``.
    The tier is held fixed at the one given; order IM, haircut and fees are ignored.
    ``None`` when no positive price liquidates the position.
    """
    if size <= 0:
        return None
    if side is BUY:
        price = (size * entry_price - wallet_balance + other_mm - mm_deduction) / (
            size * (ONE - mmr)
        )
    else:
        price = (wallet_balance + size * entry_price + mm_deduction - other_mm) / (
            size * (ONE + mmr)
        )
    return price if price > ZERO else None


def liq_distance_pct(side: Side, mark_price: Decimal, liq_price: Decimal | None) -> Decimal | None:
    """Price move from mark to liquidation, in percent of the mark.

    Long ``(mark − liq)/mark × 100``, short ``(liq − mark)/mark × 100``; negative means the
    mark is already past the liquidation price. ``None`` without a liquidation price (Bybit
    sends ``""`` or ``"0"`` for none) or without a positive mark.
    """
    if not liq_price or liq_price < ZERO or mark_price <= ZERO:
        return None
    if side is BUY:
        return (mark_price - liq_price) / mark_price * HUNDRED
    return (liq_price - mark_price) / mark_price * HUNDRED
