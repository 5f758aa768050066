"""Alert rules: pure functions from exposure to alert candidates.

A rule returns a candidate while its condition holds and nothing otherwise; the alert
lifecycle (``alerts``) turns candidates into raised / escalated / resolved transitions.

Hysteresis, part 1 (part 2 is in ``alerts``): a rule whose alert is already active
(its ``(rule, subject)`` is in ``active``) keeps firing until the value is back past the
threshold by ``Thresholds.clear_margin`` of the threshold (5 % by default). With a 10 %
liquidation-distance warning, an active alert clears only above 10.5 %; a new one is
raised at 10 %.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any, Final

from risk_processor.engine.exposure import AccountExposure, PortfolioExposure, PositionExposure
from risk_processor.engine.margin import maintenance_margin
from risk_processor.engine.types import (
    HEDGE,
    HUNDRED,
    ONE,
    ZERO,
    Position,
    Severity,
    Tier,
    draft_class,
)

ACCOUNT_SUBJECT = "account"
PORTFOLIO = "portfolio"


class Rule:
    """Rule names, the ``rule`` of an alert.

    Plain strings rather than an enum: they are read for every rule on every event, and an
    enum member lookup costs about 0.1 µs on Python 3.11.
    """

    TIER_MOVED_UP: Final = "tier_moved_up"
    TIER_CAP_PROXIMITY: Final = "tier_cap_proximity"
    ORDER_BLOCKED: Final = "order_blocked_by_leverage"
    LIQUIDATION_DISTANCE: Final = "liquidation_distance"
    ACCOUNT_MM_RATE: Final = "account_mm_rate"
    NET_EXPOSURE_USD: Final = "net_exposure_usd"
    NET_EXPOSURE_SHARE: Final = "net_exposure_share"
    DIRECTION_BIAS: Final = "direction_bias"
    CORRELATION_RISK: Final = "correlation_risk"
    UNREALIZED_LOSS: Final = "unrealized_loss"
    BYBIT_REDUCE_ONLY: Final = "bybit_reduce_only"
    BYBIT_SYSTEM_ADJUSTMENT: Final = "bybit_system_adjustment"
    PLATFORM_RISK_CHANGE: Final = "platform_risk_change"
    ACCOUNT_LINK: Final = "account_link"


@dataclass(slots=True, frozen=True)
class AlertCandidate:
    """A rule's finding for one (account, rule, subject).

    ``value`` is the measured figure and ``threshold`` the limit it crossed, in the rule's
    own units (USD, fraction, percent for liquidation distance). ``numbers`` carries the
    figures a message or the AI commentary needs; ``reason`` the text.
    """

    account: str
    rule: str
    subject: str
    severity: Severity
    value: Decimal
    threshold: Decimal
    reason_template: str
    numbers: dict[str, Decimal] = field(default_factory=dict, hash=False)
    reason_args: tuple[object, ...] = ()

    @property
    def reason(self) -> str:
        """The reason text: ``reason_template.format(*reason_args)``, or the template as is.

        Formatting waits until the text is read because most evaluations only confirm an
        alert that is already open, whose state keeps the text of its last change.
        """
        args = self.reason_args
        return self.reason_template.format(*args) if args else self.reason_template


# What one position gave at an evaluation: the PositionExposure, whether its symbol's
# rules ran, the ``active`` keys consulted and the answers, and the candidates.
_PositionRules = tuple[
    PositionExposure,
    bool,
    tuple[tuple[str, str], ...],
    tuple[bool, ...],
    tuple[AlertCandidate, ...],
]


def _lowered(threshold: Decimal, margin: Decimal) -> Decimal:
    """Clear level of a rule that fires above ``threshold``."""
    return threshold - abs(threshold) * margin


def _raised(threshold: Decimal, margin: Decimal) -> Decimal:
    """Clear level of a rule that fires below ``threshold``."""
    return threshold + abs(threshold) * margin


@dataclass(slots=True, frozen=True)
class ClearLevels:
    """Where an active alert clears: each threshold moved by ``clear_margin`` (relative)
    toward the safe side. ``cap_floor`` is the clear level of ``1 − tier_cap_proximity``."""

    mm_rate_high: Decimal
    mm_rate_warning: Decimal
    net_exposure_usd: Decimal | None
    net_share_high: Decimal
    net_share_warning: Decimal
    buy_share_high: Decimal
    buy_share_low: Decimal
    same_side_share: Decimal
    unrealized_loss_usd: Decimal
    liq_distance_high_pct: Decimal
    liq_distance_warning_pct: Decimal
    cap_floor: Decimal
    cap_floor_high: Decimal


@dataclass(slots=True, frozen=True)
class Thresholds:
    """Rule thresholds; defaults are those of docs/product.md.

    Shares and rates are fractions; liquidation distances are percent; USD amounts are
    USD. ``min_positions_for_bias``: direction bias and correlation need at least this
    many positions (one position is always 100 % on one side). ``clear_margin``: relative
    hysteresis for clearing an active alert.

    ``net_exposure_usd`` is opt-in (``None``: off): one absolute limit for every account
    alerts for ever on any real account, so net exposure is judged relative to equity
    (``net_share_*``) unless an account, group or the portfolio sets a USD limit.
    ``tier_cap_proximity`` (WARNING) and ``tier_cap_proximity_high`` (HIGH) are the
    headroom left to the nearest cap; the warning also fires while the next order of the
    symbol's usual size (its open orders) would no longer fit under the leverage cap.
    """

    net_exposure_usd: Decimal | None = None
    unrealized_loss_usd: Decimal = Decimal(-1000)
    buy_share_high: Decimal = Decimal("0.70")
    buy_share_low: Decimal = Decimal("0.30")
    net_share_warning: Decimal = Decimal("0.20")
    net_share_high: Decimal = Decimal("0.50")
    same_side_share: Decimal = Decimal("0.60")
    tier_cap_proximity: Decimal = Decimal("0.20")
    tier_cap_proximity_high: Decimal = Decimal("0.05")
    liq_distance_warning_pct: Decimal = Decimal(10)
    liq_distance_high_pct: Decimal = Decimal(5)
    mm_rate_warning: Decimal = Decimal("0.50")
    mm_rate_high: Decimal = Decimal("0.80")
    min_positions_for_bias: int = 2
    clear_margin: Decimal = Decimal("0.05")
    # Derived once here rather than on every evaluation of an active alert.
    clear: ClearLevels = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = threshold_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        m = self.clear_margin
        object.__setattr__(
            self,
            "clear",
            ClearLevels(
                mm_rate_high=_lowered(self.mm_rate_high, m),
                mm_rate_warning=_lowered(self.mm_rate_warning, m),
                net_exposure_usd=None
                if self.net_exposure_usd is None
                else _lowered(self.net_exposure_usd, m),
                net_share_high=_lowered(self.net_share_high, m),
                net_share_warning=_lowered(self.net_share_warning, m),
                buy_share_high=_lowered(self.buy_share_high, m),
                buy_share_low=_raised(self.buy_share_low, m),
                same_side_share=_lowered(self.same_side_share, m),
                unrealized_loss_usd=_raised(self.unrealized_loss_usd, m),
                liq_distance_high_pct=_raised(self.liq_distance_high_pct, m),
                liq_distance_warning_pct=_raised(self.liq_distance_warning_pct, m),
                cap_floor=_lowered(ONE - self.tier_cap_proximity, m),
                cap_floor_high=_lowered(ONE - self.tier_cap_proximity_high, m),
            ),
        )


def threshold_problems(t: Thresholds) -> list[str]:
    """Every range or consistency problem of ``t``, each naming its field(s)."""
    problems: list[str] = []

    def check(ok: bool, name: str, rule: str) -> None:
        if not ok:
            problems.append(f"{name}={getattr(t, name)} {rule}")

    check(
        t.net_exposure_usd is None or t.net_exposure_usd > ZERO,
        "net_exposure_usd",
        "must be positive (or null: off)",
    )
    check(t.unrealized_loss_usd < ZERO, "unrealized_loss_usd", "must be negative (a loss)")
    for name in ("buy_share_high", "buy_share_low", "same_side_share"):
        check(ZERO < getattr(t, name) < ONE, name, "must be a fraction in (0, 1)")
    for name in ("net_share_warning", "net_share_high", "mm_rate_warning", "mm_rate_high"):
        check(getattr(t, name) > ZERO, name, "must be positive (a fraction: 0.5 is 50 %)")
    for name in ("mm_rate_warning", "mm_rate_high"):
        check(getattr(t, name) <= ONE, name, "must be at most 1 (100 % is liquidation)")
    for name in ("liq_distance_warning_pct", "liq_distance_high_pct"):
        check(getattr(t, name) > ZERO, name, "must be positive (percent)")
    for name in ("tier_cap_proximity", "tier_cap_proximity_high", "clear_margin"):
        check(ZERO <= getattr(t, name) < ONE, name, "must be in [0, 1)")
    check(t.min_positions_for_bias >= 1, "min_positions_for_bias", "must be at least 1")
    if not t.buy_share_low < t.buy_share_high:
        problems.append("buy_share_low must be below buy_share_high")
    if not t.net_share_warning <= t.net_share_high:
        problems.append("net_share_warning must not exceed net_share_high")
    if not t.liq_distance_high_pct <= t.liq_distance_warning_pct:
        problems.append("liq_distance_high_pct must not exceed liq_distance_warning_pct")
    if not t.mm_rate_warning <= t.mm_rate_high:
        problems.append("mm_rate_warning must not exceed mm_rate_high")
    if not t.tier_cap_proximity_high <= t.tier_cap_proximity:
        problems.append("tier_cap_proximity_high must not exceed tier_cap_proximity")
    return problems


DEFAULT_THRESHOLDS = Thresholds()

ThresholdOverrides = Mapping[str, object]


def resolve_thresholds(base: Thresholds, *overrides: ThresholdOverrides | None) -> Thresholds:
    """``base`` with each mapping of overrides applied in turn (later wins).

    Keys are ``Thresholds`` field names; values may be strings or numbers (``null`` turns
    an opt-in limit off). Raises ``ValueError`` naming every unknown key, value that is
    not a number and problem of the result, not only the first.
    """
    kinds = {
        f.name: int if f.name == "min_positions_for_bias" else Decimal
        for f in fields(Thresholds)
        if f.init
    }
    changes: dict[str, object] = {}
    errors: list[str] = []
    for mapping in overrides:
        for key, raw in (mapping or {}).items():
            try:
                _parse_threshold(kinds, changes, key, raw)
            except ValueError as exc:
                errors.append(str(exc))
    if errors:
        raise ValueError("; ".join(errors))
    return replace(base, **changes)  # type: ignore[arg-type]  # keys checked against fields


def _parse_threshold(
    kinds: Mapping[str, type], changes: dict[str, object], key: str, raw: object
) -> None:
    """Parse one override into ``changes``; ``ValueError`` names the key."""
    kind = kinds.get(key)
    if kind is None:
        raise ValueError(f"unknown threshold {key!r}")
    if raw is None and key in _OPTIONAL:
        changes[key] = None
        return
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise ValueError(f"threshold {key}={raw!r} is not a number")
    try:
        value = Decimal(str(raw))
    except ArithmeticError:
        raise ValueError(f"threshold {key}={raw!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"threshold {key}={raw!r} is not finite")
    if kind is int:
        if value != value.to_integral_value():
            raise ValueError(f"threshold {key}={raw!r} must be a whole number")
        changes[key] = int(value)
    else:
        changes[key] = value


_OPTIONAL = frozenset({"net_exposure_usd"})


def threshold_resolver(
    base: Thresholds,
    group_overrides: Mapping[str, ThresholdOverrides],
    account_overrides: Mapping[str, ThresholdOverrides],
) -> Callable[[str, str | None], Thresholds]:
    """A function ``(account, group) -> Thresholds``: base, then group, then account overrides.

    Every combination is validated on first use and memoised, so per-event calls are a dict
    lookup.
    """
    cache: dict[tuple[str, str | None], Thresholds] = {}

    def resolve(account: str, group: str | None) -> Thresholds:
        key = (account, group)
        found = cache.get(key)
        if found is None:
            found = resolve_thresholds(
                base,
                group_overrides.get(group) if group is not None else None,
                account_overrides.get(account),
            )
            cache[key] = found
        return found

    return resolve


def position_subject(position: Position) -> str:
    """Alert subject of a position: the symbol, with the side in hedge mode."""
    if position.position_idx == 0:
        return position.symbol
    return f"{position.symbol}:{'Buy' if position.position_idx == 1 else 'Sell'}"


def _usd(x: Decimal) -> str:
    return f"{x:,.2f}"


def _pct(fraction: Decimal) -> str:
    return f"{fraction * HUNDRED:.1f}%"


_EMPTY: frozenset[tuple[str, str]] = frozenset()
# Enum member lookup costs about 0.1 µs on Python 3.11; these are read on every event.
_INFO = Severity.INFO
_WARNING = Severity.WARNING
_HIGH = Severity.HIGH
_CRITICAL = Severity.CRITICAL

_AlertCandidateDraft = draft_class(AlertCandidate)


def _new_candidate(
    account: str,
    rule: str,
    subject: str,
    severity: Severity,
    value: Decimal,
    threshold: Decimal,
    reason: str,
    args: tuple[object, ...],
    numbers: dict[str, Decimal],
) -> AlertCandidate:
    """``AlertCandidate(...)`` minus the frozen ``__init__``'s per-field cost (``draft_class``)."""
    c = _AlertCandidateDraft()
    c.account = account
    c.rule = rule
    c.subject = subject
    c.severity = severity
    c.value = value
    c.threshold = threshold
    c.reason_template = reason
    c.numbers = numbers
    c.reason_args = args
    c.__class__ = AlertCandidate
    built: AlertCandidate = c
    return built


