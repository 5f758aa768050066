"""``bench.chaos.summarize``: the ground truth of ``make chaos`` counts each way an alert
can go wrong (lost, sent twice, raised twice) and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench.chaos import summarize
from riskwatch_common.contracts import AlertTransition, RiskAlertChanged
from riskwatch_common.testkit import make_alert

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def alert(n: int, transition: AlertTransition, account: str = "a1") -> RiskAlertChanged:
    return make_alert(
        account=account, transition=transition, event_id=f"ev{n}", at=T0 + timedelta(seconds=n)
    )


def log(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"channel": "telegram", "event_id": e, "ref": ref} for e, ref in pairs]


def test_every_transition_delivered_once_is_clean() -> None:
    alerts = [alert(1, AlertTransition.RAISED), alert(2, AlertTransition.RESOLVED)]
    s = summarize(alerts, [(101, "up"), (102, "down")], log(("ev1", 101), ("ev2", 102)))
    assert (s.expected, s.delivered, s.lost, s.duplicated, s.other) == (2, 2, 0, 0, 0)


def test_a_transition_without_a_telegram_message_is_lost() -> None:
    alerts = [alert(1, AlertTransition.RAISED), alert(2, AlertTransition.RESOLVED)]
    # logged by the notifier, but Telegram never accepted message 102: still lost
    s = summarize(alerts, [(101, "up")], log(("ev1", 101), ("ev2", 102)))
    assert (s.expected, s.delivered, s.lost, s.lost_ids) == (2, 1, 1, ("ev2",))


def test_redelivered_records_and_updates_are_not_expected_twice() -> None:
    raised = alert(1, AlertTransition.RAISED)
    alerts = [raised, raised, alert(2, AlertTransition.UPDATED)]
    s = summarize(alerts, [(101, "up")], log(("ev1", 101)))
    assert (s.expected, s.delivered, s.duplicated) == (1, 1, 0)


def test_a_resend_after_a_crash_and_a_second_raise_are_duplicates() -> None:
    alerts = [alert(1, AlertTransition.RAISED), alert(2, AlertTransition.RAISED)]
    # message 101 was accepted but not logged (crash), then sent again as 102
    telegram = [(101, "up"), (102, "up"), (103, "monitoring stalled")]
    s = summarize(alerts, telegram, log(("ev1", 102)))
    assert s.expected == 1  # ev2 raises an open alert again: the processor's duplicate
    assert s.duplicated == 2
    assert s.other == 1


def test_one_transition_logged_under_two_messages_is_a_duplicate() -> None:
    alerts = [alert(1, AlertTransition.RAISED)]
    s = summarize(alerts, [(101, "up"), (102, "up")], log(("ev1", 101), ("ev1", 102)))
    assert (s.delivered, s.duplicated) == (1, 1)
