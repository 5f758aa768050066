"""'Monitoring stalled' when a group's heartbeats stop, straight to Telegram; resolved when
data flows again; the dead-man's switch pinged only while the chain is fresh."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from notifier.settings import NotifierSettings
from notifier.watchdog import Watchdog
from riskwatch_common.contracts import AlertTransition, PipelineHeartbeat, derived_event_id
from riskwatch_common.fakes import FakeDeadman
from riskwatch_common.settings import KafkaSettings

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def beat(group: str, at: datetime, account: str = "sub_90x") -> PipelineHeartbeat:
    return PipelineHeartbeat(
        event_id=derived_event_id("hb", group, account, at.isoformat()),
        occurred_at=at,
        produced_at=at,
        source=f"ingestor/{group}",
        correlation_id="hb",
        account=account,
        group=group,
        link_up=True,
    )


def test_a_group_stalls_once_and_recovers_once() -> None:
    dog = Watchdog(stall_after=timedelta(seconds=30), started_at=T0, expected=frozenset({"b"}))
    dog.beat(beat("old", T0 - timedelta(hours=3)), T0)  # a replayed backlog: not watched
    dog.beat(beat("a", T0), T0)
    assert dog.check(T0 + timedelta(seconds=29)) == []
    changes = dog.check(T0 + timedelta(seconds=31))
    # "b" never reported since startup: blind for it too
    assert [(c.group, c.transition) for c in changes] == [
        ("a", AlertTransition.RAISED),
        ("b", AlertTransition.RAISED),
    ]
    assert dog.check(T0 + timedelta(seconds=40)) == []  # raised once, not every check
    now = T0 + timedelta(seconds=42)
    dog.beat(beat("a", T0 + timedelta(seconds=41)), now)
    dog.beat(beat("a", T0 + timedelta(seconds=5)), now)  # an old one arriving late: nothing
    [change] = dog.check(T0 + timedelta(seconds=42))
    assert (change.group, change.transition) == ("a", AlertTransition.RESOLVED)
    assert not dog.fresh(T0 + timedelta(seconds=42))  # "b" is still silent


@pytest.fixture
async def deadman() -> AsyncIterator[FakeDeadman]:
    fake = FakeDeadman()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_stalled_group_is_an_alert_on_telegram_and_the_deadman_waits_for_fresh_data(
    tmp_path: Path,
    telegram: Any,
    deadman: FakeDeadman,
    settings_for: Any,
    make_app: Any,
    clock: Any,
    handle: Any,
) -> None:
    settings = settings_for(tmp_path, telegram=telegram, deadman_url=SecretStr(deadman.url))
    app = await make_app(settings, clock)
    await handle(app, beat("group-a", clock.now))
    await asyncio.gather(*await app.watch())
    assert len(deadman.pings) == 1  # fresh: pinged

    clock.now += timedelta(seconds=31)
    await asyncio.gather(*await app.watch())
    [stalled] = telegram.messages
    assert stalled["text"].startswith(
        "<b>🚨 CRITICAL · pipeline · monitoring stalled: no fresh data from group-a for 31 s</b>"
    )
    [record] = [orjson.loads(x) for x in (tmp_path / "alerts.jsonl").read_bytes().splitlines()]
    assert (record["kind"], record["rule"]) == ("monitoring", "monitoring_stalled")
    clock.now += timedelta(seconds=60)
    await asyncio.gather(*await app.watch())
    assert len(deadman.pings) == 1  # blind: no ping, so the outside check fires

    await handle(app, beat("group-a", clock.now))
    await asyncio.gather(*await app.watch())
    assert telegram.messages[-1]["text"].startswith(
        "<b>✅ RESOLVED · pipeline · data flows again from group-a</b>"
    )
    assert len(deadman.pings) == 2
    assert len(telegram.messages) == 2


def test_the_deadman_url_must_be_https_beyond_loopback() -> None:
    with pytest.raises(ValueError, match="must be an https:"):
        NotifierSettings(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
            deadman_url=SecretStr("http://hc-ping.example.com/abc"),
        )
