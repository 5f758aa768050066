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
from operator import attrgetter, is_
from typing import Any

from risk_processor.engine.effective import effective_sides
from risk_processor.engine.liquidation import isolated_liq_price
from risk_processor.engine.margin import AccountMargin
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
    draft_class,
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
    with the tier by that value. ``risk_score`` is notional × leverage (docs/product.md's "size ×
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


# What an ``AccountExposure`` keeps for the next evaluation of its account (``previous=``):
# inputs, held by identity, and values derived from them only. A later evaluation uses a
# part only after checking that the inputs it came from are the very same objects, so a
# result never depends on whether ``previous`` was passed. Fields:
#   0 hedge mode, 1 the position rows, 2 the orders, 3 effective value by symbol (of those
#   rows and orders in that mode), 4 the non-flat rows, 5 their ``PositionExposure``s,
#   6 for each, whether it is within the policy's cap proximity (``None``: not computed),
#   7 the policy, 8 its near-cap factor, 9 whether any position is near its cap, 10 the
#   buy count, 11 the position count, 12 the buy share, 13 the top risks, 14 the indexes
#   of the ``PositionExposure``s by rank (``None``: not known), 15 a cell where
#   ``rules.evaluate_account`` keeps what the evaluation of this exposure gave, 16 the
#   previous exposure's cell.
_Reuse = tuple[
    bool,
    tuple[Position, ...],
    tuple[Order, ...],
    dict[str, Decimal],
    tuple[Position, ...],
    tuple[PositionExposure, ...],
    tuple[bool | None, ...],
    RiskLevelPolicy,
    Decimal,
    bool,
    int,
    int,
    Decimal | None,
    tuple[PositionExposure, ...],
    tuple[int, ...] | None,
    list[Any],
    list[Any] | None,
]


@dataclass(slots=True, frozen=True)
class AccountExposure:
    """Exposure of one account at current marks.

    ``equity`` is the wallet's equity moved by the change in perp UPL since the wallet
    update; ``net_share`` is net / equity (signed; ``None`` without positive equity).
    ``margin`` is the recomputed cross margin (see ``margin.account_margin``), the wallet's
    own rate under portfolio margin, ``None`` under isolated margin or without a wallet.
    ``buy_share`` is the share of non-flat positions on the Buy side (direction bias).
    ``risk_drivers`` names the conditions that set ``risk_level``. ``_reuse`` is private
    bookkeeping for ``account_exposure(previous=...)``; it takes no part in equality.
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
    _reuse: _Reuse | None = field(default=None, repr=False, compare=False)

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


# sorted() key; attrgetter runs in C, a lambda or def would cost a Python call per item.
_risk_score = attrgetter("risk_score")


_DRIVER_LIQUIDATION = "in_liquidation"
_DRIVER_MM_RATE = "mm_rate"
_DRIVER_LIQ_DISTANCE = "liq_distance"
_DRIVER_NET_SHARE = "net_share"
_DRIVER_EQUITY = "no_equity"
_DRIVER_CAP = "cap_proximity"


# Risk-level drivers by bit, HIGH ones (the low five bits) before MEDIUM ones, each group
# in rule order; every combination's tuple is built once, here.
_DRIVER_BITS = (
    _DRIVER_LIQUIDATION,  # 1: HIGH
    _DRIVER_MM_RATE,  # 2: HIGH
    _DRIVER_LIQ_DISTANCE,  # 4: HIGH
    _DRIVER_EQUITY,  # 8: HIGH
    _DRIVER_NET_SHARE,  # 16: HIGH
    _DRIVER_MM_RATE,  # 32: MEDIUM
    _DRIVER_LIQ_DISTANCE,  # 64: MEDIUM
    _DRIVER_NET_SHARE,  # 128: MEDIUM
    _DRIVER_CAP,  # 256: MEDIUM
)
_HIGH_BITS = 31
_DRIVERS = tuple(
    tuple(name for i, name in enumerate(_DRIVER_BITS) if bits >> i & 1) for bits in range(512)
)


def _level(
    policy: RiskLevelPolicy,
    in_liquidation: bool,
    rate: Decimal | None,
    min_liq_distance: Decimal | None,
    net: Decimal,
    equity: Decimal | None,
    near_cap: bool,
) -> tuple[RiskLevel, tuple[str, ...]]:
    """Risk level and its drivers; ``in_liquidation`` and ``rate`` are the margin's (False
    and ``None`` without one). HIGH drivers come first, then MEDIUM ones, each in rule order."""
    bits = 1 if in_liquidation else 0
    if rate is not None:
        if rate >= policy.high_mm_rate:
            bits |= 2
        elif rate >= policy.medium_mm_rate:
            bits |= 32
    if min_liq_distance is not None:
        if min_liq_distance <= policy.high_liq_distance_pct:
            bits |= 4
        elif min_liq_distance <= policy.medium_liq_distance_pct:
            bits |= 64
    if equity is not None:
        if equity <= ZERO:
            if net:
                bits |= 8
        else:
            # |net| / equity >= share, without the division.
            size = abs(net)
            if size >= policy.high_net_share * equity:
                bits |= 16
            elif size >= policy.medium_net_share * equity:
                bits |= 128
    if near_cap:
        bits |= 256
    if bits & _HIGH_BITS:
        return _HIGH, _DRIVERS[bits]
    if bits:
        return _MEDIUM, _DRIVERS[bits]
    return _LOW, ()


# Hot-path builders: see ``draft_class``. Each field is written by name.
_PositionExposureDraft = draft_class(PositionExposure)
_AccountExposureDraft = draft_class(AccountExposure)
_AccountMarginDraft = draft_class(AccountMargin)
_PortfolioExposureDraft = draft_class(PortfolioExposure)


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
    d = _PositionExposureDraft()
    d.position = position
    d.mark_price = mark_price
    d.notional = notional
    d.unrealized_pnl = unrealized_pnl
    d.risk_score = risk_score
    d.effective_value = effective_value
    d.tier = tier
    d.leverage_cap = leverage_cap
    d.max_leverage_allowing = max_leverage_allowing
    d.maintenance_margin = maintenance_margin
    d.liq_price = liq_price
    d.liq_distance_pct = liq_distance_pct
    d.table = table
    d.__class__ = PositionExposure
    pe: PositionExposure = d
    return pe


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
    _reuse: _Reuse | None = None,
) -> AccountExposure:
    d = _AccountExposureDraft()
    d.profile = profile
    d.total_long = total_long
    d.total_short = total_short
    d.net = net
    d.gross = gross
    d.equity = equity
    d.net_share = net_share
    d.unrealized_pnl = unrealized_pnl
    d.margin = margin
    d.buy_share = buy_share
    d.position_count = position_count
    d.positions = positions
    d.top_risks = top_risks
    d.risk_level = risk_level
    d.risk_drivers = risk_drivers
    d._reuse = _reuse
    d.__class__ = AccountExposure
    ae: AccountExposure = d
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
    d = _PositionExposureDraft()
    d.position = p
    d.mark_price = mark
    d.notional = notional
    d.unrealized_pnl = pnl
    d.risk_score = notional * leverage if leverage else notional
    d.effective_value = effective
    d.tier = tier
    d.leverage_cap = cap
    d.max_leverage_allowing = max_lev
    d.maintenance_margin = mm
    d.liq_price = liq
    d.liq_distance_pct = distance
    d.table = table
    d.__class__ = PositionExposure
    pe: PositionExposure = d
    return pe


def _at_mark(
    old: PositionExposure, p: Position, mark: Decimal, effective: Decimal
) -> PositionExposure:
    """``_fresh_position`` for a position whose exposure ``old`` came from the same row,
    table, margin mode and an equal effective value: only the mark moved, so the tier
    figures and the liquidation price are ``old``'s and only mark-dependent ones change."""
    size = p.size
    entry = p.entry_price
    leverage = p.leverage
    notional = size * mark
    buy = p.side is BUY
    pnl = (mark - entry) * size if buy else (entry - mark) * size
    table = old.table
    mm = None
    if table is not None:
        tiers = table.tiers
        j = bisect_left(table.limits, notional)
        mm_tier = tiers[j] if j < len(tiers) else tiers[-1]
        mm = notional * mm_tier.mmr - mm_tier.mm_deduction
        if mm < ZERO:
            mm = ZERO
    liq = old.liq_price
    distance = None
    # (``old`` has a distance only when its liquidation price is positive.)
    if liq is not None and (old.liq_distance_pct is not None or liq > ZERO) and mark > ZERO:
        distance = ((mark - liq) if buy else (liq - mark)) / mark * HUNDRED
    d = _PositionExposureDraft()
    d.position = p
    d.mark_price = mark
    d.notional = notional
    d.unrealized_pnl = pnl
    d.risk_score = notional * leverage if leverage else notional
    d.effective_value = effective
    d.tier = old.tier
    d.leverage_cap = old.leverage_cap
    d.max_leverage_allowing = old.max_leverage_allowing
    d.maintenance_margin = mm
    d.liq_price = liq
    d.liq_distance_pct = distance
    d.table = table
    d.__class__ = PositionExposure
    pe: PositionExposure = d
    return pe


