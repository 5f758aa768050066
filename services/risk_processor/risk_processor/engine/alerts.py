"""Alert lifecycle: candidates in, raised / escalated / resolved transitions out.

One alert exists per (account, rule, subject); its id is a UUIDv5 of that triple, so the
same condition always has the same id. Pure state in, state out: the shell stores
``AlertState.to_dict()`` in a table and passes the state back on the next evaluation.

Hysteresis, part 2 (part 1, value margins, is in ``rules``):

- an alert resolves only after its condition has been absent for ``clear_after``
  consecutive evaluations, so a condition flickering around its threshold keeps one alert
  open instead of raising it again and again;
- an escalation is announced only above the highest severity announced so far; a lower
  severity is adopted silently, and only after it has held for ``settle_after``
  consecutive evaluations does it become the new baseline (so HIGH → WARNING → HIGH
  flapping gives one ESCALATED, while a genuine later rise is announced again).

Rules in ``RESOLVE_AT_ONCE`` report a discrete state, not a measured figure that can
flicker: their alerts resolve at the first evaluation without them (``account_link``: the
ingestor said the link recovered, and that may be followed by no further event at all).

Current numbers: an open alert at an unchanged severity whose value moved by more than
``update_change`` (relative) since the figures last published, and not within
``update_interval`` of its last change, gives an UPDATED transition, so reminders and
overviews show what holds now (4.76 % from liquidation that is now 3.63 %). Readers
refresh on it; channels do not page for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Any

from risk_processor.engine.rules import AlertCandidate
from risk_processor.engine.types import Severity

# Fixed namespace so alert ids are stable across processes and releases.
_ALERT_NAMESPACE = uuid.UUID("6f1c3a52-58a4-4d0e-9a51-4b9c0e7f3d21")


class Transition(StrEnum):
    """Values match ``riskwatch_common.contracts.AlertTransition``."""

    RAISED = "raised"
    ESCALATED = "escalated"
    UPDATED = "updated"
    RESOLVED = "resolved"


@dataclass(slots=True, frozen=True)
class AlertPolicy:
    """Hysteresis counts, in evaluations; when an open alert's moved numbers are published
    (``update_change``: relative move of its value; ``update_interval``: least time since
    its last change)."""

    clear_after: int = 3
    settle_after: int = 3
    update_change: Decimal = Decimal("0.10")
    update_interval: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        problems = []
        if self.clear_after < 1:
            problems.append(f"clear_after={self.clear_after} must be at least 1")
        if self.settle_after < 1:
            problems.append(f"settle_after={self.settle_after} must be at least 1")
        if self.update_change <= 0:
            problems.append(f"update_change={self.update_change} must be positive")
        if self.update_interval <= timedelta(0):
            problems.append("update_interval_s must be positive")
        if problems:
            raise ValueError("; ".join(problems))


DEFAULT_ALERT_POLICY = AlertPolicy()

RESOLVE_AT_ONCE = frozenset({"account_link"})
"""Rules whose alerts resolve at the first evaluation without a candidate."""


@lru_cache(maxsize=65536)
def alert_id(account: str, rule: str, subject: str) -> str:
    """Stable id of the alert for (account, rule, subject)."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{account}\x1f{rule}\x1f{subject}"))