def _candidate(
    account: str,
    rule: str,
    subject: str,
    severity: Severity,
    *,
    value: Decimal,
    threshold: Decimal,
    reason: str,
    args: tuple[object, ...] = (),
    numbers: dict[str, Decimal],
) -> AlertCandidate:
    """``_new_candidate`` by keyword, where readability beats the cost of the keywords."""
    return _new_candidate(account, rule, subject, severity, value, threshold, reason, args, numbers)


def _mm_rate_rule(
    account: str, e: AccountExposure, t: Thresholds, active: Set[tuple[str, str]]
) -> AlertCandidate | None:
    m = e.margin
    if m is None:
        return None
    rate = m.mm_rate
    if rate is None:
        return _candidate(
            account,
            Rule.ACCOUNT_MM_RATE,
            ACCOUNT_SUBJECT,
            _CRITICAL,
            value=m.margin_balance,
            threshold=ZERO,
            reason="margin balance {0:,.2f} USD is not positive: liquidation",
            args=(m.margin_balance,),
            numbers={
                "margin_balance": m.margin_balance,
                "total_maintenance_margin": m.total_maintenance_margin,
            },
        )
    if m.in_liquidation:
        severity, limit = _CRITICAL, ONE
    else:
        held = _MM_RATE_KEY in active
        high, warning = t.mm_rate_high, t.mm_rate_warning
        if held:
            high, warning = t.clear.mm_rate_high, t.clear.mm_rate_warning
        if rate >= high:
            severity, limit = _HIGH, t.mm_rate_high
        elif rate >= warning:
            severity, limit = _WARNING, t.mm_rate_warning
        else:
            return None
    return _candidate(
        account,
        Rule.ACCOUNT_MM_RATE,
        ACCOUNT_SUBJECT,
        severity,
        value=rate,
        threshold=limit,
        reason="account MM rate {0:.1%} (limit {1:.1%}; liquidation at 100%)",
        args=(rate, limit),
        numbers={
            "account_mm_rate": rate,
            "margin_balance": m.margin_balance,
            "total_maintenance_margin": m.total_maintenance_margin,
        },
    )