def _ranked(
    out: list[PositionExposure],
) -> tuple[tuple[PositionExposure, ...], tuple[int, ...] | None]:
    """Top three by risk score (ties in position order) and every index by rank."""
    ranked = sorted(out, key=_risk_score, reverse=True)
    where = {id(pe): k for k, pe in enumerate(out)}
    # (The same object twice, from duplicate rows, leaves the ranks unknown.)
    order = tuple([where[id(pe)] for pe in ranked]) if len(where) == len(out) else None
    return tuple(ranked[:3]), order


def _reranked(
    out: list[PositionExposure], order: tuple[int, ...], moved: int
) -> tuple[tuple[PositionExposure, ...], tuple[int, ...]]:
    """``_ranked`` when only ``out[moved]`` changed since ``order`` was ranked.

    A stable sort by descending score orders by (score descending, index ascending); the
    others keep their order among themselves, and ``moved`` goes before the first of them
    with a lower score, or an equal score and a higher index.
    """
    score = out[moved].risk_score
    rank = order.index(moved)
    if (
        rank == 0
        or (before := out[order[rank - 1]].risk_score) > score
        or (before == score and order[rank - 1] < moved)
    ) and (
        rank == len(order) - 1
        or (after := out[order[rank + 1]].risk_score) < score
        or (after == score and order[rank + 1] > moved)
    ):
        # Still between the same neighbours: the same ranks.
        top = order[:3]
        return (out[top[0]], out[top[1]], out[top[2]]) if len(top) == 3 else tuple(
            [out[i] for i in top]
        ), order
    rest = list(order)
    rest.remove(moved)
    at = 0
    for i in rest:
        other = out[i].risk_score
        if other < score or (i > moved and other <= score):
            break
        at += 1
    rest.insert(at, moved)
    return (out[rest[0]], out[rest[1]], out[rest[2]]) if len(rest) >= 3 else tuple(
        [out[i] for i in rest]
    ), tuple(rest)


