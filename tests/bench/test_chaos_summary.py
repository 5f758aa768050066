"""``bench.chaos.summarize``: the ground truth of ``make chaos`` counts each way an alert
can go wrong (lost, sent twice, raised twice) and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.chaos import breaches_opened, summarize
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


def test_breaches_are_counted_on_the_rising_edge_of_the_btc_position(tmp_path: Path) -> None:
    def frame(account: str, size: str, symbol: str = "BTCUSDT", fault: str | None = None) -> bytes:
        rows = [{"symbol": symbol, "size": size}]
        doc = {"account": account, "topic": "position", "rows": rows, "fault": fault}
        return orjson.dumps(doc) + b"\n"

    log_path = tmp_path / "frames.jsonl"
    log_path.write_bytes(
        frame("a1", "0.05")  # the breach order placed: position unchanged
        + frame("a1", "0.25")  # filled: breach 1
        + frame("a1", "0.05", fault="malformed_truncated")  # a corrupted copy is no frame
        + frame("a1", "0.25")  # still open
        + frame("a2", "0.25")  # a2's first breach
        + frame("a1", "0.05")  # unwound
        + frame("a1", "9", symbol="SOLUSDT")  # other symbols do not count
        + frame("a1", "0.25")  # breach 2
    )
    assert breaches_opened(log_path) == {"a1": 2, "a2": 1}
    assert breaches_opened(tmp_path / "missing.jsonl") == {}
