"""What a Bybit risk-parameter change (new tier table for a contract) does to a position.

Bybit runs a trial calculation per account (docs/product.md): if the account's risk after
the change is lower the new parameters apply at once; otherwise a 10-day grace period
starts in which the contract takes only reduce-only orders and cancellations, after which
the new parameters apply anyway. "Risk is lower after the change" means:

- standard account, long:  ``new_liq × 0.75 + avg_entry × 0.25 < mark``;
- standard account, short: ``new_liq × 0.75 + avg_entry × 0.25 > mark``;
- Unified Trading Account: account MM rate under the new limits ``< 75 %``.

Assumptions, stated because Bybit does not publish its trial calculation:

- the new tier is the one the symbol's effective value (positions + counted orders) falls
  in under the new table;
- standard: ``new_liq`` is the isolated-margin formula with the new tier's MMR and
  deduction, the position's current leverage (the margin it holds does not change with the
  table) and ``extra_margin`` (for a classic cross position pass the available balance);
  a long whose estimated liquidation price is <= 0 counts as lower risk;
- unified: the MM rate is ``margin.account_margin`` with the new table for this symbol and
  the current tables for the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from risk_processor.engine.effective import effective_value
from risk_processor.engine.liquidation import isolated_liq_price
from risk_processor.engine.margin import (
    account_margin,
    mark_price_of,
    position_mm_at_mark,
    value_for_maintenance_margin,
)
from risk_processor.engine.rules import (
    AlertCandidate,
    Rule,
    position_subject,
)
from risk_processor.engine.tiers import TierMatch, tier_for_value
from risk_processor.engine.types import (
    ZERO,
    AccountType,
    Order,
    Position,
    PositionMode,
    Severity,
    Side,
    TierTable,
    Wallet,
)

GRACE_PERIOD = timedelta(days=10)
UNIFIED_MM_RATE_LIMIT = Decimal("0.75")
_LIQ_WEIGHT = Decimal("0.75")
_ENTRY_WEIGHT = Decimal("0.25")


@dataclass(slots=True, frozen=True)
class PlatformChangeImpact:
    """The trial calculation's outcome for one position, and what lifts a grace period.

    ``criterion_value`` is ``new_liq × 0.75 + entry × 0.25`` (standard) or the new account
    MM rate (unified); ``criterion_limit`` is the mark price or 0.75 it is compared with.
    ``margin_to_add``: adding *more than* this (USD) makes the criterion hold (0 when it
    already holds; ``None`` when it cannot be computed). ``size_reduction``: reducing the
    position by this quantity brings the effective value within what the leverage allows
    under the new table and, for a unified account, the MM rate under 75 % (0 when nothing
    is needed; ``None`` when reducing this position alone cannot do it). ``leverage_cap``
    is the largest value the current leverage allows under the new table.
    ``orders_blocked_until_leverage_lowered``: flat with no order, and the leverage is above
    every new tier's maximum, so order placement fails until leverage is lowered.
    """

    account: str
    symbol: str
    subject: str
    account_type: AccountType
    effective_value: Decimal
    old_tier: TierMatch
    new_tier: TierMatch
    risk_lower: bool
    applies_immediately: bool
    grace_deadline: datetime | None
    criterion_value: Decimal | None
    criterion_limit: Decimal
    new_liq_price: Decimal | None
    new_mm_rate: Decimal | None
    leverage: Decimal | None
    leverage_cap: Decimal | None
    max_leverage_allowed: Decimal | None
    margin_to_add: Decimal | None
    size_reduction: Decimal | None
    orders_blocked_until_leverage_lowered: bool


def _cap_reduction(
    position: Position, side_value: Decimal, other_side_value: Decimal, cap: Decimal | None
) -> Decimal | None:
    """Quantity to cut from ``position`` so both sides of the rule fit within ``cap``."""
    if cap is None:
        return None
    if other_side_value > cap:
        return None
    excess = side_value - cap
    if excess <= 0:
        return ZERO
    qty = excess / position.entry_price
    return qty if qty <= position.size else None


def evaluate_platform_change(
    position: Position,
    old_table: TierTable,
    new_table: TierTable,
    *,
    account_type: AccountType,
    now: datetime,
    positions: Sequence[Position] = (),
    orders: Sequence[Order] = (),
    mode: PositionMode = PositionMode.ONE_WAY,
    marks: Mapping[str, Decimal] | None = None,
    extra_margin: Decimal = ZERO,
    wallet: Wallet | None = None,
    tables: Mapping[str, TierTable] | None = None,
    grace_period: timedelta = GRACE_PERIOD,
) -> PlatformChangeImpact:
    """Trial-calculate a new tier table for ``position`` (see the module docstring).

    ``positions`` are all the account's positions (the affected one is added when missing);
    ``orders`` its open orders; ``marks`` the latest mark per symbol. A unified account
    needs ``wallet``, and ``tables`` for the account's other symbols. The grace deadline is
    ``now + grace_period`` when the risk is not lower.
    """
    symbol = new_table.symbol
    if position.symbol != symbol or old_table.symbol != symbol:
        raise ValueError("position and both tables must be for the same symbol")
    marks = marks or {}
    all_positions = list(positions) if position in positions else [*positions, position]
    eff = effective_value(symbol, all_positions, orders, mode)
    old_match = tier_for_value(old_table, eff.value)
    new_match = tier_for_value(new_table, eff.value)
    tier = new_match.tier
    mark = mark_price_of(position, marks)
    leverage = position.leverage
    cap = new_table.cap_at_leverage(leverage) if leverage else None
    i = new_table.index_for_value(eff.value)
    max_lev = new_table.max_leverage_from(i) if i < len(new_table.tiers) else None
    side = position.side
    flat = not position.size or side is None

    blocked_flat = flat and not eff.value and bool(leverage) and cap is None

    new_liq: Decimal | None = None
    new_rate: Decimal | None = None
    criterion: Decimal | None = None
    margin_to_add: Decimal | None = None
    reduction: Decimal | None = None
    if side is Side.BUY:
        side_value, other_value = eff.long_value, eff.short_value
    else:
        side_value, other_value = eff.short_value, eff.long_value
    cap_cut = _cap_reduction(position, side_value, other_value, cap) if leverage else ZERO

    if account_type is AccountType.STANDARD:
        limit = mark
        if flat or side is None or not leverage:
            risk_lower = True
        else:
            new_liq = isolated_liq_price(
                side,
                position.size,
                position.entry_price,
                leverage,
                tier.mmr,
                tier.mm_deduction,
                extra_margin,
            )
            if new_liq is None:
                risk_lower = True
            else:
                criterion = new_liq * _LIQ_WEIGHT + position.entry_price * _ENTRY_WEIGHT
                risk_lower = criterion < mark if side is Side.BUY else criterion > mark
                # The liquidation price at which the criterion sits exactly on the mark;
                # each USD of margin moves the liquidation price by 1/size.
                target = (mark - position.entry_price * _ENTRY_WEIGHT) / _LIQ_WEIGHT
                gap = new_liq - target if side is Side.BUY else target - new_liq
                margin_to_add = gap * position.size if gap > 0 else ZERO
        reduction = cap_cut
    else:
        limit = UNIFIED_MM_RATE_LIMIT
        if wallet is None:
            raise ValueError("a unified account needs its wallet for the trial calculation")
        new_tables = {**(tables or {}), symbol: new_table}
        m = account_margin(wallet, all_positions, new_tables, marks)
        new_rate = m.mm_rate
        criterion = new_rate
        risk_lower = new_rate is not None and new_rate < UNIFIED_MM_RATE_LIMIT
        # Rate < 75 % needs margin balance > MM / 0.75.
        need = m.total_maintenance_margin / UNIFIED_MM_RATE_LIMIT - m.margin_balance
        margin_to_add = need if need > 0 else ZERO
        if flat or side is None:
            reduction = cap_cut
        else:
            own_mm, _ = position_mm_at_mark(position, mark, new_table)
            others_mm = m.total_maintenance_margin - own_mm
            budget = m.margin_balance * UNIFIED_MM_RATE_LIMIT - others_mm
            # Cutting size realizes PnL but leaves the margin balance as it is (fees aside),
            # so only this position's MM has to fit the budget left by the others.
            if budget <= 0:
                mm_cut = None
            elif risk_lower:
                mm_cut = ZERO
            else:
                keep = value_for_maintenance_margin(new_table, budget) / mark
                mm_cut = position.size - keep if keep < position.size else ZERO
            reduction = None if mm_cut is None or cap_cut is None else max(mm_cut, cap_cut)

    return PlatformChangeImpact(
        account=position.account,
        symbol=symbol,
        subject=position_subject(position),
        account_type=account_type,
        effective_value=eff.value,
        old_tier=old_match,
        new_tier=new_match,
        risk_lower=risk_lower,
        applies_immediately=risk_lower,
        grace_deadline=None if risk_lower else now + grace_period,
        criterion_value=criterion,
        criterion_limit=limit,
        new_liq_price=new_liq,
        new_mm_rate=new_rate,
        leverage=leverage,
        leverage_cap=cap,
        max_leverage_allowed=max_lev,
        margin_to_add=margin_to_add,
        size_reduction=reduction,
        orders_blocked_until_leverage_lowered=blocked_flat,
    )


def platform_change_alert(impact: PlatformChangeImpact) -> AlertCandidate | None:
    """Alert for a trial calculation: HIGH when a grace period starts, WARNING when a flat
    position's leverage blocks orders, INFO when the new parameters apply at once and move
    the position's tier rates; nothing when nothing changes for it.
    """
    old, new = impact.old_tier.tier, impact.new_tier.tier
    numbers: dict[str, Decimal] = {
        "effective_value": impact.effective_value,
        "old_mmr": old.mmr,
        "new_mmr": new.mmr,
        "old_max_leverage": old.max_leverage,
        "new_max_leverage": new.max_leverage,
    }
    for name, value in (
        ("criterion_value", impact.criterion_value),
        ("new_liq_price", impact.new_liq_price),
        ("new_mm_rate", impact.new_mm_rate),
        ("margin_to_add", impact.margin_to_add),
        ("size_reduction", impact.size_reduction),
        ("leverage_cap", impact.leverage_cap),
        ("max_leverage_allowed", impact.max_leverage_allowed),
    ):
        if value is not None:
            numbers[name] = value
    criterion = impact.criterion_value if impact.criterion_value is not None else ZERO
    where = (
        f"{impact.symbol} new risk limits: tier {new.id} (MMR {new.mmr}, max {new.max_leverage}x)"
    )
    if impact.grace_deadline is not None:
        remedies = []
        if impact.margin_to_add:
            remedies.append(f"add more than {impact.margin_to_add:,.2f} USD margin")
        if impact.size_reduction:
            remedies.append(f"reduce size by {impact.size_reduction}")
        remedy = " or ".join(remedies) if remedies else "lower the position's risk"
        return AlertCandidate(
            impact.account,
            Rule.PLATFORM_RISK_CHANGE,
            impact.subject,
            Severity.HIGH,
            criterion,
            impact.criterion_limit,
            f"{where} raise this position's risk: reduce-only until"
            f" {impact.grace_deadline.isoformat()}, then they apply anyway; {remedy}",
            numbers,
        )
    if impact.orders_blocked_until_leverage_lowered:
        # Flat with no order: the effective value is 0, so this is the table's top leverage.
        top = impact.max_leverage_allowed if impact.max_leverage_allowed is not None else ZERO
        return AlertCandidate(
            impact.account,
            Rule.PLATFORM_RISK_CHANGE,
            impact.subject,
            Severity.WARNING,
            impact.leverage or ZERO,
            top,
            f"{where}: leverage {impact.leverage}x is above every tier's maximum; orders fail"
            " until leverage is lowered",
            numbers,
        )
    if (old.mmr, old.imr, old.max_leverage) != (new.mmr, new.imr, new.max_leverage):
        return AlertCandidate(
            impact.account,
            Rule.PLATFORM_RISK_CHANGE,
            impact.subject,
            Severity.INFO,
            criterion,
            impact.criterion_limit,
            f"{where} apply at once: risk is lower after the change",
            numbers,
        )
    return None