def _orders_by_symbol(orders: tuple[Order, ...]) -> dict[str, list[Order]]:
    out: dict[str, list[Order]] = {}
    for o in orders:
        same = out.get(o.symbol)
        if same is None:
            out[o.symbol] = [o]
        else:
            same.append(o)
    return out


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
    recomputed, and when only the mark differs the tier figures are carried over and the
    mark-dependent ones recomputed. Effective values are carried over when the position
    rows and orders are the very same objects as last time. Account totals and the risk
    level are always recomputed. ``rules.evaluate_account`` also reuses what each unchanged
    position gave at the evaluation of ``previous`` (see there).
    """
    margin_mode = profile.margin_mode
    mode = profile.position_mode
    hedge = mode is HEDGE
    isolated = margin_mode is ISOLATED
    portfolio_margin = margin_mode is PORTFOLIO_MARGIN
    rows = tuple(positions)
    open_orders = tuple(orders)

    reusable: tuple[PositionExposure, ...] = ()
    memo: _Reuse | None = None
    if previous is not None and (
        (last_profile := previous.profile) is profile
        # ``last_profile == profile`` (the dataclass's), without building two tuples.
        or (
            last_profile.__class__ is profile.__class__
            and last_profile.account == profile.account
            and last_profile.account_type == profile.account_type
            and last_profile.margin_mode == profile.margin_mode
            and last_profile.position_mode == profile.position_mode
            and last_profile.group == profile.group
        )
    ):
        reusable = previous.positions
        memo = previous._reuse
        if memo is not None and memo[5] is not reusable:
            memo = None  # not this function's bookkeeping for these positions
    effective_of: dict[str, Decimal] | None = None
    near_memo: tuple[bool | None, ...] = ()
    same_policy = False
    if memo is not None:
        old_rows = memo[1]
        old_orders = memo[2]
        if (
            memo[0] is hedge
            and (old_rows is rows or (len(old_rows) == len(rows) and all(map(is_, old_rows, rows))))
            and (
                old_orders is open_orders
                or (len(old_orders) == len(open_orders) and all(map(is_, old_orders, open_orders)))
            )
        ):
            effective_of = memo[3]
        if memo[7] is policy:
            same_policy = True
            near_memo = memo[6]
            near_factor = memo[8]
    if not same_policy:
        near_factor = ONE - policy.medium_cap_proximity

    # Account totals, folded in position order.
    total_long = total_short = upl = total_mm = ZERO
    complete = True
    min_liq: Decimal | None = None
    out: list[PositionExposure] = []
    done = False
    # Where the fast path below replaced a previous PositionExposure (None: not known).
    remarked: list[int] | None = None
    if memo is not None and effective_of is not None and same_policy:
        remarked = []
        last_top = memo[13]
        last_order = memo[14]
        # The same rows, orders and policy as last time: the previous PositionExposures are
        # those of the non-flat rows, in order, with effective values that are still right.
        # While each symbol's table is the same object too, only marks can have moved, and a
        # mark moves nothing but mark-dependent figures (``_at_mark``): the tiers, and so
        # the cap proximities, the buy count and the effective values, are as before.
        for p, last in zip(memo[4], reusable):  # noqa: B905
            symbol = p.symbol
            if last.table is not (None if portfolio_margin else tables.get(symbol)):
                break  # a table changed: the general path below
            mark = marks.get(symbol) or p.mark_price or p.entry_price
            old = last.mark_price
            if old is mark or old == mark:
                pe = last
            else:
                pe = _at_mark(last, p, mark, effective_of[symbol])
                remarked.append(len(out))
            out.append(pe)
            # The same fold as the general path's, below.
            notional = pe.notional
            if p.side is BUY:
                total_long += notional
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
        else:
            done = True
            live_rows: tuple[Position, ...] = memo[4]
            near_cap = memo[9]
            near: tuple[bool | None, ...] | list[bool | None] = near_memo
            buys = memo[10]
    if not done:
        remarked = None
        total_long = total_short = upl = total_mm = ZERO
        complete = True
        min_liq = None
        out = []
        near = []
        near_cap = False
        buys = 0
        # The non-flat rows and, for each, the previous PositionExposure of the same row if
        # any, with its cap proximity when known.
        if effective_of is None:
            effective_of = {}
        live: list[Position] = []
        carried: list[PositionExposure | None] = []
        flags: list[bool | None] = []
        by_position: dict[int, PositionExposure] | None = None
        n_reusable = len(reusable)
        n_near = len(near_memo)
        for p in rows:
            if not p.size or p.side is None:
                continue
            found: PositionExposure | None = None
            flag: bool | None = None
            if reusable:
                # Positions usually keep their order between events: try the same slot first.
                k = len(live)
                found = reusable[k] if k < n_reusable else None
                if found is not None and found.position is p:
                    if k < n_near:
                        flag = near_memo[k]
                else:
                    if by_position is None:
                        by_position = {id(x.position): x for x in reusable}
                    found = by_position.get(id(p))
                    if found is not None and found.position is not p:
                        found = None
            live.append(p)
            carried.append(found)
            flags.append(flag)
        orders_of: dict[str, list[Order]] | None = None
        for p, found, flag in zip(live, carried, flags):  # noqa: B905
            symbol = p.symbol
            mark = marks.get(symbol) or p.mark_price or p.entry_price
            effective = effective_of.get(symbol)
            if effective is None:
                if orders_of is None:
                    orders_of = _orders_by_symbol(open_orders)
                symbol_orders = orders_of.get(symbol)
                if symbol_orders is None and not hedge and not p.position_idx:
                    # One-way, no order: the rule reduces to the position's own value.
                    effective = p.size * p.entry_price
                else:
                    long_value, short_value = effective_sides(
                        symbol, rows, symbol_orders or (), mode
                    )
                    effective = long_value if long_value >= short_value else short_value
                effective_of[symbol] = effective
            # Portfolio margin has no per-contract risk limits (riskId 0): no tier figures.
            table = None if portfolio_margin else tables.get(symbol)

            # A previous PositionExposure is carried over when computed from the same row
            # and table and an equal effective value and mark; with only the mark moved,
            # the tier figures are carried over and the rest recomputed.
            if (
                found is None
                or found.table is not table
                or ((value := found.effective_value) is not effective and value != effective)
            ):
                pe = _fresh_position(p, mark, effective, table, isolated)
                flag = None
            else:
                # (The cap proximity depends on the tier figures and effective value only.)
                old = found.mark_price
                pe = found if old is mark or old == mark else _at_mark(found, p, mark, effective)
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
            if not near_cap:
                tier = pe.tier
                if tier is not None:
                    if flag is None:
                        nearest = tier.risk_limit_value
                        cap = pe.leverage_cap
                        if cap is not None and cap < nearest:
                            nearest = cap
                        flag = pe.effective_value >= near_factor * nearest
                    near_cap = flag
            near.append(flag)
        live_rows = tuple(live)
    margin: AccountMargin | None = None
    equity: Decimal | None = None
    rate: Decimal | None = None
    liquidating = False
    if wallet is not None:
        moved = upl - wallet.total_perp_upl
        equity = wallet.total_equity + moved
        if margin_mode is CROSS:
            balance = wallet.total_margin_balance + moved
            # mm_rate_of, inlined.
            if balance <= ZERO:
                liquidating = True
            else:
                rate = total_mm / balance
                liquidating = rate >= ONE
            d = _AccountMarginDraft()
            d.margin_balance = balance
            d.total_maintenance_margin = total_mm
            d.mm_rate = rate
            d.in_liquidation = liquidating
            d.complete = complete
            d.__class__ = AccountMargin
            margin = d
        elif portfolio_margin and wallet.account_mm_rate is not None:
            rate = wallet.account_mm_rate
            liquidating = rate >= ONE
            margin = AccountMargin(
                wallet.total_margin_balance,
                wallet.total_maintenance_margin,
                rate,
                liquidating,
                True,
            )

    count = len(out)
    if not count:
        buy_share = None
    elif memo is not None and memo[10] == buys and memo[11] == count:
        buy_share = memo[12]
    else:
        buy_share = Decimal(buys) / count
    net = total_long - total_short
    level, drivers = _level(policy, liquidating, rate, min_liq, net, equity, near_cap)
    # Top risks: the three largest risk scores, ties in position order (a stable sort).
    order: tuple[int, ...] | None
    if remarked is None:
        positions_out = tuple(out)
        top = tuple(sorted(out, key=_risk_score, reverse=True)[:3])
        order = None  # ranked when a later evaluation needs it
    elif not remarked:
        # The very same PositionExposures, in the same order: the same top risks.
        positions_out = reusable
        top = last_top
        order = last_order
    else:
        positions_out = tuple(out)
        if last_order is not None and len(remarked) == 1:
            top, order = _reranked(out, last_order, remarked[0])
        else:
            top, order = _ranked(out)
    ae = _AccountExposureDraft()
    ae.profile = profile
    ae.total_long = total_long
    ae.total_short = total_short
    ae.net = net
    ae.gross = total_long + total_short
    ae.equity = equity
    ae.net_share = net / equity if equity is not None and equity > ZERO else None
    ae.unrealized_pnl = upl
    ae.margin = margin
    ae.buy_share = buy_share
    ae.position_count = count
    ae.positions = positions_out
    ae.top_risks = top
    ae.risk_level = level
    ae.risk_drivers = drivers
    ae._reuse = (
        hedge,
        rows,
        open_orders,
        effective_of,
        live_rows,
        positions_out,
        tuple(near),
        policy,
        near_factor,
        near_cap,
        buys,
        count,
        buy_share,
        top,
        order,
        [None],
        None if memo is None else memo[15],
    )
    ae.__class__ = AccountExposure
    result: AccountExposure = ae
    return result


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
    d = _PortfolioExposureDraft()
    d.accounts = accounts
    d.total_long = total_long
    d.total_short = total_short
    d.net = net
    d.gross = gross
    d.equity = equity
    d.net_share = net_share
    d.unrealized_pnl = unrealized_pnl
    d.worst_margin_ratio = worst_margin_ratio
    d.any_in_liquidation = any_in_liquidation
    d.buy_share = buy_share
    d.position_count = position_count
    d.top_risks = top_risks
    d.risk_level = risk_level
    d.risk_drivers = risk_drivers
    d.__class__ = PortfolioExposure
    px: PortfolioExposure = d
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
