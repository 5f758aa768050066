"""Alert lifecycle: raise once, escalate, hysteresis, resolve; state round-trips to a dict."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from risk_processor.engine import (
    AlertCandidate,
    AlertPolicy,
    AlertState,
    AlertTransition,
    Rule,
    Severity,
    Transition,
    active_keys,
    alert_id,
    reconcile,
    step,
)

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = AlertPolicy(clear_after=3, settle_after=3)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def candidate(
    severity: Severity = Severity.WARNING,
    value: str = "9",
    subject: str = "BTCUSDT",
    account: str = "main",
) -> AlertCandidate:
    return AlertCandidate(
        account,
        Rule.LIQUIDATION_DISTANCE,
        subject,
        severity,
        D(value),
        D(10),
        f"{subject} is {value}% from liquidation",
        {"liq_distance_pct": D(value)},
    )


def run(
    sequence: list[AlertCandidate | None], policy: AlertPolicy = POLICY
) -> tuple[AlertState | None, list[AlertTransition]]:
    state: AlertState | None = None
    transitions = []
    for i, c in enumerate(sequence):
        state, t = step(state, c, at(i), policy)
        if t is not None:
            transitions.append(t)
    return state, transitions


def kinds(transitions: list[AlertTransition]) -> list[tuple[Transition, Severity]]:
    return [(t.kind, t.severity) for t in transitions]


def test_first_candidate_raises_once_and_repeats_at_same_severity_are_silent() -> None:
    state, transitions = run([candidate(), candidate(value="8"), candidate(value="7")])
    assert kinds(transitions) == [(Transition.RAISED, Severity.WARNING)]
    assert state is not None
    assert state.raised_at == at(0)


def test_unchanged_evaluation_returns_the_same_state_object() -> None:
    raised, _ = step(None, candidate(), at(0))
    again, transition = step(raised, candidate(value="8"), at(1))
    assert again is raised
    assert transition is None


def test_higher_severity_escalates_with_previous_severity() -> None:
    _, transitions = run([candidate(), candidate(Severity.HIGH, "4")])
    assert kinds(transitions) == [
        (Transition.RAISED, Severity.WARNING),
        (Transition.ESCALATED, Severity.HIGH),
    ]
    assert transitions[1].previous_severity is Severity.WARNING
    assert transitions[1].raised_at == at(0)


def test_severity_flapping_around_a_level_escalates_only_once() -> None:
    high, warning = candidate(Severity.HIGH, "4"), candidate(Severity.WARNING, "6")
    _, transitions = run([warning, high, warning, high, warning, high])
    assert kinds(transitions) == [
        (Transition.RAISED, Severity.WARNING),
        (Transition.ESCALATED, Severity.HIGH),
    ]


def test_sustained_lower_severity_lets_a_later_rise_escalate_again() -> None:
    high, warning = candidate(Severity.HIGH, "4"), candidate(Severity.WARNING, "6")
    _, transitions = run([warning, high, warning, warning, warning, high])
    assert kinds(transitions) == [
        (Transition.RAISED, Severity.WARNING),
        (Transition.ESCALATED, Severity.HIGH),
        (Transition.ESCALATED, Severity.HIGH),
    ]


def test_condition_flapping_around_threshold_keeps_one_alert_open() -> None:
    sequence: list[AlertCandidate | None] = [
        candidate(),
        None,
        candidate(),
        None,
        None,
        candidate(),
    ]
    state, transitions = run(sequence)
    assert kinds(transitions) == [(Transition.RAISED, Severity.WARNING)]
    assert state is not None


def test_condition_absent_for_clear_after_evaluations_resolves() -> None:
    state, transitions = run([candidate(), None, None, None])
    assert state is None
    assert [t.kind for t in transitions] == [Transition.RAISED, Transition.RESOLVED]
    resolved = transitions[-1]
    assert resolved.at == at(3)
    assert resolved.alert_id == alert_id("main", Rule.LIQUIDATION_DISTANCE, "BTCUSDT")


def test_condition_absent_fewer_times_does_not_resolve() -> None:
    state, transitions = run([candidate(), None, None])
    assert state is not None
    assert state.absent_count == 2
    assert [t.kind for t in transitions] == [Transition.RAISED]


def test_after_resolve_the_same_condition_raises_again_with_the_same_alert_id() -> None:
    _, transitions = run([candidate(), None, None, None, candidate()])
    assert [t.kind for t in transitions] == [
        Transition.RAISED,
        Transition.RESOLVED,
        Transition.RAISED,
    ]
    assert transitions[0].alert_id == transitions[2].alert_id
    assert transitions[0].transition_id != transitions[2].transition_id


def test_clear_after_one_resolves_on_first_absence() -> None:
    _, transitions = run([candidate(), None], AlertPolicy(clear_after=1, settle_after=1))
    assert [t.kind for t in transitions] == [Transition.RAISED, Transition.RESOLVED]


def test_alert_id_is_stable_and_distinct_per_account_rule_subject() -> None:
    first = alert_id("main", Rule.NET_EXPOSURE_USD, "account")
    assert first == alert_id("main", Rule.NET_EXPOSURE_USD, "account")
    assert first != alert_id("sub", Rule.NET_EXPOSURE_USD, "account")
    assert first != alert_id("main", Rule.NET_EXPOSURE_SHARE, "account")
    assert first != alert_id("main", Rule.NET_EXPOSURE_USD, "BTCUSDT")


def test_step_rejects_a_candidate_of_another_alert() -> None:
    state, _ = step(None, candidate(), at(0))
    with pytest.raises(ValueError, match="not alert"):
        step(state, candidate(subject="ETHUSDT"), at(1))


def test_state_round_trips_through_a_json_dict() -> None:
    state, _ = run([candidate(), candidate(Severity.HIGH, "4.5"), None])
    assert state is not None
    data = json.loads(json.dumps(state.to_dict()))
    assert AlertState.from_dict(data) == state
    assert data["severity"] == "HIGH"
    assert data["numbers"] == {"liq_distance_pct": "4.5"}


def test_reconcile_raises_new_resolves_missing_and_leaves_other_accounts_alone() -> None:
    other, _ = step(None, candidate(account="sub"), at(0))
    assert other is not None
    states = {other.alert_id: other}
    states, transitions = reconcile("main", states, [candidate()], at(1), POLICY)
    assert [t.kind for t in transitions] == [Transition.RAISED]
    assert len(states) == 2
    for i in range(3):
        states, transitions = reconcile("main", states, [], at(2 + i), POLICY)
    assert [t.kind for t in transitions] == [Transition.RESOLVED]
    assert list(states.values()) == [other]


def test_reconcile_keeps_the_most_severe_of_duplicate_candidates() -> None:
    states, transitions = reconcile(
        "main", {}, [candidate(), candidate(Severity.HIGH, "4")], at(0), POLICY
    )
    assert kinds(transitions) == [(Transition.RAISED, Severity.HIGH)]
    assert len(states) == 1


def test_reconcile_rejects_candidates_of_another_account() -> None:
    with pytest.raises(ValueError, match="sub"):
        reconcile("main", {}, [candidate(account="sub")], at(0), POLICY)


def test_active_keys_lists_rule_and_subject_of_the_accounts_alerts() -> None:
    mine, _ = step(None, candidate(), at(0))
    theirs, _ = step(None, candidate(account="sub", subject="ETHUSDT"), at(0))
    assert mine is not None
    assert theirs is not None
    assert active_keys([mine, theirs], "main") == {(Rule.LIQUIDATION_DISTANCE, "BTCUSDT")}


def test_reconcile_confirming_every_alert_returns_the_same_states_in_a_new_dict() -> None:
    states, _ = reconcile(
        "main", {}, [candidate(), candidate(Severity.HIGH, subject="ETHUSDT")], at(0), POLICY
    )
    again, transitions = reconcile(
        "main",
        states,
        (c for c in [candidate(value="8"), candidate(Severity.HIGH, "7", "ETHUSDT")]),
        at(1),
        POLICY,
    )
    assert transitions == []
    assert again == states
    assert again is not states
    assert list(again) == list(states)
    assert all(again[k] is states[k] for k in states)


def test_reconcile_keys_alerts_by_their_id_not_by_where_they_are_stored() -> None:
    # A state stored under a key that is not its alert id (say, one written before the id
    # scheme changed) is not the candidate's alert: the candidate raises its own alert and
    # the stored one ages towards resolution.
    raised, _ = step(None, candidate(), at(0), POLICY)
    assert raised is not None
    stored = {"old-id": raised}
    states, transitions = reconcile("main", stored, [candidate()], at(1), POLICY)
    assert [t.kind for t in transitions] == [Transition.RAISED]
    assert list(states) == [raised.alert_id, "old-id"]
    assert states["old-id"].absent_count == 1


def test_reconcile_with_one_changed_alert_among_confirmed_ones() -> None:
    states, _ = reconcile(
        "main",
        {},
        [candidate(subject="ETHUSDT"), candidate(), candidate(subject="SOLUSDT")],
        at(0),
        POLICY,
    )
    after, transitions = reconcile(
        "main",
        states,
        [candidate(subject="ETHUSDT"), candidate(Severity.HIGH), candidate(subject="SOLUSDT")],
        at(1),
        POLICY,
    )
    assert [(t.kind, t.subject) for t in transitions] == [(Transition.ESCALATED, "BTCUSDT")]
    assert list(after) == list(states)
    key = alert_id("main", Rule.LIQUIDATION_DISTANCE, "BTCUSDT")
    assert after[key].severity is Severity.HIGH
    assert all(after[k] is states[k] for k in states if k != key)


# --------------------------------------------------------------------------- current numbers


def test_open_alert_whose_value_moved_publishes_updated_at_most_once_per_interval() -> None:
    policy = AlertPolicy(update_change=D("0.10"), update_interval=timedelta(seconds=60))
    state, raised = step(None, candidate(Severity.HIGH, "4.76"), T0, policy)
    assert raised is not None
    # 3.63 % is a 24 % move, but within a minute of the raise: nothing yet.
    state, t = step(state, candidate(Severity.HIGH, "3.63"), at(30), policy)
    assert t is None
    assert state is not None
    # A minute on: UPDATED, with the current figures and a deterministic id.
    held = state
    state, t = step(held, candidate(Severity.HIGH, "3.63"), at(61), policy)
    assert t is not None
    assert (t.kind, t.severity, t.value, t.numbers) == (
        Transition.UPDATED,
        Severity.HIGH,
        D("3.63"),
        {"liq_distance_pct": D("3.63")},
    )
    _, replayed = step(held, candidate(Severity.HIGH, "3.63"), at(61), policy)
    assert replayed is not None
    assert replayed.transition_id == t.transition_id
    assert state is not None
    # A small move (3.63 → 3.5, 3.6 %) later on is not material.
    same, t = step(state, candidate(Severity.HIGH, "3.5"), at(200), policy)
    assert t is None
    assert same is state


def test_reconcile_fast_path_also_publishes_moved_numbers() -> None:
    policy = AlertPolicy(update_interval=timedelta(seconds=60))
    states, _ = reconcile("main", {}, [candidate(Severity.HIGH, "4.76")], T0, policy)
    quiet, none = reconcile("main", states, [candidate(Severity.HIGH, "4.70")], at(120), policy)
    assert none == []
    assert quiet == states
    moved, [t] = reconcile("main", states, [candidate(Severity.HIGH, "3.63")], at(120), policy)
    assert (t.kind, t.value) == (Transition.UPDATED, D("3.63"))
    assert next(iter(moved.values())).value == D("3.63")


def test_policy_names_every_bad_value() -> None:
    with pytest.raises(ValueError, match=r"clear_after=0.*update_change=0"):
        AlertPolicy(clear_after=0, update_change=D(0))
