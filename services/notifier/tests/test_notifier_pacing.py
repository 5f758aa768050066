"""Priority, pacing and digests on the phone channels, against the fake Telegram server."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from notifier.messages import from_alert
from riskwatch_common.contracts import AlertTransition, Severity


async def test_burst_of_50_sends_critical_and_high_first_one_by_one_then_one_digest(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    severities = (
        [Severity.INFO, Severity.WARNING] * 20 + [Severity.HIGH] * 7 + [Severity.CRITICAL] * 3
    )
    # the urgent ones arrive last, behind 40 lower ones, as at a restart
    alerts = [
        make_alert(severity=s, account=f"acct{i % 5}", subject=f"SYM{i}USDT")
        for i, s in enumerate(severities)
    ]
    futures = []
    for alert in alerts:
        futures.extend(await stack.dispatcher.dispatch(from_alert(alert)))
    outcomes = await asyncio.gather(*futures)
    assert all(o.delivered for o in outcomes)

    texts = [m["text"] for m in telegram.messages]
    assert len(texts) == 11  # 3 CRITICAL + 7 HIGH one by one, then one digest
    assert all(t.startswith("<b>🚨 CRITICAL") for t in texts[:3])
    assert all(t.startswith("<b>🔴 HIGH") for t in texts[3:10])
    assert texts[10].startswith("<b>📋 40 alerts on 5 accounts: acct0, acct1, acct2, acct3")
    assert texts[10].count("\n") == 31  # the head, the 30 most urgent lines, "… and 10 more"
    assert texts[10].endswith("… and 10 more")
    # every alert is still its own line in the file, and none is sent again
    assert len((tmp_path / "alerts.jsonl").read_bytes().splitlines()) == 50
    again = await stack.dispatcher.dispatch(from_alert(alerts[0]))
    assert again == []


async def test_a_resolve_of_a_high_alert_waits_behind_a_new_warning(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    resolved = make_alert(severity=Severity.HIGH, transition=AlertTransition.RESOLVED)
    warning = make_alert(severity=Severity.WARNING, account="other")
    futures = [
        *await stack.dispatcher.dispatch(from_alert(resolved)),
        *await stack.dispatcher.dispatch(from_alert(warning)),
    ]
    await asyncio.gather(*futures)
    first, second = (m["text"] for m in telegram.messages)
    assert first.startswith("<b>🟠 WARNING · other")
    assert second.startswith("<b>✅ RESOLVED · main")


async def test_a_few_lower_alerts_go_out_one_by_one_not_as_a_digest(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    futures = []
    for i in range(3):
        alert = make_alert(severity=Severity.WARNING, subject=f"S{i}USDT")
        futures.extend(await stack.dispatcher.dispatch(from_alert(alert)))
    await asyncio.gather(*futures)
    assert len(telegram.messages) == 3
    assert not any("📋" in m["text"] for m in telegram.messages)


async def test_a_telegram_group_gets_at_most_20_messages_a_minute(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    fake_time: Any,
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    started = fake_time.now
    futures = []
    for i in range(21):
        futures.extend(await stack.dispatcher.dispatch(from_alert(make_alert(subject=f"S{i}"))))
    await asyncio.gather(*futures)
    assert len(telegram.messages) == 21
    # 1/s alone would send the 21st after 20 s; the group limit holds it to 60 s
    assert fake_time.now - started >= 60


async def test_a_long_message_is_split_into_valid_parts_that_thread_on_the_first(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    telegram_accepts: Any,
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    n = from_alert(make_alert(transition=AlertTransition.RAISED))
    long = n.__class__(
        **{
            **{f: getattr(n, f) for f in n.__slots__},
            "html": n.html + ("\n<b>détail &amp; more</b> " + "z" * 150) * 60,
        }
    )
    outcome = (await stack.send(long))["telegram"]
    assert outcome.delivered
    parts = telegram.messages
    assert len(parts) == 3
    assert all(len(p["text"]) <= 4096 and telegram_accepts(p["text"]) for p in parts)
    assert "reply_parameters" not in parts[0]
    assert {p["reply_parameters"]["message_id"] for p in parts[1:]} == {101}
    assert stack.delivery_log.ref("telegram", n.source_event_id) == 101


async def test_a_split_message_failing_midway_resends_only_the_missing_parts(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    n = from_alert(make_alert())
    long = dataclasses.replace(n, html="x" * 5000)
    telegram.by_request[2] = telegram.error(502, "Bad Gateway")  # part 2, first try
    outcome = (await stack.send(long))["telegram"]
    assert outcome.delivered
    assert outcome.attempts == 2
    first, second = telegram.messages  # part 1 was not sent again
    assert [len(first["text"]), len(second["text"])] == [4000, 1000]
    assert second["reply_parameters"]["message_id"] == 101
