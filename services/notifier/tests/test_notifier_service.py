"""The notifier end to end on the real broker: alert and analysis in, file/Telegram out."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from notifier.app import NotifierApp
from riskwatch_common import topics
from riskwatch_common.contracts import (
    AlertTransition,
    ExposureScope,
    ExposureSnapshotted,
    NotificationDelivered,
    RiskLevel,
    derived_event_id,
)
from riskwatch_common.kafka import Producer
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import read_topic, wait_until

pytestmark = pytest.mark.integration


async def test_alert_and_analysis_reach_file_console_and_telegram_with_outcome_events(
    kafka: KafkaSettings,
    tmp_path: Path,
    telegram: Any,
    settings_for: Any,
    make_alert: Any,
    make_analysis: Any,
) -> None:
    settings = settings_for(
        tmp_path, telegram=telegram, kafka=kafka, telegram_min_interval_seconds=0
    )
    stdout = io.StringIO()
    app = NotifierApp(settings, stdout=stdout)
    producer = Producer(kafka, service="test")
    await producer.start()
    await app.start()
    try:
        alert = make_alert(account="sub_trading")
        snapshot = ExposureSnapshotted(
            event_id="snap-1",
            occurred_at=alert.occurred_at,
            produced_at=alert.occurred_at,
            source="risk-processor/0",
            correlation_id="c",
            scope=ExposureScope.ACCOUNT,
            account="sub_trading",
            total_long=Decimal("12500.4"),
            total_short=Decimal(0),
            net=Decimal("12500.4"),
            gross=Decimal("12500.4"),
            equity=Decimal("50000"),
            unrealised_pnl=Decimal("-120.456"),
            risk_level=RiskLevel.MEDIUM,
        )
        await producer.send_and_wait(topics.EXPOSURES, "sub_trading", snapshot)
        await wait_until(lambda: "sub_trading" in app.exposures, message="snapshot read")
        await producer.send_and_wait(topics.ALERTS, alert.account, alert)
        await wait_until(lambda: len(telegram.messages) == 1, message="alert on telegram")
        assert (
            "Equity 50,000 USD · Net 12,500 USD · UPL -120.46 USD" in telegram.messages[0]["text"]
        )
        # an 'updated' transition refreshes the open alert but never pages
        updated = alert.model_copy(
            update={"event_id": "upd-1", "transition": AlertTransition.UPDATED}
        )
        await producer.send_and_wait(topics.ALERTS, alert.account, updated)
        await wait_until(
            lambda: app.open_alerts[alert.alert_id].event_id == "upd-1", message="refreshed"
        )
        analysis = make_analysis(alert)
        await producer.send_and_wait(topics.ANALYSES, analysis.account, analysis)
        # a redelivered alert (same event id) must not go out again
        await producer.send_and_wait(topics.ALERTS, alert.account, alert)
        await wait_until(lambda: len(telegram.messages) == 2, message="analysis on telegram")

        records = await read_topic(kafka, topics.NOTIFICATIONS, min_records=6)
        events = [topics.NOTIFICATIONS.decode(value) for _, value in records]
        assert {key for key, _ in records} == {b"sub_trading"}
        assert all(isinstance(e, NotificationDelivered) for e in events)
        assert sorted((e.channel, e.source_event_id) for e in events) == sorted(
            (channel, source)
            for channel in ("console", "file", "telegram")
            for source in (alert.event_id, analysis.event_id)
        )
        file_event = next(
            e for e in events if e.channel == "file" and e.source_event_id == alert.event_id
        )
        assert file_event.event_id == derived_event_id(
            "notification", "file", alert.event_id, "delivered"
        )
        assert file_event.correlation_id == alert.correlation_id

        lines = [orjson.loads(x) for x in (tmp_path / "alerts.jsonl").read_bytes().splitlines()]
        assert [(x["kind"], x["event_id"]) for x in lines] == [
            ("alert", alert.event_id),
            ("analysis", analysis.event_id),
        ]
        assert lines[0]["numbers"] == {"net": "12500.4", "threshold": "10000"}
        assert lines[0]["correlation_id"] == "corr-7f3a"
        assert telegram.messages[1]["reply_parameters"]["message_id"] == 101
        assert stdout.getvalue().count("corr=corr-7f3a") == 2
    finally:
        await app.stop()
        await producer.stop()


async def test_a_silence_survives_a_restart_on_the_compacted_topic(
    kafka: KafkaSettings, tmp_path: Path, settings_for: Any
) -> None:
    settings = settings_for(tmp_path, kafka=kafka)
    first = NotifierApp(settings)
    await first.start()
    try:
        reply = await first.command("/mute symbol:BTCUSDT 2h", by="test")
        assert reply.ok
    finally:
        await first.stop()
    second = NotifierApp(settings_for(tmp_path / "2", kafka=kafka))
    await second.start()  # reads notify.silences.v1 back before consuming alerts
    try:
        [silence] = second.silences.active(second.state().now)
        assert (silence.scope.value, silence.value, silence.by) == ("symbol", "BTCUSDT", "test")
    finally:
        await second.stop()
