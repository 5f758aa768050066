"""Blindness is an alert: heartbeats per account, a link down too long, a key about to expire.

The pure watch with a fake clock, then the ingestor against the simulator (real WebSocket,
REST and broker): heartbeats, a key expiring in 3 days reported key_expiring with its
expiry, streams that cannot resync reported link_down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingestor.linkwatch import AccountView, LinkWatch
from riskwatch_common.contracts import AccountStatusChanged, PipelineHeartbeat, StreamStatus
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import FakeClock, read_topic, wait_until
from riskwatch_common.topics import ACCOUNT_EVENTS

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def watch(clock: FakeClock) -> LinkWatch:
    return LinkWatch(
        group="g",
        source="ingestor/g",
        link_down_after=timedelta(seconds=60),
        key_warn_before=timedelta(days=7),
        clock=clock,
    )


def view(name: str, up: bool, *, auth_failed: bool = False) -> AccountView:
    return AccountView(name, up, auth_failed, T0 if up else None, "" if up else "retry in 2s")


def statuses(events: list[Any]) -> list[tuple[str, StreamStatus]]:
    return [(e.account, e.status) for e in events if isinstance(e, AccountStatusChanged)]


def test_every_tick_gives_each_account_a_heartbeat_with_group_and_link_state() -> None:
    clock = FakeClock(T0)
    w = watch(clock)

    events = w.tick([view("main", True), view("sub", False)])

    beats = [e for e in events if isinstance(e, PipelineHeartbeat)]
    assert [(b.account, b.group, b.link_up) for b in beats] == [
        ("main", "g", True),
        ("sub", "g", False),
    ]
    assert beats[0].last_exchange_message_at == T0
    assert beats[0].event_id != w.tick([view("main", True)])[0].event_id


def test_link_down_is_reported_once_past_the_threshold_and_again_after_recovering() -> None:
    clock = FakeClock(T0)
    w = watch(clock)
    assert statuses(w.tick([view("main", False)])) == []
    clock.now += timedelta(seconds=59)
    assert statuses(w.tick([view("main", False)])) == []

    clock.now += timedelta(seconds=1)
    (down,) = [e for e in w.tick([view("main", False)]) if isinstance(e, AccountStatusChanged)]
    assert down.status is StreamStatus.LINK_DOWN
    assert down.down_since == T0
    assert down.reason == "private stream down for 60s: retry in 2s"
    clock.now += timedelta(seconds=30)
    assert statuses(w.tick([view("main", False)])) == []  # once per outage

    w.tick([view("main", True)])
    clock.now += timedelta(seconds=61)
    w.tick([view("main", False)])
    clock.now += timedelta(seconds=61)
    assert statuses(w.tick([view("main", False)])) == [("main", StreamStatus.LINK_DOWN)]


def test_a_rejected_key_is_not_also_reported_as_link_down() -> None:
    clock = FakeClock(T0)
    w = watch(clock)
    w.tick([view("main", False, auth_failed=True)])
    clock.now += timedelta(seconds=600)

    assert statuses(w.tick([view("main", False, auth_failed=True)])) == []


def test_key_expiring_within_7_days_is_reported_once_then_ok_when_renewed() -> None:
    clock = FakeClock(T0)
    w = watch(clock)

    assert w.key_checked("main", None) is None
    assert w.key_checked("main", T0 + timedelta(days=8)) is None
    soon = T0 + timedelta(days=3)
    event = w.key_checked("main", soon)
    assert event is not None
    assert event.status is StreamStatus.KEY_EXPIRING
    assert event.key_expires_at == soon
    assert event.reason == "API key expires in 3 days (2026-03-04 12:00 UTC): renew it on Bybit"
    assert w.key_checked("main", soon) is None  # not again for the same key

    renewed = T0 + timedelta(days=90)
    ok = w.key_checked("main", renewed)
    assert ok is not None
    assert ok.status is StreamStatus.KEY_OK
    assert ok.key_expires_at == renewed


def test_an_expired_key_says_so() -> None:
    clock = FakeClock(T0)
    event = watch(clock).key_checked("main", T0 - timedelta(hours=1))
    assert event is not None
    assert event.reason.startswith("API key expired (")


StartSim = Any
RunIngestor = Any
H = Any
SCENARIOS = Path(__file__).resolve().parents[2] / "bybit_sim" / "scenarios"


@pytest.mark.integration
async def test_ingestor_emits_heartbeats_and_reports_an_expiring_key_and_a_dead_link(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    from bybit_sim.scenario import load_scenario

    scenario = load_scenario(SCENARIOS / "sample_portfolio.yaml")
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    accounts = tuple(
        a.model_copy(update={"key": a.key.model_copy(update={"expires_at": expires})})
        if a.name == "main"
        else a
        for a in scenario.accounts
    )
    sim = await start_sim(scenario.model_copy(update={"accounts": accounts}))
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", ["main", "sub_trading"])
    settings = h.fast_settings(
        kafka,
        path,
        heartbeat_interval_s=0.2,
        link_down_alert_s=1.0,
        expiry_check_interval_s=0.5,
    )
    running = await run_ingestor(settings, h.load(path, env))
    await wait_until(lambda: running.app.health.ready)

    def events() -> Any:
        return read_topic(kafka, ACCOUNT_EVENTS, min_records=1)

    async def seen(pred: Any) -> bool:
        return any(pred(ACCOUNT_EVENTS.decode(v)) for _, v in await events())

    await wait_until(
        lambda: seen(
            lambda e: (
                isinstance(e, PipelineHeartbeat)
                and e.account == "sub_trading"
                and e.group == "g"
                and e.link_up
                and e.last_exchange_message_at is not None
            )
        ),
        timeout=20,
        message="a heartbeat with link up",
    )
    await wait_until(
        lambda: seen(
            lambda e: (
                isinstance(e, AccountStatusChanged)
                and e.account == "main"
                and e.status is StreamStatus.KEY_EXPIRING
                and e.key_expires_at == expires
            )
        ),
        timeout=20,
        message="key_expiring for main",
    )

    # Bybit bans the IP: no resync can finish, so the private streams stay down.
    await sim.fault(kind="ip_ban", duration_s=60)
    await sim.fault(kind="disconnect", account="sub_trading")

    await wait_until(
        lambda: seen(
            lambda e: (
                isinstance(e, AccountStatusChanged)
                and e.account == "sub_trading"
                and e.status is StreamStatus.LINK_DOWN
            )
        ),
        timeout=30,
        message="link_down for sub_trading",
    )
    assert await seen(
        lambda e: isinstance(e, PipelineHeartbeat) and e.account == "sub_trading" and not e.link_up
    )