def _subject_keys(subject: str) -> tuple[tuple[str, str], ...]:
    """``active`` keys of the rules in ``_exposure_rules``, in their order, for ``subject``."""
    return (
        (Rule.NET_EXPOSURE_USD, subject),
        (Rule.NET_EXPOSURE_SHARE, subject),
        (Rule.DIRECTION_BIAS, subject),
        (Rule.CORRELATION_RISK, subject),
        (Rule.UNREALIZED_LOSS, subject),
    )


_SUBJECT_KEYS = {s: _subject_keys(s) for s in (ACCOUNT_SUBJECT, PORTFOLIO)}
_MM_RATE_KEY = (Rule.ACCOUNT_MM_RATE, ACCOUNT_SUBJECT)


# What the direction-bias and correlation rules gave: the buy share (object) and position
# count they saw, the ``active`` keys consulted and the answers, and the candidates.
_BiasRules = tuple[
    Decimal, int, tuple[tuple[str, str], ...], tuple[bool, ...], tuple[AlertCandidate, ...]
]


def _exposure_rules(
    out: list[AlertCandidate],
    account: str,
    subject: str,
    net: Decimal,
    net_share: Decimal | None,
    buy_share: Decimal | None,
    count: int,
    upl: Decimal,
    t: Thresholds,
    active: Set[tuple[str, str]],
    bias_before: _BiasRules | None = None,
) -> _BiasRules | None:
    """Rules shared by an account and the portfolio; appends to ``out``.

    Each rule first checks its value against both its raise and its clear level: only when
    one of them is crossed does it matter whether its alert is active.

    ``bias_before`` is what the direction-bias and correlation rules gave at an earlier
    call with the same account, subject and thresholds; it is reused when it saw the very
    same buy share object, the same count and the same answers from ``active``. Returns
    what those rules gave this time (``None`` when they did not apply).
    """
    keys = _SUBJECT_KEYS.get(subject) or _subject_keys(subject)
    clear = t.clear
    size = abs(net)

    limit = t.net_exposure_usd
    clear_limit = clear.net_exposure_usd
    if limit is not None and clear_limit is not None and (size > limit or size > clear_limit):
        if active and keys[0] in active:
            limit = clear_limit
        if size > limit:
            # _new_candidate, inlined: this one and the next confirm an open alert on most
            # evaluations of an account that has one.
            c = _AlertCandidateDraft()
            c.account = account
            c.rule = Rule.NET_EXPOSURE_USD
            c.subject = subject
            c.severity = _WARNING
            c.value = size
            c.threshold = limit = t.net_exposure_usd
            c.reason_template = "net exposure {0:,.2f} USD is above {1:,.2f} USD"
            c.numbers = {"net": net}
            c.reason_args = (net, limit)
            c.__class__ = AlertCandidate
            out.append(c)

    if net_share is not None:
        share = abs(net_share)
        warning = t.net_share_warning
        if share > warning or share > clear.net_share_warning:
            high = t.net_share_high
            if active and keys[1] in active:
                high, warning = clear.net_share_high, clear.net_share_warning
            if share > warning:
                severity, crossed = (
                    (_HIGH, t.net_share_high) if share > high else (_WARNING, t.net_share_warning)
                )
                c = _AlertCandidateDraft()
                c.account = account
                c.rule = Rule.NET_EXPOSURE_SHARE
                c.subject = subject
                c.severity = severity
                c.value = share
                c.threshold = crossed
                c.reason_template = "net exposure is {0:.1%} of equity (limit {1:.1%})"
                c.numbers = {"net": net, "net_share": net_share}
                c.reason_args = (share, crossed)
                c.__class__ = AlertCandidate
                out.append(c)

    bias: _BiasRules | None = None
    if buy_share is not None and count >= t.min_positions_for_bias:
        if (
            bias_before is not None
            and bias_before[0] is buy_share
            and bias_before[1] == count
            and (
                not (keys_before := bias_before[2])
                or (
                    (keys_before[0] in active) is bias_before[3][0]
                    and (len(keys_before) == 1 or (keys_before[1] in active) is bias_before[3][1])
                )
            )
        ):
            bias = bias_before
            out.extend(bias[4])
        else:
            bias = _bias_rules(out, account, subject, buy_share, count, t, active, keys)

    limit = t.unrealized_loss_usd
    if upl < limit or upl < clear.unrealized_loss_usd:
        if active and keys[4] in active:
            limit = clear.unrealized_loss_usd
        if upl < limit:
            out.append(
                _new_candidate(
                    account,
                    Rule.UNREALIZED_LOSS,
                    subject,
                    _WARNING,
                    upl,
                    t.unrealized_loss_usd,
                    "unrealized PnL {0:,.2f} USD is below {1:,.2f} USD",
                    (upl, t.unrealized_loss_usd),
                    {"unrealized_pnl": upl},
                )
            )
    return bias


