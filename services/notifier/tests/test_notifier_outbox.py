"""A channel down for an hour loses nothing and sends nothing twice, across a restart."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from riskwatch_common.contracts import NotificationDelivered, NotificationFailed, Severity


async def test_an_hour_long_outage_with_a_restart_in_the_middle_delivers_each_alert_once(
    tmp_path: Path,
    telegram: Any,
    settings_for: Any,
    make_app: Any,
    stop_app: Any,
    make_alert: Any,
    clock: Any,
    handle: Any,
) -> None:
    settings = settings_for(tmp_path, telegram=telegram)
    alerts = [make_alert(account=f"acct{i}", severity=Severity.HIGH) for i in range(3)]
    telegram.down = True
    first = await make_app(settings, clock)
    await handle(first, *alerts)  # in-line attempts fail: kept in the outbox, batch commits
    assert telegram.messages == []
    assert len(first.outbox.pending) == 3
    clock.now += timedelta(minutes=30)
    assert await first.retry_outbox() == []  # still down: retried, still kept
    assert len(first.outbox.pending) == 3
    await stop_app(first)

    second = await make_app(settings, clock)  # a restart: the outbox is read back
    assert len(second.outbox.pending) == 3
    telegram.down = False
    clock.now += timedelta(minutes=31)
    events = await second.retry_outbox()
    assert sorted(e.source_event_id for _, e in events) == sorted(a.event_id for a in alerts)
    assert all(isinstance(e, NotificationDelivered) for _, e in events)
    assert len(telegram.messages) == 3
    assert len({m["text"] for m in telegram.messages}) == 3
    # Kafka redelivers the uncommitted tail after a restart: nothing goes out twice
    await handle(second, alerts[0])
    assert len(telegram.messages) == 3
    await stop_app(second)

    third = await make_app(settings, clock)
    assert third.outbox.pending == {}
    assert await third.retry_outbox() == []
    assert len(telegram.messages) == 3


async def test_an_undeliverable_alert_is_given_up_after_its_ttl_with_a_failure_event(
    tmp_path: Path,
    telegram: Any,
    settings_for: Any,
    make_app: Any,
    make_alert: Any,
    clock: Any,
    handle: Any,
) -> None:
    app = await make_app(settings_for(tmp_path, telegram=telegram), clock)
    telegram.down = True
    alert = make_alert(severity=Severity.CRITICAL)
    await handle(app, alert)
    clock.now += timedelta(hours=23)
    assert await app.retry_outbox() == []
    clock.now += timedelta(hours=1, seconds=1)
    [(key, event)] = await app.retry_outbox()
    assert key == alert.account
    assert isinstance(event, NotificationFailed)
    assert event.error.startswith("not delivered within 1 day, 0:00:00: telegram HTTP 502")
    assert app.outbox.pending == {}
    assert telegram.messages == []


async def test_a_client_error_is_final_and_never_kept(
    tmp_path: Path,
    telegram: Any,
    settings_for: Any,
    make_app: Any,
    make_alert: Any,
    clock: Any,
    handle: Any,
) -> None:
    app = await make_app(settings_for(tmp_path, telegram=telegram), clock)
    telegram.fail(403, "Forbidden: bot was kicked from the supergroup chat")
    await handle(app, make_alert())
    assert app.outbox.pending == {}