@dataclass(slots=True, frozen=True)
class AlertState:
    """An active alert.

    ``severity`` is the latest observed; ``notified_severity`` the baseline above which a
    rise is announced. ``absent_count`` counts consecutive evaluations without the
    condition, ``lower_count`` consecutive ones below the baseline. ``value`` to
    ``numbers`` are the candidate's as of the last material change (raise, severity change,
    return after an absence): an evaluation that changes nothing returns the same state
    object, so the shell persists only when ``new is not old``. ``updated_at`` is the time
    of that change.
    """

    alert_id: str
    account: str
    rule: str
    subject: str
    severity: Severity
    notified_severity: Severity
    raised_at: datetime
    updated_at: datetime
    absent_count: int
    lower_count: int
    value: Decimal
    threshold: Decimal
    reason: str
    numbers: dict[str, Decimal] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: Decimals and datetimes as strings, severities by name."""
        return {
            "alert_id": self.alert_id,
            "account": self.account,
            "rule": self.rule,
            "subject": self.subject,
            "severity": self.severity.name,
            "notified_severity": self.notified_severity.name,
            "raised_at": self.raised_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "absent_count": self.absent_count,
            "lower_count": self.lower_count,
            "value": str(self.value),
            "threshold": str(self.threshold),
            "reason": self.reason,
            "numbers": {k: str(v) for k, v in self.numbers.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertState:
        """Inverse of ``to_dict``."""
        return cls(
            alert_id=str(data["alert_id"]),
            account=str(data["account"]),
            rule=str(data["rule"]),
            subject=str(data["subject"]),
            severity=Severity[data["severity"]],
            notified_severity=Severity[data["notified_severity"]],
            raised_at=datetime.fromisoformat(data["raised_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
            absent_count=int(data["absent_count"]),
            lower_count=int(data["lower_count"]),
            value=Decimal(data["value"]),
            threshold=Decimal(data["threshold"]),
            reason=str(data["reason"]),
            numbers={str(k): Decimal(v) for k, v in data.get("numbers", {}).items()},
        )


@dataclass(slots=True, frozen=True)
class AlertTransition:
    """A change worth telling someone about.

    ``previous_severity`` is the announced baseline before an escalation, ``None`` when
    raised, the last severity when resolved. For RESOLVED, ``value`` and the fields after it
    are the last observed ones.
    ``transition_id`` is deterministic from alert id, kind, raise time and ``at``.
    """

    kind: Transition
    alert_id: str
    account: str
    rule: str
    subject: str
    severity: Severity
    previous_severity: Severity | None
    at: datetime
    raised_at: datetime
    value: Decimal
    threshold: Decimal
    reason: str
    numbers: dict[str, Decimal] = field(default_factory=dict, hash=False)

    @property
    def transition_id(self) -> str:
        """Dedup key of this transition: the same inputs at the same time give the same id."""
        return str(
            uuid.uuid5(
                _ALERT_NAMESPACE,
                f"{self.alert_id}\x1f{self.kind}\x1f{self.raised_at.isoformat()}"
                f"\x1f{self.at.isoformat()}",
            )
        )


def _transition(
    kind: Transition, s: AlertState, at: datetime, previous: Severity | None
) -> AlertTransition:
    return AlertTransition(
        kind,
        s.alert_id,
        s.account,
        s.rule,
        s.subject,
        s.severity,
        previous,
        at,
        s.raised_at,
        s.value,
        s.threshold,
        s.reason,
        s.numbers,
    )


def _moved(state: AlertState, value: Decimal, now: datetime, policy: AlertPolicy) -> bool:
    """Whether an open alert's value moved enough, long enough after its last change, to
    publish its current numbers."""
    return now - state.updated_at >= policy.update_interval and abs(
        value - state.value
    ) > policy.update_change * abs(state.value)


def step(
    state: AlertState | None,
    candidate: AlertCandidate | None,
    now: datetime,
    policy: AlertPolicy = DEFAULT_ALERT_POLICY,
) -> tuple[AlertState | None, AlertTransition | None]:
    """Advance one alert by one evaluation.

    No state and a candidate: RAISED. State and a candidate: ESCALATED when the severity is
    above the announced baseline, otherwise no transition (see the module docstring for
    de-escalation). State and no candidate: RESOLVED after ``clear_after`` consecutive
    absences (the state becomes ``None``). Raises ``ValueError`` when the candidate belongs
    to another alert.
    """
    if candidate is None:
        if state is None:
            return None, None
        absent = state.absent_count + 1
        if absent >= policy.clear_after or state.rule in RESOLVE_AT_ONCE:
            return None, _transition(Transition.RESOLVED, state, now, state.severity)
        return (
            AlertState(
                state.alert_id,
                state.account,
                state.rule,
                state.subject,
                state.severity,
                state.notified_severity,
                state.raised_at,
                now,
                absent,
                state.lower_count,
                state.value,
                state.threshold,
                state.reason,
                state.numbers,
            ),
            None,
        )

    severity = candidate.severity
    if state is None:
        raised = AlertState(
            alert_id(candidate.account, candidate.rule, candidate.subject),
            candidate.account,
            candidate.rule,
            candidate.subject,
            severity,
            severity,
            now,
            now,
            0,
            0,
            candidate.value,
            candidate.threshold,
            candidate.reason,
            candidate.numbers,
        )
        return raised, _transition(Transition.RAISED, raised, now, None)

    if (state.account, state.rule, state.subject) != (
        candidate.account,
        candidate.rule,
        candidate.subject,
    ):
        raise ValueError(
            f"candidate {candidate.rule}/{candidate.subject} is not alert {state.alert_id}"
        )
    baseline = state.notified_severity
    if severity is state.severity and severity is baseline and not state.absent_count:
        if candidate.value != state.value and _moved(state, candidate.value, now, policy):
            updated = AlertState(
                state.alert_id,
                state.account,
                state.rule,
                state.subject,
                severity,
                baseline,
                state.raised_at,
                now,
                0,
                state.lower_count,
                candidate.value,
                candidate.threshold,
                candidate.reason,
                candidate.numbers,
            )
            return updated, _transition(Transition.UPDATED, updated, now, None)
        # Nothing material changed: keep the very same state, so the shell can skip
        # persisting it (``new is state``).
        return state, None
    lower = 0
    escalated = False
    if severity > baseline:
        escalated = True
        baseline = severity
    elif severity < baseline:
        lower = state.lower_count + 1
        if lower >= policy.settle_after:
            baseline = severity
            lower = 0
    new = AlertState(
        state.alert_id,
        state.account,
        state.rule,
        state.subject,
        severity,
        baseline,
        state.raised_at,
        now,
        0,
        lower,
        candidate.value,
        candidate.threshold,
        candidate.reason,
        candidate.numbers,
    )
    if escalated:
        return new, _transition(Transition.ESCALATED, new, now, state.notified_severity)
    return new, None


def reconcile(
    account: str,
    states: Mapping[str, AlertState],
    candidates: Iterable[AlertCandidate],
    now: datetime,
    policy: AlertPolicy = DEFAULT_ALERT_POLICY,
) -> tuple[dict[str, AlertState], list[AlertTransition]]:
    """Step every alert of ``account`` with this evaluation's candidates.

    ``states`` is keyed by alert id and may hold other accounts' alerts; those pass through
    untouched. Candidates must all be for ``account``; when one rule gives two candidates
    for a subject, the more severe wins. Returns the new states (resolved ones dropped) and
    the transitions, raised/escalated/updated first in candidate order, then resolved.
    """
    if candidates.__class__ is not list:  # (cheaper than isinstance, on every evaluation)
        candidates = list(candidates)
    if len(candidates) == len(states):
        # The usual case: each candidate confirms, unchanged, the alert at its own place in
        # ``states``, and ``states`` holds nothing else. The answer is then ``states`` itself
        # (as a new dict) and no transition; any other case takes the general path below.
        # (zip without strict=: the lengths are equal, and the keyword costs a parse.)
        for (key, held), c in zip(states.items(), candidates):  # noqa: B905
            severity = c.severity
            if not (
                c.account == account
                and severity is held.severity
                and severity is held.notified_severity
                and not held.absent_count
                and held.account == account
                and held.rule == c.rule
                and held.subject == c.subject
                and alert_id(account, c.rule, c.subject) == key
                and (c.value == held.value or not _moved(held, c.value, now, policy))
            ):
                break
        else:
            return dict(states), []

    chosen: dict[str, AlertCandidate] = {}
    for c in candidates:
        if c.account != account:
            raise ValueError(f"candidate for {c.account} in an evaluation of {account}")
        key = alert_id(account, c.rule, c.subject)
        seen = chosen.get(key)
        if seen is None or c.severity > seen.severity:
            chosen[key] = c
    out: dict[str, AlertState] = {}
    transitions: list[AlertTransition] = []
    get = states.get
    for key, c in chosen.items():
        state = get(key)
        if state is not None:
            # ``step``'s "nothing material changed" case, inlined: the usual outcome.
            severity = c.severity
            if (
                severity is state.severity
                and severity is state.notified_severity
                and not state.absent_count
                and state.account == c.account
                and state.rule == c.rule
                and state.subject == c.subject
                and (c.value == state.value or not _moved(state, c.value, now, policy))
            ):
                out[key] = state
                continue
        new, t = step(state, c, now, policy)
        if new is not None:
            out[key] = new
        if t is not None:
            transitions.append(t)
    for key, s in states.items():
        if key in chosen:
            continue
        if s.account != account:
            out[key] = s
            continue
        new, t = step(s, None, now, policy)
        if new is not None:
            out[key] = new
        if t is not None:
            transitions.append(t)
    return out, transitions


def active_keys(states: Iterable[AlertState], account: str) -> frozenset[tuple[str, str]]:
    """(rule, subject) of the account's active alerts, for the rules' ``active`` argument."""
    keys: set[tuple[str, str]] = set()
    add = keys.add
    for s in states:
        if s.account == account:
            add((s.rule, s.subject))
    return frozenset(keys)