def _bias_rules(
    out: list[AlertCandidate],
    account: str,
    subject: str,
    buy_share: Decimal,
    count: int,
    t: Thresholds,
    active: Set[tuple[str, str]],
    keys: tuple[tuple[str, str], ...],
) -> _BiasRules:
    """Direction bias and correlation; appends to ``out`` and returns what they gave."""
    start = len(out)
    consulted: tuple[tuple[str, str], ...] = ()
    answers: tuple[bool, ...] = ()
    clear = t.clear
    high, low = t.buy_share_high, t.buy_share_low
    if (
        buy_share > high
        or buy_share < low
        or buy_share > clear.buy_share_high
        or buy_share < clear.buy_share_low
    ):
        held = keys[2] in active
        consulted, answers = (keys[2],), (held,)
        if held:
            high, low = clear.buy_share_high, clear.buy_share_low
        if buy_share > high or buy_share < low:
            out.append(
                _new_candidate(
                    account,
                    Rule.DIRECTION_BIAS,
                    subject,
                    _WARNING,
                    buy_share,
                    t.buy_share_high if buy_share > high else t.buy_share_low,
                    "{0:.1%} of {1} positions are on the buy side (outside {2:.1%}–{3:.1%})",
                    (buy_share, count, t.buy_share_low, t.buy_share_high),
                    {"buy_share": buy_share, "positions": Decimal(count)},
                )
            )

    sell_share = ONE - buy_share
    same = buy_share if buy_share >= sell_share else sell_share
    limit = t.same_side_share
    if same > limit or same > clear.same_side_share:
        held = keys[3] in active
        consulted, answers = (*consulted, keys[3]), (*answers, held)
        if held:
            limit = clear.same_side_share
        if same > limit:
            side = "buy" if buy_share >= sell_share else "sell"
            out.append(
                _new_candidate(
                    account,
                    Rule.CORRELATION_RISK,
                    subject,
                    _INFO,
                    same,
                    t.same_side_share,
                    "{0:.1%} of {1} positions are on the {2} side: they move together"
                    " in a market-wide move",
                    (same, count, side),
                    {"same_side_share": same, "positions": Decimal(count)},
                )
            )
    return buy_share, count, consulted, answers, tuple(out[start:])


