"""Mute, unmute, ack, /status and /silences: from Telegram (the fake's getUpdates over real
HTTP) and from the CLI through the notifier's API."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from notifier.silences import Silences, new_silence, parse_duration, resolve_target
from riskwatch_cli.__main__ import main as cli
from riskwatch_common.contracts import AlertTransition, Severity, SilenceScope
from riskwatch_common.testkit import wait_until

DESK = "-1001234567890"
STRANGER = "-100777"
ROUTING = f"""
channels:
  desk: {{type: telegram, chat_id: "{DESK}", repeat_minutes: 30}}
  file: {{type: file}}
routes:
  - to: [desk, file]
"""


def test_durations_and_targets() -> None:
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("1h") == timedelta(hours=1)
    with pytest.raises(ValueError, match="say 30m, 1h, 2d"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="1 s to 30 days"):
        parse_duration("60d")
    accounts, rules = {"sub_90x"}, {"liquidation_distance"}
    assert resolve_target("sub_90x", accounts, rules) == (SilenceScope.ACCOUNT, "sub_90x")
    assert resolve_target("liquidation_distance", accounts, rules) == (
        SilenceScope.RULE,
        "liquidation_distance",
    )
    assert resolve_target("btcusdt", accounts, rules) == (SilenceScope.SYMBOL, "BTCUSDT")
    assert resolve_target("account:new_one", accounts, rules) == (SilenceScope.ACCOUNT, "new_one")
    with pytest.raises(ValueError, match="unknown target 'sub_9Ox'"):
        resolve_target("sub_9Ox", accounts, rules)  # a typo never mutes nothing silently


def test_a_silence_ends_at_its_time(make_alert: Any, clock: Any) -> None:
    from notifier.messages import from_alert

    silences = Silences()
    silences.apply(
        new_silence(
            SilenceScope.SYMBOL,
            "BTCUSDT",
            now=clock.now,
            until=clock.now + timedelta(hours=1),
            by="t",
        )
    )
    n = from_alert(make_alert(subject="BTCUSDT:Buy"))
    assert silences.muting(n, clock.now) is not None
    assert silences.muting(n, clock.now + timedelta(minutes=61)) is None


async def _app_with_bot(
    tmp_path: Path, telegram: Any, settings_for: Any, make_app: Any, clock: Any
) -> Any:
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    settings = settings_for(
        tmp_path, telegram=telegram, routing_file=str(routing), telegram_poll_seconds=0.2
    )
    app = await make_app(settings, clock)
    app._tasks.extend(app.start_bot())
    return app


async def _say(telegram: Any, chat: str, text: str, **kw: Any) -> str:
    before = len(telegram.messages)
    telegram.user_says(chat, text, **kw)
    await wait_until(lambda: len(telegram.messages) > before, message=f"reply to {text}")
    return str(telegram.messages[-1]["text"])


async def test_mute_by_bot_command_keeps_alerts_off_the_phone_but_in_the_file(
    tmp_path: Path,
    telegram: Any,
    settings_for: Any,
    make_app: Any,
    make_alert: Any,
    clock: Any,
    handle: Any,
) -> None:
    app = await _app_with_bot(tmp_path, telegram, settings_for, make_app, clock)
    await handle(app, make_alert(account="sub_90x", subject="ETHUSDT"))
    assert len(telegram.messages) == 1

    reply = await _say(telegram, DESK, "/mute sub_90x 1h margin call handled")
    assert reply.startswith("🔕 account sub_90x muted for 60 min")
    assert telegram.messages[-1]["reply_parameters"]["message_id"] >= 9000  # the command
    [saved] = app.silence_store.saved  # durable before the reply
    assert (saved.scope, saved.value, saved.by) == (
        SilenceScope.ACCOUNT,
        "sub_90x",
        f"telegram:{DESK}",
    )

    sent = len(telegram.messages)
    await handle(app, make_alert(account="sub_90x", subject="BTCUSDT", severity=Severity.CRITICAL))
    assert len(telegram.messages) == sent  # muted: not on the phone
    assert len((tmp_path / "alerts.jsonl").read_bytes().splitlines()) == 2  # still in the file
    clock.now += timedelta(minutes=31)
    assert await app.remind() == []  # nor repeated while muted
    clock.now -= timedelta(minutes=31)

    status = await _say(telegram, DESK, "/status")
    assert "Open alerts (2)" in status
    assert "account sub_90x muted for 60 min" in status
    assert "🔕 silences:" in await _say(telegram, DESK, "/silences")

    # a chat that is not configured gets no answer and changes nothing
    telegram.user_says(STRANGER, "/unmute all")
    await wait_until(
        lambda: not telegram.updates or telegram.update_offsets[-1] > 5004, message="polled"
    )
    assert len(app.silences.active(clock.now)) == 1

    assert (await _say(telegram, DESK, "/unmute sub_90x")) == "🔔 unmuted account sub_90x"
    await handle(app, make_alert(account="sub_90x", subject="SOLUSDT"))
    assert telegram.messages[-1]["text"].startswith("<b>🔴 HIGH · sub_90x")


async def test_ack_as_a_reply_to_an_alert_stops_its_repeats_until_it_resolves(
    tmp_path: Path,
    telegram: Any,
    settings_for: Any,
    make_app: Any,
    make_alert: Any,
    clock: Any,
    handle: Any,
) -> None:
    app = await _app_with_bot(tmp_path, telegram, settings_for, make_app, clock)
    alert = make_alert(account="sub_90x", severity=Severity.HIGH)
    other = make_alert(account="main", severity=Severity.HIGH, subject="ETHUSDT")
    await handle(app, alert, other)
    alert_message = next(i + 101 for i, m in enumerate(telegram.messages) if "sub_90x" in m["text"])
    reply = await _say(telegram, DESK, "/ack", reply_to_message_id=alert_message)
    assert reply.startswith("👍 acknowledged, no more repeats:\n🔴 HIGH · sub_90x")

    sent = len(telegram.messages)
    clock.now = alert.occurred_at + timedelta(minutes=31)
    await asyncio.gather(*await app.remind())
    repeats = telegram.messages[sent:]
    assert len(repeats) == 1  # only the alert nobody acknowledged
    assert "main" in repeats[0]["text"]

    # resolving ends the acknowledgement: the same alert raised again pages and repeats
    await handle(
        app, alert.model_copy(update={"event_id": "r", "transition": AlertTransition.RESOLVED})
    )
    assert app.silences.ack_of(alert.alert_id) is None
    assert app.silence_store.saved[-1].active is False


async def test_cli_mutes_and_lists_through_the_api_which_wants_a_token_beyond_loopback(
    tmp_path: Path,
    settings_for: Any,
    make_app: Any,
    clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = await make_app(settings_for(tmp_path, api_token=SecretStr("s3cret-api-token")), clock)
    await app.http.start()
    try:
        url = f"http://127.0.0.1:{app.http.port}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/api/command", json={"command": "/silences"}) as r,
        ):
            assert r.status == 401
            assert "s3cret" not in await r.text()
        monkeypatch.setenv("NOTIFIER_URL", url)
        monkeypatch.setenv("NOTIFIER_API_TOKEN", "s3cret-api-token")
        code = await asyncio.to_thread(cli, ["mute", "symbol:BTCUSDT", "30m"])
        assert code == 0
        assert "symbol BTCUSDT muted for 30 min" in capsys.readouterr().out
        assert await asyncio.to_thread(cli, ["silences"]) == 0
        assert "symbol BTCUSDT muted" in capsys.readouterr().out
        assert await asyncio.to_thread(cli, ["mute", "nobody", "1h"]) == 1
        assert "unknown target 'nobody'" in capsys.readouterr().err
        assert await asyncio.to_thread(cli, ["unmute", "symbol:BTCUSDT"]) == 0
        assert app.silences.active(clock.now) == []
    finally:
        await app.http.stop()


async def test_the_api_beyond_loopback_refuses_every_request_without_a_configured_token(
    tmp_path: Path, settings_for: Any, make_app: Any, clock: Any
) -> None:
    app = await make_app(settings_for(tmp_path, http_host="0.0.0.0"), clock)
    await app.http.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{app.http.port}/api/command", json={"command": "/mute x:y 1h"}
            ) as r,
        ):
            assert r.status == 401
            assert "needs NOTIFIER_API_TOKEN" in (await r.json())["text"]
        assert app.silence_store.saved == []
    finally:
        await app.http.stop()


async def test_a_dead_silence_reader_fails_the_service_instead_of_running_blind_to_mutes(
    tmp_path: Path, settings_for: Any, clock: Any, fake_time: Any
) -> None:
    from notifier.app import NotifierApp
    from notifier.silence_store import MemorySilenceStore

    broken = asyncio.Event()

    class DyingStore(MemorySilenceStore):
        async def follow(self, apply: Any, caught_up: asyncio.Event) -> None:
            caught_up.set()
            await broken.wait()  # loaded fine, then the topic becomes unreadable
            raise ConnectionError("silences topic unreadable")

    app = NotifierApp(
        settings_for(tmp_path), clock=clock, sleep=fake_time.sleep, silence_store=DyingStore()
    )
    await app.http.start()
    try:
        task = await app.start_silences()
        assert app.health.failed is None
        broken.set()
        await wait_until(lambda: task.done(), message="reader ended")
        assert app.health.failed is not None
        assert "silence reader failed" in app.health.failed
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{app.http.port}/healthz") as r,
        ):
            assert r.status == 503
    finally:
        await app.http.stop()
        await app.session.close()
