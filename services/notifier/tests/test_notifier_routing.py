"""The routing file: validation, routes to several chats, quiet hours and repeat reminders,
against the fake Telegram server over real HTTP with a fake clock."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from notifier.routing import RoutingError, load_routing
from riskwatch_common.contracts import AlertTransition, Severity

CONFIG = Path(__file__).resolve().parents[1] / "config"
DESK, LEAD = "-1001234567890", "123456789"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    return path


def test_shipped_example_and_demo_routing_files_load() -> None:
    example = load_routing(CONFIG / "routing.example.yaml")
    assert set(example.channels) == {
        "desk",
        "risk-lead",
        "team-slack",
        "risk-slack",
        "console",
        "file",
    }
    assert example.channels["desk"].floor == Severity.WARNING  # phones: WARNING and up
    assert example.channels["risk-lead"].repeat_minutes == 15
    demo = load_routing(CONFIG / "routing.demo.yaml")
    assert demo.channels["console"].min_interval_seconds == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "channels: {a: {type: telegram, chat_id: '1', min_severity: LOUD}}\nroutes: [{to: a}]",
            "channels.a.min_severity: Input should be 'INFO', 'WARNING', 'HIGH' or 'CRITICAL'",
        ),
        ("channels: {a: {type: console}}\nroutes: [{to: b}]", "unknown channel 'b'"),
        ("channels: {a: {type: slack}}\nroutes: [{to: a}]", "needs webhook_url_env"),
        (
            "channels: {a: {type: console}}\nroutes: [{to: a}]\nchannels: {}",
            "at line 3: duplicate key 'channels'",
        ),
        ("channels: {a: {type: console, colour: red}}\nroutes: [{to: a}]", "a.colour: Extra"),
        ("- just a list", "expected a mapping with channels and routes"),
    ],
)
def test_a_bad_routing_file_is_one_line_naming_file_and_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RoutingError) as err:
        load_routing(path)
    message = str(err.value)
    assert message.startswith(f"routing file {path}")
    assert problem in message
    assert "\n" not in message


def test_the_notifier_exits_2_on_a_bad_routing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "channels: {a: {type: console, min_severity: LOUD}}\nroutes: [{to: a}]")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    env["NOTIFIER_ROUTING_FILE"] = str(path)
    done = subprocess.run(
        [sys.executable, "-m", "notifier"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "NOTIFIER_ROUTING_FILE" in line
    assert f"routing file {path}: channels.a.min_severity" in line


ROUTING = f"""
channels:
  desk: {{type: telegram, chat_id: "{DESK}", quiet_hours: {{start: "23:00", end: "07:00"}}}}
  lead: {{type: telegram, chat_id: "{LEAD}", min_severity: HIGH, repeat_minutes: 30}}
  file: {{type: file}}
groups:
  leveraged: [sub_90x]
routes:
  - to: [desk, file]
  - match: {{group: leveraged}}
    to: lead
"""


async def test_routes_send_to_two_chats_by_group_and_minimum_severity(
    tmp_path: Path,
    telegram: Any,
    settings_for: Any,
    make_app: Any,
    make_alert: Any,
    clock: Any,
    handle: Any,
) -> None:
    settings = settings_for(tmp_path, telegram=telegram, routing_file=str(write(tmp_path, ROUTING)))
    app = await make_app(settings, clock)
    await handle(
        app,
        make_alert(account="sub_90x", severity=Severity.HIGH, subject="A"),
        make_alert(account="sub_90x", severity=Severity.WARNING, subject="B"),
        make_alert(account="main", severity=Severity.HIGH, subject="C"),
        make_alert(account="main", severity=Severity.INFO, subject="D"),
    )
    by_chat: dict[str, list[str]] = {}
    for m in telegram.messages:
        by_chat.setdefault(m["chat_id"], []).append(m["text"].split("\n")[0])
    assert by_chat[LEAD] == ["<b>🔴 HIGH · sub_90x · net exposure 12,500 USD</b>"]
    assert sorted(by_chat[DESK]) == sorted(
        [
            "<b>🔴 HIGH · sub_90x · net exposure 12,500 USD</b>",
            "<b>🟠 WARNING · sub_90x · net exposure 12,500 USD</b>",
            "<b>🔴 HIGH · main · net exposure 12,500 USD</b>",
        ]
    )  # INFO stays off the phones
    assert len((tmp_path / "alerts.jsonl").read_bytes().splitlines()) == 4


async def test_quiet_hours_hold_back_all_but_critical_and_the_file_still_gets_them(
    tmp_path: Path,
    telegram: Any,
    settings_for: Any,
    make_app: Any,
    make_alert: Any,
    clock: Any,
    handle: Any,
) -> None:
    settings = settings_for(
        tmp_path,
        telegram=telegram,
        routing_file=str(write(tmp_path, ROUTING)),
        timezone="Europe/Berlin",
    )
    clock.now = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)  # 02:30 in Berlin
    app = await make_app(settings, clock)
    await handle(
        app,
        make_alert(account="main", severity=Severity.HIGH, subject="H"),
        make_alert(account="main", severity=Severity.CRITICAL, subject="C"),
    )
    assert [m["text"].split("\n")[0] for m in telegram.messages] == [
        "<b>🚨 CRITICAL · main · net exposure 12,500 USD</b>"
    ]
    assert len((tmp_path / "alerts.jsonl").read_bytes().splitlines()) == 2


async def test_an_open_high_alert_repeats_every_interval_with_current_numbers_until_resolved(
    tmp_path: Path,
    telegram: Any,
    settings_for: Any,
    make_app: Any,
    make_alert: Any,
    clock: Any,
    handle: Any,
) -> None:
    settings = settings_for(tmp_path, telegram=telegram, routing_file=str(write(tmp_path, ROUTING)))
    app = await make_app(settings, clock)
    alert = make_alert(account="sub_90x", severity=Severity.HIGH)
    await handle(app, alert)
    lead = [m for m in telegram.messages if m["chat_id"] == LEAD]
    assert len(lead) == 1

    async def remind_at(minutes: int) -> list[str]:
        clock.now = alert.occurred_at + timedelta(minutes=minutes)
        await asyncio.gather(*await app.remind())
        return [m["text"] for m in telegram.messages if m["chat_id"] == LEAD][1:]

    assert await remind_at(10) == []
    # the engine's 'updated' transition moves the numbers; the reminder shows them
    moved = alert.model_copy(
        update={
            "event_id": "upd",
            "transition": AlertTransition.UPDATED,
            "numbers": {"net": Decimal("18750.2")},
        }
    )
    await handle(app, moved)
    [reminder] = await remind_at(30)
    assert reminder.startswith("<b>🔴 HIGH · sub_90x · net exposure 18,750 USD</b>")
    assert "🔁 still open after 30 min" in reminder
    assert len(await remind_at(45)) == 1  # not again before another 30 min
    assert len(await remind_at(60)) == 2
    await handle(
        app, alert.model_copy(update={"event_id": "res", "transition": AlertTransition.RESOLVED})
    )
    assert len(await remind_at(120)) == 3  # the resolve itself, then no more repeats
    assert telegram.messages[-1]["text"].startswith("<b>✅ RESOLVED")