def _liquidation_rule(
    out: list[AlertCandidate],
    account: str,
    subject: str,
    pe: PositionExposure,
    distance: Decimal,
    t: Thresholds,
    held: bool,
) -> None:
    """``held``: the alert of (liquidation distance, ``subject``) is active."""
    high, warning = t.liq_distance_high_pct, t.liq_distance_warning_pct
    if held:
        high, warning = t.clear.liq_distance_high_pct, t.clear.liq_distance_warning_pct
    if distance > warning:
        return
    if distance <= ZERO:
        severity, limit = _CRITICAL, ZERO
    elif distance <= high:
        severity, limit = _HIGH, t.liq_distance_high_pct
    else:
        severity, limit = _WARNING, t.liq_distance_warning_pct
    liq = pe.liq_price if pe.liq_price is not None else ZERO
    out.append(
        _candidate(
            account,
            Rule.LIQUIDATION_DISTANCE,
            subject,
            severity,
            value=distance,
            threshold=limit,
            reason="{0} is {1:.2f}% from liquidation (mark {2}, liquidation {3})",
            args=(subject, distance, pe.mark_price, liq),
            numbers={
                "liq_distance_pct": distance,
                "mark_price": pe.mark_price,
                "liq_price": liq,
                "size": pe.position.size,
            },
        )
    )


def _bybit_flag_rules(out: list[AlertCandidate], account: str, subject: str, p: Position) -> None:
    if p.is_reduce_only:
        out.append(
            _candidate(
                account,
                Rule.BYBIT_REDUCE_ONLY,
                subject,
                _HIGH,
                value=ONE,
                threshold=ONE,
                reason=f"Bybit set {subject} to reduce-only after lowering its risk limit:"
                " reduce size, lower leverage or add margin, then confirm the new MMR",
                numbers={"size": p.size},
            )
        )
    if p.mmr_sys_updated_at is not None or p.leverage_sys_updated_at is not None:
        parts = []
        if p.mmr_sys_updated_at is not None:
            parts.append(f"MMR at {p.mmr_sys_updated_at.isoformat()}")
        if p.leverage_sys_updated_at is not None:
            parts.append(f"leverage at {p.leverage_sys_updated_at.isoformat()}")
        out.append(
            _candidate(
                account,
                Rule.BYBIT_SYSTEM_ADJUSTMENT,
                subject,
                _WARNING,
                value=ONE,
                threshold=ONE,
                reason=f"Bybit will adjust {subject}: {', '.join(parts)}",
                numbers={},
            )
        )


