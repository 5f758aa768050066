"""One evaluation of an account or of the portfolio: engine in, events and new state out.

Pure (no I/O, time passed in). The Faust agents call these once per account per batch and
publish what they return; everything here is testable without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from risk_processor import engine
from risk_processor.config import RiskConfig
from risk_processor.engine import (
    AccountProfile,
    AccountType,
    AlertCandidate,
    PositionMode,
    TierTable,
)
from risk_processor.engine import link as link_rule
from risk_processor.engine.hedging import hedge_options
from risk_processor.outputs import Cause, alert_event, wire_hedge_option
from risk_processor.state import (
    EMPTY_ORDERS,
    EMPTY_RISK,
    AccountSummary,
    OrderBook,
    PendingChange,
    Positions,
    RiskBook,
    TierEntry,
    WalletEntry,
)
from riskwatch_common.contracts import (
    ActionKind,
    HedgeOption,
    RiskAlertChanged,
    Side,
    SuggestedAction,
)

PORTFOLIO = engine.PORTFOLIO


@dataclass(frozen=True, slots=True)
class AccountState:
    account: str
    positions: Positions
    orders: OrderBook = EMPTY_ORDERS
    wallet: WalletEntry | None = None
    risk: RiskBook = EMPTY_RISK

    def symbols(self) -> set[str]:
        out = {e.position.symbol for e in self.positions.values()}
        out.update(e.order.symbol for e in self.orders.open.values())
        return out


@dataclass(frozen=True, slots=True)
class Evaluation:
    """An account's exposure, its new risk book and the alert transitions to publish.

    The snapshot event is built by the caller (``outputs.account_snapshot``) only when it
    is published: under load several evaluations share one snapshot.
    """

    exposure: engine.AccountExposure
    risk: RiskBook
    alerts: tuple[RiskAlertChanged, ...]
    risk_id_mismatches: int
    platform_changes: int


@dataclass(frozen=True, slots=True)
class PortfolioEvaluation:
    exposure: engine.PortfolioExposure
    risk: RiskBook
    alerts: tuple[RiskAlertChanged, ...]
    # The warm-up is still running: evaluate again later even if nothing changes.
    waiting: bool = False


def profile_of(state: AccountState, config: RiskConfig) -> AccountProfile:
    """Configured profile, with what the data tells us where the file says nothing."""
    setup = config.setup(state.account)
    account_type = setup.account_type
    if account_type is None:
        wallet_type = state.wallet.account_type if state.wallet is not None else "UNIFIED"
        account_type = AccountType.UNIFIED if wallet_type == "UNIFIED" else AccountType.STANDARD
    mode = setup.position_mode
    if mode is None:
        hedged = any(e.position.position_idx for e in state.positions.values())
        mode = PositionMode.HEDGE if hedged else PositionMode.ONE_WAY
    return AccountProfile(state.account, account_type, setup.margin_mode, mode, setup.group)


def _platform_candidates(
    state: AccountState,
    profile: AccountProfile,
    tiers: Mapping[str, TierEntry],
    marks: Mapping[str, Decimal],
    tables: dict[str, TierTable],
    now: datetime,
) -> tuple[dict[str, str], dict[str, PendingChange], list[AlertCandidate], int]:
    """Detect tier-table changes since this account last saw each table, and run Bybit's
    trial calculation for every position in those symbols and every pending grace period.

    Returns the table versions now seen, the grace periods still running, the candidates,
    and how many changes were detected. ``tables`` is updated in place so the exposure of
    a symbol in grace uses the old table, as Bybit does.
    """
    risk = state.risk
    seen = dict(risk.tiers_seen)
    pending = dict(risk.pending)
    candidates: list[AlertCandidate] = []
    detected = 0
    positions = [e.position for e in state.positions.values()]
    orders = [e.order for e in state.orders.open.values()]
    wallet = state.wallet.wallet if state.wallet is not None else None
    symbols = state.symbols()
    for symbol in sorted(symbols | set(pending)):
        entry = tiers.get(symbol)
        if entry is None:
            continue
        old: TierTable | None = None
        changed_at = entry.changed_at
        held = pending.get(symbol)
        if held is not None:
            old, changed_at = held.old, held.changed_at
        else:
            before = seen.get(symbol)
            if before is not None and before != entry.version:
                # Not found means it changed more often than we keep history: the oldest
                # version we still have is the best stand-in for what this account had.
                old = entry.history.get(before) or next(iter(entry.history.values()), None)
                detected += 1
        seen[symbol] = entry.version
        pending.pop(symbol, None)
        if old is None or symbol not in symbols:
            continue
        rows = [p for p in positions if p.symbol == symbol]
        if not rows:
            continue
        in_grace: PendingChange | None = None
        for p in rows:
            if held is not None and now >= held.deadline:
                break  # the grace period is over: the new parameters apply anyway
            try:
                impact = engine.evaluate_platform_change(
                    p,
                    old,
                    entry.table,
                    account_type=profile.account_type,
                    now=changed_at,
                    positions=positions,
                    orders=orders,
                    mode=profile.position_mode,
                    marks=marks,
                    wallet=wallet,
                    tables=tables,
                )
            except ValueError:
                # e.g. a unified account whose wallet has not arrived yet: no trial
                # calculation is possible, so the new table applies (Bybit's default).
                continue
            if impact.grace_deadline is not None and now < impact.grace_deadline:
                in_grace = PendingChange(old, entry.version, changed_at, impact.grace_deadline)
                found = engine.platform_change_alert(impact)
                if found is not None:
                    candidates.append(found)
            elif held is None:
                # Applied at once: tell the trader once; the alert resolves by absence.
                found = engine.platform_change_alert(impact)
                if found is not None:
                    candidates.append(found)
        if in_grace is not None:
            pending[symbol] = in_grace
            tables[symbol] = old
    return seen, pending, candidates, detected


def _tier_moves(
    account: str, held: Mapping[str, engine.Tier], exposure: engine.AccountExposure
) -> tuple[dict[str, engine.Tier], list[AlertCandidate]]:
    """``tier_moved_up`` against the tiers of the previous evaluation (kept in the risk
    book, so a move across a restart is still seen)."""
    now_held: dict[str, engine.Tier] = {}
    values: dict[str, Decimal] = {}
    for pe in exposure.positions:
        if pe.tier is not None:
            symbol = pe.position.symbol
            now_held[symbol] = pe.tier
            values[symbol] = values.get(symbol, Decimal(0)) + pe.position.value
    out: list[AlertCandidate] = []
    for symbol, tier in now_held.items():
        before = held.get(symbol)
        if before is not None:
            found = engine.tier_moved_up(account, symbol, before, tier, values[symbol])
            if found is not None:
                out.append(found)
    return now_held, out


_HEDGED = frozenset({engine.Severity.HIGH, engine.Severity.CRITICAL})
_RESOLVED = engine.Transition.RESOLVED
_OPENING = frozenset({"raised", "escalated"})


def needs_hedge_options(t: engine.AlertTransition) -> bool:
    """Options are computed only where a plan is written: raised/escalated HIGH and CRITICAL."""
    return t.severity in _HEDGED and t.kind.value in _OPENING


def wire_action(a: engine.Action) -> SuggestedAction:
    """The contract form of an engine-computed action."""
    return SuggestedAction(
        kind=ActionKind(a.kind),
        account=a.account,
        symbol=a.symbol,
        side=Side(a.side.value) if a.side is not None else None,
        qty=a.qty,
        amount_usd=a.amount_usd,
        leverage=a.leverage,
        order_id=a.order_id,
        deadline=a.deadline,
        alternatives=tuple(wire_action(alt) for alt in a.alternatives),
    )


def _action_amounts(a: engine.Action | None) -> tuple[Decimal | None, Decimal | None]:
    """(position value to cut, margin to add) of an action or its alternatives."""
    reduce_usd: Decimal | None = None
    margin_usd: Decimal | None = None
    for way in (a, *a.alternatives) if a is not None else ():
        if way.kind == engine.ActionKind.REDUCE_POSITION and reduce_usd is None:
            reduce_usd = way.amount_usd
        elif way.kind == engine.ActionKind.ADD_MARGIN and margin_usd is None:
            margin_usd = way.amount_usd
    return reduce_usd, margin_usd


def _publish(
    risk: RiskBook,
    transitions: Iterable[engine.AlertTransition],
    *,
    risk_level: engine.RiskLevel,
    now: datetime,
    cause: Cause,
    source: str,
    options: Callable[[engine.AlertTransition, engine.Action | None], tuple[HedgeOption, ...]]
    | None = None,
    action: Callable[[engine.AlertTransition], engine.Action | None] | None = None,
) -> tuple[dict[str, int], tuple[RiskAlertChanged, ...]]:
    """The transitions as events; every one but a resolve carries the computed action
    (computed here, per published transition, never per evaluation)."""
    seqs = dict(risk.seqs)
    out: list[RiskAlertChanged] = []
    for t in transitions:
        n = seqs.get(t.alert_id, 0) + 1
        seqs[t.alert_id] = n
        computed = action(t) if action is not None and t.kind is not _RESOLVED else None
        hedges = options(t, computed) if options is not None and needs_hedge_options(t) else ()
        event = alert_event(
            t,
            n=n,
            risk_level=risk_level,
            now=now,
            cause=cause,
            source=source,
            hedge_options=hedges,
        )
        if computed is not None:
            event = event.model_copy(update={"action": wire_action(computed)})
        out.append(event)
    return seqs, tuple(out)


def evaluate_account(
    state: AccountState,
    *,
    marks: Mapping[str, Decimal],
    tiers: Mapping[str, TierEntry],
    config: RiskConfig,
    now: datetime,
    cause: Cause,
    source: str,
    previous: engine.AccountExposure | None = None,
) -> Evaluation:
    """Exposure, rules, tier moves, platform changes and the alert lifecycle of one account.

    ``previous`` is this account's last exposure, when the caller kept it: the engine
    then reuses unchanged positions' figures (same result, less work).
    """
    profile = profile_of(state, config)
    tables = {s: tiers[s].table for s in state.symbols() if s in tiers}
    seen, pending, platform, detected = _platform_candidates(
        state, profile, tiers, marks, tables, now
    )
    exposure = engine.account_exposure(
        profile,
        [e.position for e in state.positions.values()],
        [e.order for e in state.orders.open.values()],
        state.wallet.wallet if state.wallet is not None else None,
        tables,
        marks,
        previous=previous,
    )
    account = state.account
    risk = state.risk
    orders = [e.order for e in state.orders.open.values()]
    wallet = state.wallet.wallet if state.wallet is not None else None

    def options(
        t: engine.AlertTransition, computed: engine.Action | None
    ) -> tuple[HedgeOption, ...]:
        if t.rule == engine.Rule.ACCOUNT_LINK:
            return ()  # a broken link is not fixed by trading
        # The plan's options trade and transfer what the computed action says, so the
        # figures the analyst ranks match the action on the alert.
        reduce_usd, margin_usd = _action_amounts(computed)
        found = hedge_options(
            exposure,
            orders,
            wallet,
            tables,
            marks,
            subject=t.subject,
            amount_usd=reduce_usd,
            margin_usd=margin_usd,
        )
        return tuple(wire_hedge_option(f) for f in found)

    thresholds = config.thresholds(account)
    deadlines = {symbol: p.deadline for symbol, p in pending.items()}

    def action(t: engine.AlertTransition) -> engine.Action | None:
        if t.rule == engine.Rule.ACCOUNT_LINK:
            return link_rule.link_action(account, risk.link)
        return engine.account_action(t, exposure, thresholds, orders, deadlines)

    candidates = engine.evaluate_account(
        exposure, thresholds, engine.active_keys(risk.alerts.values(), account)
    )
    held, moves = _tier_moves(account, risk.tiers_held, exposure)
    candidates.extend(moves)
    candidates.extend(platform)
    if risk.link is not None:
        found = link_rule.link_candidate(account, risk.link, now)
        if found is not None:
            candidates.append(found)
    states, transitions = engine.reconcile(
        account, risk.alerts, candidates, now, config.alert_policy
    )
    seqs, alerts = _publish(
        risk,
        transitions,
        risk_level=exposure.risk_level,
        now=now,
        cause=cause,
        source=source,
        options=options,
        action=action,
    )
    mismatches = sum(
        1
        for pe in exposure.positions
        if pe.tier is not None
        and pe.position.risk_id is not None
        and pe.position.risk_id != pe.tier.id
    )
    return Evaluation(
        exposure=exposure,
        risk=RiskBook(states, seqs, seen, held, pending, risk.outbox, link=risk.link),
        alerts=alerts,
        risk_id_mismatches=mismatches,
        platform_changes=detected,
    )


def portfolio_readiness(
    accounts: Mapping[str, AccountSummary],
    config: RiskConfig,
    now: datetime,
    started: datetime | None,
    resynced: Set[str] | None = None,
    known: Set[str] = frozenset(),
) -> engine.Readiness:
    """Whether the portfolio rules may run (``engine.portfolio_readiness``).

    Expected are the configured accounts plus ``known``, the accounts the shell has seen
    report a link status (``AccountStatusChanged``), so an unconfigured deployment still
    waits for every account that connected. Loaded means completed its first resync when
    the shell passes ``resynced`` (status ``resynced`` seen), else evaluated at least
    once. The warm-up runs from ``started``, the portfolio's first evaluation (kept in its
    risk book, so a restart does not start it again).
    """
    expected = config.portfolio_accounts | known
    if not expected:
        return engine.READY
    loaded = resynced if resynced is not None else accounts.keys()
    return engine.portfolio_readiness(expected, loaded, started, now, config.warmup_timeout)


def evaluate_portfolio(
    accounts: Mapping[str, AccountSummary],
    risk: RiskBook,
    *,
    config: RiskConfig,
    now: datetime,
    cause: Cause,
    source: str,
    resynced: Set[str] | None = None,
    known: Set[str] = frozenset(),
) -> PortfolioEvaluation:
    """The portfolio across every account's latest exposure, with portfolio-level rules.

    The rules wait for the warm-up (``portfolio_readiness``): before it ends the exposure
    is computed and no alert changes; after a timeout, alerts name the missing accounts.
    """
    exposure = engine.portfolio_exposure([accounts[name].exposure for name in sorted(accounts)])
    if risk.warmup_started is None:
        risk = replace(risk, warmup_started=now)
    ready = portfolio_readiness(accounts, config, now, risk.warmup_started, resynced, known)
    if not ready.ready:
        return PortfolioEvaluation(exposure=exposure, risk=risk, alerts=(), waiting=True)
    candidates = engine.evaluate_portfolio(
        exposure, config.portfolio, engine.active_keys(risk.alerts.values(), PORTFOLIO)
    )
    if ready.missing:
        note = ready.note()
        missing = Decimal(len(ready.missing))
        candidates = [
            replace(
                c,
                reason_template=c.reason + note,
                reason_args=(),
                numbers={**c.numbers, "accounts_missing": missing},
            )
            for c in candidates
        ]
    states, transitions = engine.reconcile(
        PORTFOLIO, risk.alerts, candidates, now, config.alert_policy
    )

    def action(t: engine.AlertTransition) -> engine.Action | None:
        return engine.portfolio_action(t, exposure, config.portfolio)

    seqs, alerts = _publish(
        risk,
        transitions,
        risk_level=exposure.risk_level,
        now=now,
        cause=cause,
        source=source,
        action=action,
    )
    return PortfolioEvaluation(
        exposure=exposure, risk=replace(risk, alerts=states, seqs=seqs), alerts=alerts
    )
