"""Channels against fake Telegram and Slack servers on loopback (time is faked)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from notifier.app import outcome_event
from notifier.messages import from_alert, from_analysis
from riskwatch_common.contracts import (
    NotificationDelivered,
    NotificationFailed,
    NotificationKind,
    derived_event_id,
)


async def test_alert_is_delivered_on_every_enabled_channel(
    tmp_path: Path, telegram: Any, slack: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram, slack=slack))
    alert = make_alert()
    outcomes = await stack.send(from_alert(alert))

    assert sorted(outcomes) == ["console", "file", "slack", "telegram"]
    assert all(o.delivered and o.attempts == 1 for o in outcomes.values())
    [message] = telegram.messages
    assert message["chat_id"] == "-1001234567890"
    assert message["parse_mode"] == "HTML"  # the fake parses it like Telegram does
    assert message["link_preview_options"] == {"is_disabled": True}
    assert message["text"] == from_alert(alert).html
    assert slack.messages[0]["text"] == "🔴 HIGH · main · net exposure 12,500 USD"
    assert [b["type"] for b in slack.messages[0]["blocks"]] == ["section", "context"]
    assert "corr=corr-7f3a" in stack.stdout.getvalue()
    [line] = (tmp_path / "alerts.jsonl").read_bytes().splitlines()
    record = orjson.loads(line)
    assert record["event_id"] == alert.event_id
    assert record["transition"] == "raised"


async def test_outcome_events_have_ids_derived_from_channel_event_and_outcome(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    telegram.fail(403, "Forbidden: bot was blocked by the user")
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    alert = make_alert()
    outcomes = await stack.send(from_alert(alert))

    def now() -> Any:
        return alert.occurred_at

    delivered = outcome_event(outcomes["file"], source="notifier/0", now=now)
    failed = outcome_event(outcomes["telegram"], source="notifier/0", now=now)
    assert isinstance(delivered, NotificationDelivered)
    assert delivered.event_id == derived_event_id(
        "notification", "file", alert.event_id, "delivered"
    )
    assert delivered.kind == NotificationKind.ALERT
    assert delivered.correlation_id == alert.correlation_id
    assert isinstance(failed, NotificationFailed)
    assert failed.event_id == derived_event_id("notification", "telegram", alert.event_id, "failed")
    assert failed.error == "telegram HTTP 403: Forbidden: bot was blocked by the user"
    assert failed.attempts == 1


async def test_telegram_429_waits_retry_after_then_delivers(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    fake_time: Any,
) -> None:
    telegram.fail(429, "Too Many Requests: retry after 7", {"retry_after": 7})
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    outcome = (await stack.send(from_alert(make_alert())))["telegram"]
    assert outcome.delivered
    assert outcome.attempts == 2
    assert 7 in fake_time.sleeps
    assert len(telegram.messages) == 1


async def test_telegram_429_without_parameters_backs_off_instead(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    fake_time: Any,
) -> None:
    telegram.fail(429, "Too Many Requests")
    stack = await make_stack(settings_for(tmp_path, telegram=telegram, retry_base_seconds=2))
    outcome = (await stack.send(from_alert(make_alert())))["telegram"]
    assert outcome.delivered
    assert len(fake_time.sleeps) == 1
    assert 1.5 <= fake_time.sleeps[0] <= 2  # first backoff step, jittered down by at most 25 %


async def test_telegram_asking_to_wait_longer_than_the_cap_is_left_to_the_outbox(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    telegram.fail(429, "Too Many Requests: retry after 600", {"retry_after": 600})
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    outcome = (await stack.send(from_alert(make_alert())))["telegram"]
    assert not outcome.delivered
    assert telegram.requests == 1  # not waited in line: later messages would stall
    assert "600 s, over the 60 s in-line cap" in outcome.error
    assert outcome.retryable
    assert outcome.retry_after == 600


async def test_parse_entities_error_resends_once_as_plain_text(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    telegram.fail(400, 'Bad Request: can\'t parse entities: Unsupported start tag "x"')
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    alert = make_alert()
    outcome = (await stack.send(from_alert(alert)))["telegram"]
    assert outcome.delivered
    assert telegram.requests == 2
    [message] = telegram.messages
    assert "parse_mode" not in message
    assert message["text"] == from_alert(alert).plain


async def test_parse_entities_error_twice_fails_without_a_third_try(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    telegram.fail(400, "Bad Request: can't parse entities: x")
    telegram.fail(400, "Bad Request: can't parse entities: y")
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    outcome = (await stack.send(from_alert(make_alert())))["telegram"]
    assert not outcome.delivered
    assert telegram.requests == 2


async def test_telegram_client_errors_are_final(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    telegram.fail(400, "Bad Request: chat not found")
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    outcome = (await stack.send(from_alert(make_alert())))["telegram"]
    assert not outcome.delivered
    assert outcome.attempts == 1
    assert telegram.requests == 1
    assert outcome.error == "telegram HTTP 400: Bad Request: chat not found"


async def test_telegram_server_errors_are_retried_up_to_max_attempts(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    fake_time: Any,
) -> None:
    for _ in range(5):
        telegram.fail(502, "Bad Gateway")
    settings = settings_for(
        tmp_path, telegram=telegram, max_attempts=3, telegram_min_interval_seconds=0
    )
    stack = await make_stack(settings)
    outcome = (await stack.send(from_alert(make_alert())))["telegram"]
    assert not outcome.delivered
    assert outcome.attempts == 3
    assert telegram.requests == 3
    assert len(fake_time.sleeps) == 2
    assert fake_time.sleeps[1] > fake_time.sleeps[0]  # exponential


async def test_analysis_is_sent_as_a_reply_to_its_alert_message(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    make_analysis: Any,
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    alert = make_alert()
    await stack.send(from_alert(alert))
    outcome = (await stack.send(from_analysis(make_analysis(alert))))["telegram"]
    assert outcome.delivered
    first, follow_up = telegram.messages
    assert follow_up["reply_parameters"] == {
        "message_id": 101,
        "allow_sending_without_reply": True,
    }
    assert "<b>Reduce BTCUSDT</b> by 2,500 USD" in follow_up["text"]
    assert "main:net_exposure_usd" not in follow_up["text"]  # ids stay off the phone
    assert "reply_parameters" not in first


async def test_telegram_sends_at_most_one_message_per_second_per_chat(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    fake_time: Any,
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    futures = []
    for _ in range(3):
        futures += await stack.dispatcher.dispatch(from_alert(make_alert()))
    for future in futures:
        assert (await future).delivered
    assert len(telegram.messages) == 3
    assert fake_time.sleeps == [1.0, 1.0]  # console and file are not paced


async def test_slack_200_ok_is_the_only_success(
    tmp_path: Path, slack: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    slack.fail(200, "no_text")
    stack = await make_stack(settings_for(tmp_path, slack=slack))
    outcome = (await stack.send(from_alert(make_alert())))["slack"]
    assert not outcome.delivered
    assert outcome.error == "slack HTTP 200: no_text"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ],
)
async def test_slack_client_errors_fail_without_retry(
    tmp_path: Path,
    slack: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    status: int,
    body: str,
) -> None:
    slack.fail(status, body)
    stack = await make_stack(settings_for(tmp_path, slack=slack))
    outcome = (await stack.send(from_alert(make_alert())))["slack"]
    assert not outcome.delivered
    assert slack.requests == 1
    assert outcome.error == f"slack HTTP {status}: {body}"


async def test_slack_429_waits_retry_after_and_500_is_retried(
    tmp_path: Path,
    slack: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    fake_time: Any,
) -> None:
    slack.fail(429, "rate_limited", {"Retry-After": "3"})
    slack.fail(500, "rollup_error")
    stack = await make_stack(settings_for(tmp_path, slack=slack))
    outcome = (await stack.send(from_alert(make_alert())))["slack"]
    assert outcome.delivered
    assert outcome.attempts == 3
    assert fake_time.sleeps[0] == 3
    assert len(slack.messages) == 1


async def test_channels_without_credentials_are_off_and_say_so(
    tmp_path: Path,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        stack = await make_stack(settings_for(tmp_path))
    assert stack.dispatcher.channel_names == ["console", "file"]
    assert "telegram disabled: no NOTIFIER_TELEGRAM_BOT_TOKEN" in caplog.messages
    assert "slack disabled: no NOTIFIER_SLACK_WEBHOOK_URL" in caplog.messages
    outcomes = await stack.send(from_alert(make_alert()))
    assert sorted(outcomes) == ["console", "file"]


async def test_token_without_chat_id_keeps_telegram_off(
    tmp_path: Path,
    telegram: Any,
    make_stack: Any,
    settings_for: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        stack = await make_stack(
            settings_for(tmp_path, telegram=telegram, telegram_chat_id="", alerts_file="")
        )
    assert stack.dispatcher.channel_names == ["console"]
    assert "telegram disabled: no NOTIFIER_TELEGRAM_CHAT_ID" in caplog.messages


async def test_same_event_after_a_restart_is_not_sent_again(
    tmp_path: Path,
    telegram: Any,
    slack: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
) -> None:
    settings = settings_for(tmp_path, telegram=telegram, slack=slack)
    alert = make_alert()
    first = await make_stack(settings)
    assert len(await first.send(from_alert(alert))) == 4
    await first.close()

    restarted = await make_stack(settings)
    assert await restarted.send(from_alert(alert.model_copy())) == {}
    assert len(telegram.messages) == 1
    assert len(slack.messages) == 1
    assert len((tmp_path / "alerts.jsonl").read_bytes().splitlines()) == 1
    assert restarted.stdout.getvalue() == ""
    # a new transition of the same alert is a new event and does go out
    await restarted.send(from_alert(make_alert()))
    assert len(telegram.messages) == 2


async def test_a_failed_delivery_is_not_recorded_so_a_redelivery_tries_again(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    telegram.fail(400, "Bad Request: chat not found")
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    alert = make_alert()
    assert not (await stack.send(from_alert(alert)))["telegram"].delivered
    again = await stack.send(from_alert(alert))
    assert sorted(again) == ["telegram"]
    assert again["telegram"].delivered


async def test_duplicate_while_the_first_is_still_queued_is_skipped(
    tmp_path: Path, telegram: Any, make_stack: Any, settings_for: Any, make_alert: Any
) -> None:
    stack = await make_stack(settings_for(tmp_path, telegram=telegram))
    n = from_alert(make_alert())
    first = await stack.dispatcher.dispatch(n)
    second = await stack.dispatcher.dispatch(n)
    assert len(first) == 3
    assert second == []
    for future in first:
        await future
    assert len(telegram.messages) == 1


async def test_the_alerts_file_is_rotated_while_running_and_keeps_its_backups(
    tmp_path: Path, make_alert: Any
) -> None:
    from notifier.channels import FileChannel

    path = tmp_path / "alerts.jsonl"
    channel = FileChannel(path, max_bytes=4000, backups=2)
    for _ in range(40):
        assert (await channel.send(from_alert(make_alert()))).result == "delivered"
    await channel.close()
    check_rotated(tmp_path)


def check_rotated(directory: Path) -> None:
    files = sorted(directory.iterdir())
    assert [p.name for p in files] == ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]
    assert all(p.stat().st_size <= 4000 for p in files)
    for p in files:  # every line whole: rotation never cuts a record
        assert all(orjson.loads(line)["kind"] == "alert" for line in p.read_bytes().splitlines())