def _tier_numbers(pe: PositionExposure, tier: Tier) -> dict[str, Decimal]:
    numbers = {
        "effective_value": pe.effective_value,
        "tier_limit": tier.risk_limit_value,
        "tier_mmr": tier.mmr,
        "tier_max_leverage": tier.max_leverage,
    }
    if pe.leverage_cap is not None:
        numbers["leverage_cap"] = pe.leverage_cap
    if pe.position.leverage is not None:
        numbers["leverage"] = pe.position.leverage
    if pe.max_leverage_allowing is not None:
        numbers["max_leverage_allowing"] = pe.max_leverage_allowing
    return numbers


def next_order_value(pe: PositionExposure) -> Decimal:
    """The symbol's usual order size: what its open orders add to the position (the
    effective value above the position's own value); 0 without open orders.

    0 in hedge mode too: the effective value is the larger side's, so above one side's
    value it may be the other side's position rather than orders (the 80 % / 95 % levels
    still apply there).
    """
    if pe.position.position_idx:
        return ZERO
    pending = pe.effective_value - pe.position.value
    return pending if pending > ZERO else ZERO


def lifting_leverage(pe: PositionExposure) -> Decimal | None:
    """The highest leverage whose cap fits the next order of the usual size (or, without
    open orders, the next tier above the current cap); ``None`` when no tier allows more."""
    table, cap = pe.table, pe.leverage_cap
    if table is None or cap is None:
        return None
    wanted = pe.effective_value + next_order_value(pe)
    i = table.index_for_value(wanted) if wanted > cap else table.index_for_value(cap) + 1
    if i >= len(table.tiers):
        return None
    return table.max_leverage_from(i)


def _symbol_rules(
    out: list[AlertCandidate],
    account: str,
    pe: PositionExposure,
    tier: Tier,
    t: Thresholds,
    held: bool,
) -> None:
    """Tier-cap proximity and blocked orders: figures of the symbol, both hedge sides.

    ``held``: the alert of (tier cap proximity, the symbol) is active.
    """
    symbol = pe.position.symbol
    leverage = pe.position.leverage
    effective = pe.effective_value
    tier_limit = tier.risk_limit_value
    cap = pe.leverage_cap
    # At equal caps the leverage one is what bites: above it orders are rejected outright.
    leverage_bound = cap is not None and cap <= tier_limit
    nearest = cap if cap is not None and leverage_bound else tier_limit

    floor, floor_high, room = ONE - t.tier_cap_proximity, ONE - t.tier_cap_proximity_high, ONE
    if held:
        floor, floor_high, room = t.clear.cap_floor, t.clear.cap_floor_high, ONE - t.clear_margin
    # Before, not after: warn while the next order of the usual size (what the open
    # orders add) still fits, i.e. as soon as one more such order would not.
    next_order = next_order_value(pe)
    next_blocked = leverage_bound and next_order > ZERO and effective + next_order > room * nearest
    if effective >= floor * nearest or next_blocked:
        utilization = effective / nearest
        severity = _HIGH if effective >= floor_high * nearest else _WARNING
        lifting = lifting_leverage(pe) if leverage_bound else None
        if leverage_bound:
            reason = (
                "{0} positions plus orders {1:,.0f} USD are {2:.1%} of the {3:,.0f} USD cap"
                " of {4}x leverage (orders above it are rejected)"
            )
            args: tuple[object, ...] = (symbol, effective, utilization, cap, leverage)
            if next_blocked:
                reason += "; the next {5:,.0f} USD order would be rejected"
                args = (*args, next_order)
            if lifting is not None:
                reason += "; " + ("{6}" if next_blocked else "{5}") + "x or less lifts the cap"
                args = (*args, lifting)
        else:
            reason = (
                "{0} effective value {1:,.2f} is {2:.1%} of the {3:,} limit of tier {4}"
                " (above it the next tier's higher margin applies)"
            )
            args = (symbol, effective, utilization, tier_limit, tier.id)
        numbers = _tier_numbers(pe, tier)
        numbers["cap_utilization"] = utilization
        if next_order > ZERO:
            numbers["next_order_value"] = next_order
        if lifting is not None:
            numbers["lifting_leverage"] = lifting
        out.append(
            _candidate(
                account,
                Rule.TIER_CAP_PROXIMITY,
                symbol,
                severity,
                value=utilization,
                threshold=ONE - t.tier_cap_proximity_high
                if severity is _HIGH
                else ONE - t.tier_cap_proximity,
                reason=reason,
                args=args,
                numbers=numbers,
            )
        )

    # A leverage above every tier's maximum allows nothing at all (cap 0).
    if (cap is None and leverage) or (cap is not None and effective > cap):
        limit = cap if cap is not None else ZERO
        if pe.max_leverage_allowing is not None:
            remedy = "lower leverage to {4}x or less"
        else:
            remedy = "no leverage allows it: cancel orders or reduce size"
        out.append(
            _candidate(
                account,
                Rule.ORDER_BLOCKED,
                symbol,
                _HIGH,
                value=effective,
                threshold=limit,
                reason="{0} positions plus open orders ({1:,.2f}) exceed the {2:,.2f} that"
                " {3}x allows: Bybit rejects orders that add to it; " + remedy,
                args=(symbol, effective, limit, leverage, pe.max_leverage_allowing),
                numbers=_tier_numbers(pe, tier),
            )
        )


