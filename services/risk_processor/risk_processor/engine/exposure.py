"""Exposure of one account and of the whole portfolio, with a LOW/MEDIUM/HIGH risk level.

Notional is size × mark price (entry price when no mark is known yet). Effective value,
tier and caps follow Bybit's tier rules (``effective``, ``tiers``); margin follows
``margin``. The risk level rule is in ``RiskLevelPolicy``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from risk_processor.engine.effective import effective_sides
from risk_processor.engine.liquidation import isolated_liq_price
from risk_processor.engine.margin import AccountMargin, mm_rate_of
from risk_processor.engine.types import (
    BUY,
    CROSS,
    HEDGE,
    HUNDRED,
    ISOLATED,
    ONE,
    PORTFOLIO_MARGIN,
    SELL,
    ZERO,
    AccountProfile,
    Order,
    Position,
    RiskLevel,
    Tier,
    TierTable,
    Wallet,
    slot_setter,
)

# Enum member lookup costs about 0.1 µs on Python 3.11; these run on every event.
_LOW = RiskLevel.LOW
_MEDIUM = RiskLevel.MEDIUM
_HIGH = RiskLevel.HIGH


@dataclass(slots=True, frozen=True)
class RiskLevelPolicy:
    """Thresholds of the risk level; comparisons are inclusive.

    HIGH when the account is in liquidation, or account MM rate >= ``high_mm_rate``, or
    any liquidation distance <= ``high_liq_distance_pct``, or |net| / equity >=
    ``high_net_share``, or equity <= 0.
    MEDIUM when MM rate >= ``medium_mm_rate``, or a liquidation distance <=
    ``medium_liq_distance_pct``, or |net| / equity >= ``medium_net_share``, or a
    position's effective value is within ``medium_cap_proximity`` of its nearest cap
    (the current tier's limit or the leverage cap, whichever is lower).
    LOW otherwise.
    """

    high_mm_rate: Decimal = Decimal("0.5")
    high_liq_distance_pct: Decimal = Decimal(5)
    high_net_share: Decimal = Decimal("0.5")
    medium_mm_rate: Decimal = Decimal("0.3")
    medium_liq_distance_pct: Decimal = Decimal(15)
    medium_net_share: Decimal = Decimal("0.2")
    medium_cap_proximity: Decimal = Decimal("0.10")


DEFAULT_RISK_POLICY = RiskLevelPolicy()


@dataclass(slots=True, frozen=True)
class PositionExposure:
    """One position's exposure and its distance to tier, leverage cap and liquidation.

    ``effective_value`` is the symbol's (shared by both hedge sides) and ``tier`` the tier
    it falls in (the top tier when above it: see ``over_limit``). ``leverage_cap`` is the
    largest value the position's leverage allows, ``max_leverage_allowing`` the highest
    leverage at which the effective value is allowed. ``maintenance_margin`` is at mark
    with the tier by that value. ``risk_score`` is notional × leverage (the brief's "size ×
    leverage", in USD so symbols compare; unknown leverage counts as 1). ``liq_price`` is
    Bybit's when sent, else the isolated estimate under isolated margin. ``table`` is the
    tier table the figures came from.
    """

    position: Position
    mark_price: Decimal
    notional: Decimal
    unrealized_pnl: Decimal
    risk_score: Decimal
    effective_value: Decimal
    tier: Tier | None
    leverage_cap: Decimal | None
    max_leverage_allowing: Decimal | None
    maintenance_margin: Decimal | None
    liq_price: Decimal | None
    liq_distance_pct: Decimal | None
    table: TierTable | None = field(default=None, repr=False, compare=False)

    @property
    def over_limit(self) -> bool:
        """The effective value is above the top tier."""
        return self.tier is not None and self.effective_value > self.tier.risk_limit_value

    @property
    def headroom_to_next_tier(self) -> Decimal | None:
        """Current tier limit − effective value (negative when above the top tier)."""
        return None if self.tier is None else self.tier.risk_limit_value - self.effective_value

    @property
    def headroom_to_leverage_cap(self) -> Decimal | None:
        """Leverage cap − effective value (negative: orders adding to it are rejected)."""
        return None if self.leverage_cap is None else self.leverage_cap - self.effective_value

    @property
    def nearest_cap(self) -> Decimal | None:
        """The lower of the tier limit and the leverage cap."""
        if self.tier is None:
            return None
        limit = self.tier.risk_limit_value
        cap = self.leverage_cap
        return cap if cap is not None and cap < limit else limit

    @property
    def cap_utilization(self) -> Decimal | None:
        """Effective value / ``nearest_cap``."""
        cap = self.nearest_cap
        return None if cap is None else self.effective_value / cap


@dataclass(slots=True, frozen=True)
class AccountExposure:
    """Exposure of one account at current marks.

    ``equity`` is the wallet's equity moved by the change in perp UPL since the wallet
    update; ``net_share`` is net / equity (signed; ``None`` without positive equity).
    ``margin`` is the recomputed cross margin (see ``margin.account_margin``), the wallet's
    own rate under portfolio margin, ``None`` under isolated margin or without a wallet.
    ``buy_share`` is the share of non-flat positions on the Buy side (direction bias).
    ``risk_drivers`` names the conditions that set ``risk_level``.
    """

    profile: AccountProfile
    total_long: Decimal
    total_short: Decimal
    net: Decimal
    gross: Decimal
    equity: Decimal | None
    net_share: Decimal | None
    unrealized_pnl: Decimal
    margin: AccountMargin | None
    buy_share: Decimal | None
    position_count: int
    positions: tuple[PositionExposure, ...]
    top_risks: tuple[PositionExposure, ...]
    risk_level: RiskLevel
    risk_drivers: tuple[str, ...]

    @property
    def margin_ratio(self) -> Decimal | None:
        """Account maintenance-margin rate (fraction), when known."""
        return self.margin.mm_rate if self.margin is not None else None


@dataclass(slots=True, frozen=True)
class PortfolioExposure:
    """All accounts together: sums, shares recomputed on the sums, top 3 across accounts.

    ``worst_margin_ratio`` is the highest account MM rate (margin is not pooled across
    accounts, so the weakest account is what matters). ``risk_level`` is at least the worst
    account's level, raised by the portfolio-wide net share.
    """

    accounts: tuple[AccountExposure, ...]
    total_long: Decimal
    total_short: Decimal
    net: Decimal
    gross: Decimal
    equity: Decimal | None
    net_share: Decimal | None
    unrealized_pnl: Decimal
    worst_margin_ratio: Decimal | None
    any_in_liquidation: bool
    buy_share: Decimal | None
    position_count: int
    top_risks: tuple[PositionExposure, ...]
    risk_level: RiskLevel
    risk_drivers: tuple[str, ...]


def _risk_score(p: PositionExposure) -> Decimal:
    return p.risk_score


_DRIVER_LIQUIDATION = "in_liquidation"
_DRIVER_MM_RATE = "mm_rate"
_DRIVER_LIQ_DISTANCE = "liq_distance"
_DRIVER_NET_SHARE = "net_share"
_DRIVER_EQUITY = "no_equity"
_DRIVER_CAP = "cap_proximity"


def _level(
    policy: RiskLevelPolicy,
    margin: AccountMargin | None,
    min_liq_distance: Decimal | None,
    net: Decimal,
    equity: Decimal | None,
    near_cap: bool,
) -> tuple[RiskLevel, tuple[str, ...]]:
    high: list[str] = []
    medium: list[str] = []
    if margin is not None:
        if margin.in_liquidation:
            high.append(_DRIVER_LIQUIDATION)
        rate = margin.mm_rate
        if rate is not None:
            if rate >= policy.high_mm_rate:
                high.append(_DRIVER_MM_RATE)
            elif rate >= policy.medium_mm_rate:
                medium.append(_DRIVER_MM_RATE)
    if min_liq_distance is not None:
        if min_liq_distance <= policy.high_liq_distance_pct:
            high.append(_DRIVER_LIQ_DISTANCE)
        elif min_liq_distance <= policy.medium_liq_distance_pct:
            medium.append(_DRIVER_LIQ_DISTANCE)
    if equity is not None:
        if equity <= ZERO:
            if net:
                high.append(_DRIVER_EQUITY)
        else:
            # |net| / equity >= share, without the division.
            size = abs(net)
            if size >= policy.high_net_share * equity:
                high.append(_DRIVER_NET_SHARE)
            elif size >= policy.medium_net_share * equity:
                medium.append(_DRIVER_NET_SHARE)
    if near_cap:
        medium.append(_DRIVER_CAP)
    if high:
        return _HIGH, (*high, *medium)
    if medium:
        return _MEDIUM, tuple(medium)
    return _LOW, ()


# Hot-path builders: see ``slot_setter``. Each field is written by name.
_new = object.__new__
_pe_position = slot_setter(PositionExposure, "position")
_pe_mark_price = slot_setter(PositionExposure, "mark_price")
_pe_notional = slot_setter(PositionExposure, "notional")
_pe_unrealized_pnl = slot_setter(PositionExposure, "unrealized_pnl")
_pe_risk_score = slot_setter(PositionExposure, "risk_score")
_pe_effective_value = slot_setter(PositionExposure, "effective_value")
_pe_tier = slot_setter(PositionExposure, "tier")
_pe_leverage_cap = slot_setter(PositionExposure, "leverage_cap")
_pe_max_leverage_allowing = slot_setter(PositionExposure, "max_leverage_allowing")
_pe_maintenance_margin = slot_setter(PositionExposure, "maintenance_margin")
_pe_liq_price = slot_setter(PositionExposure, "liq_price")
_pe_liq_distance_pct = slot_setter(PositionExposure, "liq_distance_pct")
_pe_table = slot_setter(PositionExposure, "table")


def _position_exposure(
    *,
    position: Position,
    mark_price: Decimal,
    notional: Decimal,
    unrealized_pnl: Decimal,
    risk_score: Decimal,
    effective_value: Decimal,
    tier: Tier | None,
    leverage_cap: Decimal | None,
    max_leverage_allowing: Decimal | None,
    maintenance_margin: Decimal | None,
    liq_price: Decimal | None,
    liq_distance_pct: Decimal | None,
    table: TierTable | None,
) -> PositionExposure:
    pe: PositionExposure = _new(PositionExposure)
    _pe_position(pe, position)
    _pe_mark_price(pe, mark_price)
    _pe_notional(pe, notional)
    _pe_unrealized_pnl(pe, unrealized_pnl)
    _pe_risk_score(pe, risk_score)
    _pe_effective_value(pe, effective_value)
    _pe_tier(pe, tier)
    _pe_leverage_cap(pe, leverage_cap)
    _pe_max_leverage_allowing(pe, max_leverage_allowing)
    _pe_maintenance_margin(pe, maintenance_margin)
    _pe_liq_price(pe, liq_price)
    _pe_liq_distance_pct(pe, liq_distance_pct)
    _pe_table(pe, table)
    return pe


_ae_profile = slot_setter(AccountExposure, "profile")
_ae_total_long = slot_setter(AccountExposure, "total_long")
_ae_total_short = slot_setter(AccountExposure, "total_short")
_ae_net = slot_setter(AccountExposure, "net")
_ae_gross = slot_setter(AccountExposure, "gross")
_ae_equity = slot_setter(AccountExposure, "equity")
_ae_net_share = slot_setter(AccountExposure, "net_share")
_ae_unrealized_pnl = slot_setter(AccountExposure, "unrealized_pnl")
_ae_margin = slot_setter(AccountExposure, "margin")
_ae_buy_share = slot_setter(AccountExposure, "buy_share")
_ae_position_count = slot_setter(AccountExposure, "position_count")
_ae_positions = slot_setter(AccountExposure, "positions")
_ae_top_risks = slot_setter(AccountExposure, "top_risks")
_ae_risk_level = slot_setter(AccountExposure, "risk_level")
_ae_risk_drivers = slot_setter(AccountExposure, "risk_drivers")


def _account_exposure(
    *,
    profile: AccountProfile,
    total_long: Decimal,
    total_short: Decimal,
    net: Decimal,
    gross: Decimal,
    equity: Decimal | None,
    net_share: Decimal | None,
    unrealized_pnl: Decimal,
    margin: AccountMargin | None,
    buy_share: Decimal | None,
    position_count: int,
    positions: tuple[PositionExposure, ...],
    top_risks: tuple[PositionExposure, ...],
    risk_level: RiskLevel,
    risk_drivers: tuple[str, ...],
) -> AccountExposure:
    ae: AccountExposure = _new(AccountExposure)
    _ae_profile(ae, profile)
    _ae_total_long(ae, total_long)
    _ae_total_short(ae, total_short)
    _ae_net(ae, net)
    _ae_gross(ae, gross)
    _ae_equity(ae, equity)
    _ae_net_share(ae, net_share)
    _ae_unrealized_pnl(ae, unrealized_pnl)
    _ae_margin(ae, margin)
    _ae_buy_share(ae, buy_share)
    _ae_position_count(ae, position_count)
    _ae_positions(ae, positions)
    _ae_top_risks(ae, top_risks)
    _ae_risk_level(ae, risk_level)
    _ae_risk_drivers(ae, risk_drivers)
    return ae


def _fresh_position(
    p: Position,
    mark: Decimal,
    effective: Decimal,
    table: TierTable | None,
    isolated: bool,
) -> PositionExposure:
    """A position's exposure computed from scratch (``p`` is not flat)."""
    size = p.size
    entry = p.entry_price
    leverage = p.leverage
    notional = size * mark
    buy = p.side is BUY
    pnl = (mark - entry) * size if buy else (entry - mark) * size
    tier: Tier | None = None
    cap = max_lev = mm = None
    if table is not None:
        # Inlined TierTable lookups (see tier_for_value, cap_at_leverage, ...).
        tiers = table.tiers
        limits = table.limits
        i = bisect_left(limits, effective)
        if i < len(tiers):
            tier = tiers[i]
            max_lev = table.suffix_max_leverage[i]
        else:
            tier = tiers[-1]
        if leverage:
            keys = table.leverage_keys
            k = bisect_left(keys, leverage)
            if k < len(keys):
                cap = table.leverage_caps[k]
        j = bisect_left(limits, notional)
        mm_tier = tiers[j] if j < len(tiers) else tiers[-1]
        mm = notional * mm_tier.mmr - mm_tier.mm_deduction
        if mm < ZERO:
            mm = ZERO
    liq = p.liq_price or None
    if liq is None and isolated and leverage and tier is not None:
        liq = isolated_liq_price(
            BUY if buy else SELL, size, entry, leverage, tier.mmr, tier.mm_deduction
        )
    distance = None
    if liq is not None and liq > ZERO and mark > ZERO:
        # liq_distance_pct, inlined.
        distance = ((mark - liq) if buy else (liq - mark)) / mark * HUNDRED
    return _position_exposure(
        position=p,
        mark_price=mark,
        notional=notional,
        unrealized_pnl=pnl,
        risk_score=notional * leverage if leverage else notional,
        effective_value=effective,
        tier=tier,
        leverage_cap=cap,
        max_leverage_allowing=max_lev,
        maintenance_margin=mm,
        liq_price=liq,
        liq_distance_pct=distance,
        table=table,
    )


def account_exposure(
    profile: AccountProfile,
    positions: Sequence[Position],
    orders: Sequence[Order],
    wallet: Wallet | None,
    tables: Mapping[str, TierTable],
    marks: Mapping[str, Decimal],
    policy: RiskLevelPolicy = DEFAULT_RISK_POLICY,
    previous: AccountExposure | None = None,
) -> AccountExposure:
    """Exposure of one account from its positions, open orders, wallet and mark prices.

    ``marks`` holds the latest mark per symbol (ticker stream); a position without one uses
    its own row's mark, then its entry price. Tier figures are ``None`` for symbols without
    a table and under portfolio margin (no per-contract risk limits there). Flat rows
    (size 0) give no ``PositionExposure``.

    ``previous`` (this account's last result, optional) makes re-evaluation incremental and
    never changes the result: a previous ``PositionExposure`` is carried over only when
    every input it was computed from is the same (the same ``Position`` object, an equal
    mark and effective value, the same table object, an equal profile); anything else is
    recomputed. Account totals and the risk level are always recomputed.
    """
    mode = profile.position_mode
    hedge = mode is HEDGE
    isolated = profile.margin_mode is ISOLATED
    portfolio_margin = profile.margin_mode is PORTFOLIO_MARGIN
    near_factor = ONE - policy.medium_cap_proximity
    total_long = total_short = upl = total_mm = ZERO
    buys = 0
    complete = True
    near_cap = False
    min_liq: Decimal | None = None

    reusable: tuple[PositionExposure, ...] = ()
    if previous is not None and (previous.profile is profile or previous.profile == profile):
        reusable = previous.positions
    by_position: dict[int, PositionExposure] | None = None

    # Orders grouped by symbol once, so each symbol's effective value scans only its orders.
    orders_of: dict[str, list[Order]] = {}
    for o in orders:
        bucket = orders_of.get(o.symbol)
        if bucket is None:
            orders_of[o.symbol] = [o]
        else:
            bucket.append(o)
    effective_of: dict[str, Decimal] = {}

    out: list[PositionExposure] = []
    for p in positions:
        if not p.size or p.side is None:
            continue
        symbol = p.symbol
        mark = marks.get(symbol) or p.mark_price or p.entry_price

        effective = effective_of.get(symbol)
        if effective is None:
            symbol_orders = orders_of.get(symbol)
            if symbol_orders is None and not hedge and not p.position_idx:
                # One-way, no order: the rule reduces to the position's own value.
                effective = p.size * p.entry_price
            else:
                long_value, short_value = effective_sides(
                    symbol, positions, symbol_orders or (), mode
                )
                effective = long_value if long_value >= short_value else short_value
            effective_of[symbol] = effective
        # Portfolio margin has no per-contract risk limits (riskId 0), so no tier figures.
        table = None if portfolio_margin else tables.get(symbol)

        pe: PositionExposure | None = None
        if reusable:
            # Positions usually keep their order between events, so try the same slot first.
            k = len(out)
            pe = reusable[k] if k < len(reusable) else None
            if pe is None or pe.position is not p:
                if by_position is None:
                    by_position = {id(x.position): x for x in reusable}
                pe = by_position.get(id(p))
            if pe is not None and (
                pe.position is not p
                or pe.table is not table
                or pe.mark_price != mark
                or pe.effective_value != effective
            ):
                pe = None
        if pe is None:
            pe = _fresh_position(p, mark, effective, table, isolated)
        out.append(pe)

        notional = pe.notional
        if p.side is BUY:
            total_long += notional
            buys += 1
        else:
            total_short += notional
        upl += pe.unrealized_pnl
        mm = pe.maintenance_margin
        if mm is None:
            complete = False
            total_mm += p.position_mm or ZERO
        else:
            total_mm += mm
        distance = pe.liq_distance_pct
        if distance is not None and (min_liq is None or distance < min_liq):
            min_liq = distance
        tier = pe.tier
        if tier is not None and not near_cap:
            nearest = tier.risk_limit_value
            cap = pe.leverage_cap
            if cap is not None and cap < nearest:
                nearest = cap
            near_cap = effective >= near_factor * nearest

    margin: AccountMargin | None = None
    equity: Decimal | None = None
    if wallet is not None:
        moved = upl - wallet.total_perp_upl
        equity = wallet.total_equity + moved
        if profile.margin_mode is CROSS:
            balance = wallet.total_margin_balance + moved
            rate, liquidating = mm_rate_of(balance, total_mm)
            margin = AccountMargin(balance, total_mm, rate, liquidating, complete)
        elif portfolio_margin and wallet.account_mm_rate is not None:
            rate = wallet.account_mm_rate
            margin = AccountMargin(
                wallet.total_margin_balance,
                wallet.total_maintenance_margin,
                rate,
                rate >= ONE,
                True,
            )

    count = len(out)
    net = total_long - total_short
    level, drivers = _level(policy, margin, min_liq, net, equity, near_cap)
    return _account_exposure(
        profile=profile,
        total_long=total_long,
        total_short=total_short,
        net=net,
        gross=total_long + total_short,
        equity=equity,
        net_share=net / equity if equity is not None and equity > ZERO else None,
        unrealized_pnl=upl,
        margin=margin,
        buy_share=Decimal(buys) / count if count else None,
        position_count=count,
        positions=tuple(out),
        top_risks=tuple(sorted(out, key=_risk_score, reverse=True)[:3]),
        risk_level=level,
        risk_drivers=drivers,
    )


_px_accounts = slot_setter(PortfolioExposure, "accounts")
_px_total_long = slot_setter(PortfolioExposure, "total_long")
_px_total_short = slot_setter(PortfolioExposure, "total_short")
_px_net = slot_setter(PortfolioExposure, "net")
_px_gross = slot_setter(PortfolioExposure, "gross")
_px_equity = slot_setter(PortfolioExposure, "equity")
_px_net_share = slot_setter(PortfolioExposure, "net_share")
_px_unrealized_pnl = slot_setter(PortfolioExposure, "unrealized_pnl")
_px_worst_margin_ratio = slot_setter(PortfolioExposure, "worst_margin_ratio")
_px_any_in_liquidation = slot_setter(PortfolioExposure, "any_in_liquidation")
_px_buy_share = slot_setter(PortfolioExposure, "buy_share")
_px_position_count = slot_setter(PortfolioExposure, "position_count")
_px_top_risks = slot_setter(PortfolioExposure, "top_risks")
_px_risk_level = slot_setter(PortfolioExposure, "risk_level")
_px_risk_drivers = slot_setter(PortfolioExposure, "risk_drivers")


def _portfolio_exposure(
    *,
    accounts: tuple[AccountExposure, ...],
    total_long: Decimal,
    total_short: Decimal,
    net: Decimal,
    gross: Decimal,
    equity: Decimal | None,
    net_share: Decimal | None,
    unrealized_pnl: Decimal,
    worst_margin_ratio: Decimal | None,
    any_in_liquidation: bool,
    buy_share: Decimal | None,
    position_count: int,
    top_risks: tuple[PositionExposure, ...],
    risk_level: RiskLevel,
    risk_drivers: tuple[str, ...],
) -> PortfolioExposure:
    px: PortfolioExposure = _new(PortfolioExposure)
    _px_accounts(px, accounts)
    _px_total_long(px, total_long)
    _px_total_short(px, total_short)
    _px_net(px, net)
    _px_gross(px, gross)
    _px_equity(px, equity)
    _px_net_share(px, net_share)
    _px_unrealized_pnl(px, unrealized_pnl)
    _px_worst_margin_ratio(px, worst_margin_ratio)
    _px_any_in_liquidation(px, any_in_liquidation)
    _px_buy_share(px, buy_share)
    _px_position_count(px, position_count)
    _px_top_risks(px, top_risks)
    _px_risk_level(px, risk_level)
    _px_risk_drivers(px, risk_drivers)
    return px


def portfolio_exposure(
    accounts: Sequence[AccountExposure],
    policy: RiskLevelPolicy = DEFAULT_RISK_POLICY,
) -> PortfolioExposure:
    """Aggregate of account exposures.

    Sums long, short, net, gross, equity (of accounts with a known equity) and UPL; shares
    are recomputed on the sums; top 3 is taken across all accounts' positions. The level is
    the worst account's, raised by the portfolio's own net share under ``policy``.
    """
    total_long = total_short = upl = ZERO
    equity: Decimal | None = None
    worst_rate: Decimal | None = None
    liquidating = False
    buys = 0
    worst = _LOW
    drivers: list[str] = []
    everyone: list[PositionExposure] = []
    for a in accounts:
        total_long += a.total_long
        total_short += a.total_short
        upl += a.unrealized_pnl
        if a.equity is not None:
            equity = a.equity if equity is None else equity + a.equity
        m = a.margin
        if m is not None:
            rate = m.mm_rate
            if rate is not None and (worst_rate is None or rate > worst_rate):
                worst_rate = rate
            if m.in_liquidation:
                liquidating = True
        for pe in a.positions:
            everyone.append(pe)
            if pe.position.side is BUY:
                buys += 1
        if a.risk_level > worst:
            worst = a.risk_level
        if a.risk_drivers:
            drivers.extend(f"{a.profile.account}:{d}" for d in a.risk_drivers)

    net = total_long - total_short
    level = worst
    if equity is not None and equity > ZERO:
        size = abs(net)
        if size >= policy.high_net_share * equity:
            level = _HIGH
            drivers.append(_DRIVER_NET_SHARE)
        elif size >= policy.medium_net_share * equity:
            if level < _MEDIUM:
                level = _MEDIUM
            drivers.append(_DRIVER_NET_SHARE)
    count = len(everyone)
    return _portfolio_exposure(
        accounts=tuple(accounts),
        total_long=total_long,
        total_short=total_short,
        net=net,
        gross=total_long + total_short,
        equity=equity,
        net_share=net / equity if equity is not None and equity > ZERO else None,
        unrealized_pnl=upl,
        worst_margin_ratio=worst_rate,
        any_in_liquidation=liquidating,
        buy_share=Decimal(buys) / count if count else None,
        position_count=count,
        top_risks=tuple(sorted(everyone, key=_risk_score, reverse=True)[:3]),
        risk_level=level,
        risk_drivers=tuple(drivers),
    )
