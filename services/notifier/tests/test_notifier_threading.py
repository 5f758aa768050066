"""An analysis is a threaded reply to its alert: never before it, never instead of it,
and still threaded after a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notifier.dedup import DeliveryLog
from notifier.delivery import PARK_SECONDS
from notifier.messages import from_alert, from_analysis


async def test_analysis_read_before_its_alert_waits_and_follows_it_as_a_reply(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    make_analysis: Any,
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    alert = make_alert()
    early = await stack.dispatcher.dispatch(from_analysis(make_analysis(alert)))
    assert early == []  # parked on every channel: nothing goes out before the alert
    assert stack.dispatcher.parked == 3
    futures = await stack.dispatcher.dispatch(from_alert(alert))
    outcomes = await asyncio.gather(*futures)
    assert len(outcomes) == 6  # the alert and the analysis on console, file and telegram
    assert all(o.delivered for o in outcomes)
    first, reply = telegram.messages
    assert "reply_parameters" not in first
    assert reply["reply_parameters"]["message_id"] == 101
    assert stack.dispatcher.parked == 0


async def test_analysis_whose_alert_never_comes_goes_out_alone_after_the_wait(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    make_analysis: Any,
    fake_time: Any,
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    await stack.dispatcher.dispatch(from_analysis(make_analysis(make_alert())))
    assert await stack.dispatcher.release_overdue() == []
    fake_time.now += PARK_SECONDS
    outcomes = await asyncio.gather(*await stack.dispatcher.release_overdue())
    assert sorted(o.channel for o in outcomes) == ["console", "file", "telegram"]
    [message] = telegram.messages
    assert "reply_parameters" not in message


async def test_analysis_after_a_restart_still_replies_to_the_alert_message(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    make_analysis: Any,
) -> None:
    settings = settings_for(tmp_path, telegram=telegram)
    alert = make_alert()
    first = await make_stack(settings)
    await first.send(from_alert(alert))
    await first.close()

    restarted = await make_stack(settings)
    outcomes = await restarted.send(from_analysis(make_analysis(alert)))
    assert outcomes["telegram"].delivered
    _, reply = telegram.messages
    assert reply["reply_parameters"]["message_id"] == 101


def test_message_refs_survive_reopening_and_compaction(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    log = DeliveryLog(path, capacity=100)
    log.open()
    at = datetime(2026, 3, 2, tzinfo=UTC)
    for i in range(250):
        log.record("telegram", f"e{i}", at, ref=1000 + i)
    log.record("file", "e249", at)
    log.close()
    again = DeliveryLog(path, capacity=100)
    again.open()  # 251 lines > 2 x 100: compacted
    assert again.ref("telegram", "e249") == 1249
    assert again.ref("file", "e249") is None
    assert again.ref("telegram", "e0") is None  # beyond the capacity
    again.close()
    reopened = DeliveryLog(path, capacity=100)
    reopened.open()
    assert reopened.ref("telegram", "e249") == 1249
    reopened.close()