def evaluate_account(
    exposure: AccountExposure,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    active: Set[tuple[str, str]] = _EMPTY,
) -> list[AlertCandidate]:
    """Every rule over one account; ``active`` holds the (rule, subject) of active alerts.

    Account rules (subject ``"account"``): account MM rate (>= warning WARNING, >= high
    HIGH, in liquidation CRITICAL); |net| > USD limit (WARNING); |net| / equity > warning
    (WARNING) / high (HIGH); buy share > high or < low (WARNING); same-side share > limit
    (INFO); UPL < loss limit (WARNING). Position rules (subject ``position_subject``):
    liquidation distance <= warning (WARNING) / <= high (HIGH) / <= 0 (CRITICAL); Bybit
    reduce-only (HIGH) and scheduled system adjustments (WARNING). Symbol rules (subject
    the symbol): effective value >= (1 − proximity) × the nearest cap (WARNING); effective
    value above the leverage cap, so orders adding to it are rejected (HIGH).

    When ``exposure`` came from ``account_exposure(previous=...)`` and ``previous`` was
    evaluated with the same thresholds object, what an unchanged position (the very same
    ``PositionExposure``) and the direction-bias rules gave then is reused whenever the
    ``active`` keys they consulted answer the same; the candidates are the same either way.
    """
    account = exposure.profile.account
    out: list[AlertCandidate] = []
    m = exposure.margin
    if m is not None:
        rate = m.mm_rate
        # The rule fires only from the lower of its warning and clear levels up.
        if (
            rate is None
            or m.in_liquidation
            or rate >= thresholds.mm_rate_warning
            or rate >= thresholds.clear.mm_rate_warning
        ):
            mm = _mm_rate_rule(account, exposure, thresholds, active)
            if mm is not None:
                out.append(mm)
    # What this account's previous evaluation gave, when it used the same thresholds: see
    # ``_exposure_rules`` and the position loop below for when a part of it is reused.
    before: tuple[_PositionRules | None, ...] = ()
    bias_before: _BiasRules | None = None
    memo = exposure._reuse
    cell: list[Any] | None = None
    if memo is not None:
        cell = memo[15]
        previous = memo[16]
        if previous is not None:
            last = previous[0]
            if last is not None and last[0] is thresholds and last[1] == account:
                before = last[2]
                bias_before = last[3]
    bias = _exposure_rules(
        out,
        account,
        ACCOUNT_SUBJECT,
        exposure.net,
        exposure.net_share,
        exposure.buy_share,
        exposure.position_count,
        exposure.unrealized_pnl,
        thresholds,
        active,
        bias_before,
    )
    # Position and symbol rules, position by position. Cheap guards first: a rule's own
    # function runs only when its condition may hold. The guards use the relaxed (clear)
    # levels, which are never stricter than the raise levels.
    #
    # What a position gave at the previous evaluation of this account is reused when its
    # inputs are the same: the very same PositionExposure (so the same figures), the same
    # thresholds object and account, whether its symbol's rules ran (hedge sides share
    # them), and the same answer for each ``active`` key that was consulted.
    liq_guard = thresholds.clear.liq_distance_warning_pct
    cap_guard = thresholds.clear.cap_floor
    room_guard = ONE - thresholds.clear_margin
    hedge = exposure.profile.position_mode is HEDGE
    symbols_done: set[str] = set()
    positions = exposure.positions
    if len(before) != len(positions):
        before = (*before, *(None,) * len(positions))[: len(positions)]
    done: list[_PositionRules] = []
    # (zip without strict=: the lengths are equal, and the keyword costs a parse per call.)
    for pe, entry in zip(positions, before):  # noqa: B905
        if hedge:
            p = pe.position
            tier = pe.tier
            symbol_rules = tier is not None
            if symbol_rules:
                # Both hedge sides share the symbol's figures; evaluate them once.
                if p.symbol in symbols_done:
                    symbol_rules = False
                else:
                    symbols_done.add(p.symbol)
        if (
            entry is not None
            and entry[0] is pe
            # (Outside hedge mode, the same PositionExposure means the same symbol_rules.)
            and (not hedge or entry[1] is symbol_rules)
            and (
                not (keys := entry[2])
                or (
                    (keys[0] in active) is entry[3][0]
                    and (len(keys) == 1 or (keys[1] in active) is entry[3][1])
                )
            )
        ):
            found = entry[4]
            if found:
                out.extend(found)
            done.append(entry)
            continue
        if not hedge:
            p = pe.position
            tier = pe.tier
            symbol_rules = tier is not None
        start = len(out)
        consulted: tuple[tuple[str, str], ...] = ()
        answers: tuple[bool, ...] = ()
        distance = pe.liq_distance_pct
        near_liquidation = distance is not None and distance <= liq_guard
        flagged = (
            p.is_reduce_only
            or p.mmr_sys_updated_at is not None
            or p.leverage_sys_updated_at is not None
        )
        if near_liquidation or flagged:
            subject = position_subject(p)
            if distance is not None and near_liquidation:
                key = (Rule.LIQUIDATION_DISTANCE, subject)
                held = key in active
                consulted, answers = (key,), (held,)
                _liquidation_rule(out, account, subject, pe, distance, thresholds, held)
            if flagged:
                _bybit_flag_rules(out, account, subject, p)
        if tier is not None and symbol_rules:
            nearest = tier.risk_limit_value
            cap = pe.leverage_cap
            if cap is not None and cap < nearest:
                nearest = cap
            # effective > cap implies effective > cap_guard × nearest, so this also covers
            # blocked orders; a leverage above every tier's maximum has no cap at all.
            # (and the warning before the next usual-size order would be rejected: the
            # open orders add effective - value; see _symbol_rules)
            eff = pe.effective_value
            if (
                eff >= cap_guard * nearest
                or (cap is None and p.leverage)
                or (cap is not None and eff + eff - p.value > room_guard * cap)
            ):
                key = (Rule.TIER_CAP_PROXIMITY, p.symbol)
                held = key in active
                consulted, answers = (*consulted, key), (*answers, held)
                _symbol_rules(out, account, pe, tier, thresholds, held)
        done.append(
            (pe, symbol_rules, consulted, answers, tuple(out[start:]) if len(out) > start else ())
        )
    if cell is not None:
        # For the evaluation of the next exposure computed with ``previous=exposure``.
        cell[0] = (thresholds, account, tuple(done), bias)
    return out


def evaluate_portfolio(
    portfolio: PortfolioExposure,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    active: Set[tuple[str, str]] = _EMPTY,
) -> list[AlertCandidate]:
    """Net exposure (USD and share), direction bias, correlation and UPL over all accounts.

    Candidates carry account and subject ``"portfolio"``.
    """
    out: list[AlertCandidate] = []
    _exposure_rules(
        out,
        PORTFOLIO,
        PORTFOLIO,
        portfolio.net,
        portfolio.net_share,
        portfolio.buy_share,
        portfolio.position_count,
        portfolio.unrealized_pnl,
        thresholds,
        active,
    )
    return out


def tier_moved_up(
    account: str,
    symbol: str,
    old_tier: Tier,
    new_tier: Tier,
    position_value: Decimal,
) -> AlertCandidate | None:
    """A candidate when ``new_tier`` is above ``old_tier``, with what the move costs.

    ``extra_maintenance_margin`` = MM(new) − MM(old) and ``extra_initial_margin`` =
    value × (IMR(new) − IMR(old)) at ``position_value``, floored at 0: under the deduction
    formula a value below the new tier's lower boundary (the move came from open orders)
    costs no extra MM. The subject names the new tier, so each move is its own alert.
    """
    if new_tier is old_tier or new_tier.risk_limit_value <= old_tier.risk_limit_value:
        return None
    extra_mm = maintenance_margin(position_value, new_tier) - maintenance_margin(
        position_value, old_tier
    )
    extra_im = position_value * (new_tier.imr - old_tier.imr)
    extra_mm = extra_mm if extra_mm > ZERO else ZERO
    extra_im = extra_im if extra_im > ZERO else ZERO
    return AlertCandidate(
        account,
        Rule.TIER_MOVED_UP,
        f"{symbol}:tier{new_tier.id}",
        _WARNING,
        Decimal(new_tier.id),
        Decimal(old_tier.id),
        f"{symbol} moved from tier {old_tier.id} to tier {new_tier.id}: MMR"
        f" {_pct(old_tier.mmr)}→{_pct(new_tier.mmr)}, IMR {_pct(old_tier.imr)}→"
        f"{_pct(new_tier.imr)}, max leverage {old_tier.max_leverage}x→{new_tier.max_leverage}x",
        {
            "old_mmr": old_tier.mmr,
            "new_mmr": new_tier.mmr,
            "old_imr": old_tier.imr,
            "new_imr": new_tier.imr,
            "old_max_leverage": old_tier.max_leverage,
            "new_max_leverage": new_tier.max_leverage,
            "position_value": position_value,
            "extra_maintenance_margin": extra_mm,
            "extra_initial_margin": extra_im,
        },
    )


def evaluate_tier_moves(
    previous: AccountExposure | None, current: AccountExposure
) -> list[AlertCandidate]:
    """``tier_moved_up`` for every symbol whose tier rose since ``previous``.

    Position value is at entry price, summed over both hedge sides.
    """
    if previous is None:
        return []
    before: dict[str, Tier] = {}
    for pe in previous.positions:
        if pe.tier is not None:
            before[pe.position.symbol] = pe.tier
    values: dict[str, Decimal] = {}
    after: dict[str, Tier] = {}
    for pe in current.positions:
        if pe.tier is not None:
            symbol = pe.position.symbol
            after[symbol] = pe.tier
            values[symbol] = values.get(symbol, ZERO) + pe.position.value
    out: list[AlertCandidate] = []
    account = current.profile.account
    for symbol, new in after.items():
        old = before.get(symbol)
        if old is not None:
            found = tier_moved_up(account, symbol, old, new, values[symbol])
            if found is not None:
                out.append(found)
    return out
