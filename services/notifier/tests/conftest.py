"""The fake Telegram and Slack servers (riskwatch_common.fakes) as fixtures, plus event builders."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from notifier.app import NotifierApp, build_channels
from notifier.dedup import DeliveryLog
from notifier.delivery import Dispatcher, RetryPolicy
from notifier.settings import NotifierSettings
from notifier.silence_store import MemorySilenceStore
from riskwatch_common.contracts import (
    AlertTransition,
    AnalysisCompleted,
    AnalysisMode,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    derived_event_id,
    new_event_id,
)
from riskwatch_common.fakes import (
    TELEGRAM_CHAT_ID,
    TELEGRAM_TOKEN,
    FakeSlack,
    FakeTelegram,
    telegram_accepts,
)
from riskwatch_common.kafka import RecordMeta
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import ALERTS

CHAT_ID = TELEGRAM_CHAT_ID
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram(TELEGRAM_TOKEN)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


class FakeTime:
    """Monotonic time that a sleep advances at once; records every wait asked for."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def settings_for(
    tmp_path: Path,
    *,
    telegram: FakeTelegram | None = None,
    slack: FakeSlack | None = None,
    kafka: KafkaSettings | None = None,
    **overrides: Any,
) -> NotifierSettings:
    values: dict[str, Any] = {
        "kafka": kafka or KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        "http_port": 0,
        "alerts_file": str(tmp_path / "alerts.jsonl"),
        "delivery_log": str(tmp_path / "delivered.jsonl"),
        "outbox": str(tmp_path / "outbox.jsonl"),
        "telegram_bot_token": SecretStr(telegram.token) if telegram else None,
        "telegram_chat_id": CHAT_ID if telegram else None,
        "telegram_api_base": telegram.base if telegram else "https://api.telegram.org",
        "slack_webhook_url": SecretStr(slack.webhook_url) if slack else None,
        "request_timeout_seconds": 2,
        "max_attempts": 3,
    }
    values.update(overrides)
    return NotifierSettings(**values)


class Stack:
    """Channels + dispatcher as the app builds them, without Kafka."""

    def __init__(self, settings: NotifierSettings, fake_time: FakeTime) -> None:
        self.settings = settings
        self.stdout = io.StringIO()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.request_timeout_seconds)
        )
        self.delivery_log = DeliveryLog(settings.delivery_log, capacity=settings.dedup_capacity)
        self.dispatcher = Dispatcher(
            build_channels(
                settings, self.session, stdout=self.stdout, delivery_log=self.delivery_log
            ),
            delivery_log=self.delivery_log,
            policy=RetryPolicy(
                max_attempts=settings.max_attempts,
                base_seconds=settings.retry_base_seconds,
                max_seconds=settings.retry_max_seconds,
                max_retry_after_seconds=settings.max_retry_after_seconds,
            ),
            sleep=fake_time.sleep,
            monotonic=fake_time.monotonic,
        )

    async def start(self) -> Stack:
        self.delivery_log.open()
        self.dispatcher.start()
        return self

    async def send(self, notification: Any) -> dict[str, Any]:
        """Dispatch and wait; returns the outcomes by channel."""
        futures = await self.dispatcher.dispatch(notification)
        return {o.channel: o for o in await asyncio.gather(*futures)}

    async def close(self) -> None:
        await self.dispatcher.stop()
        await self.session.close()
        self.delivery_log.close()


@pytest.fixture
async def make_stack(fake_time: FakeTime) -> AsyncIterator[Any]:
    stacks: list[Stack] = []

    async def _make(settings: NotifierSettings) -> Stack:
        stack = await Stack(settings, fake_time).start()
        stacks.append(stack)
        return stack

    yield _make
    for stack in stacks:
        await stack.close()


@pytest.fixture(name="settings_for")
def settings_for_fixture() -> Any:
    return settings_for


def make_alert(
    *,
    transition: AlertTransition = AlertTransition.RAISED,
    severity: Severity = Severity.HIGH,
    account: str = "main",
    rule: str = "net_exposure_usd",
    subject: str = "BTCUSDT",
    reason: str = "net exposure 12,500 USD above the 10,000 limit",
    numbers: dict[str, Decimal] | None = None,
    event_id: str | None = None,
) -> RiskAlertChanged:
    return RiskAlertChanged(
        event_id=event_id or new_event_id(),
        occurred_at=NOW,
        produced_at=NOW,
        source="risk-processor/0",
        correlation_id="corr-7f3a",
        alert_id=f"{account}:{rule}:{subject}",
        transition=transition,
        account=account,
        rule=rule,
        subject=subject,
        severity=severity,
        risk_level=RiskLevel.HIGH,
        reason=reason,
        numbers=numbers
        if numbers is not None
        else {"net": Decimal("12500.4"), "threshold": Decimal("10000")},
    )


def make_analysis(
    alert: RiskAlertChanged, text_html: str = "<b>Reduce BTCUSDT</b> by 2,500 USD"
) -> AnalysisCompleted:
    return AnalysisCompleted(
        event_id=derived_event_id("analysis", alert.event_id),
        occurred_at=NOW,
        produced_at=NOW,
        source="ai-analyst/0",
        correlation_id=alert.correlation_id,
        alert_id=alert.alert_id,
        alert_event_id=alert.event_id,
        account=alert.account,
        rule=alert.rule,
        severity=alert.severity,
        mode=AnalysisMode.LLM,
        model="gpt-4.1",
        text_html=text_html,
        hedging_ideas=("Short 0.1 BTCUSDT perp", "Buy a put"),
        prompt_tokens=900,
        completion_tokens=120,
        cost_usd=Decimal("0.00276"),
    )


@pytest.fixture(name="make_alert")
def make_alert_fixture() -> Any:
    return make_alert


@pytest.fixture(name="make_analysis")
def make_analysis_fixture() -> Any:
    return make_analysis


@pytest.fixture(name="telegram_accepts")
def telegram_accepts_fixture() -> Any:
    """Whether the fake Telegram would parse a text sent with parse_mode=HTML."""
    return telegram_accepts


META = RecordMeta(ALERTS, ALERTS.name, 0, 0, None, 0)


class Clock:
    """The app's injected wall clock; tests move it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_app(fake_time: FakeTime) -> AsyncIterator[Any]:
    """A NotifierApp without Kafka: channels, dispatcher, silences in memory, fake time."""
    apps: list[NotifierApp] = []

    async def _make(settings: NotifierSettings, clock: Clock) -> NotifierApp:
        app = NotifierApp(
            settings,
            clock=clock,
            sleep=fake_time.sleep,
            monotonic=fake_time.monotonic,
            silence_store=MemorySilenceStore(),
        )
        app.delivery_log.open()
        app.outbox.open()
        app.dispatcher.start()
        await app.start_silences()
        apps.append(app)
        return app

    yield _make
    for app in apps:
        await stop_app(app)


async def stop_app(app: NotifierApp) -> None:
    """What a process exit leaves behind: the files; nothing in memory."""
    for task in app._tasks:
        task.cancel()
    await app.dispatcher.stop()
    await app.session.close()
    app.delivery_log.close()
    app.outbox.close()


@pytest.fixture(name="stop_app")
def stop_app_fixture() -> Any:
    return stop_app


@pytest.fixture(name="handle")
def handle_fixture() -> Any:
    async def _handle(app: NotifierApp, *events: Any) -> None:
        """Handle records as the consumer would and wait for every channel's outcome."""
        for event in events:
            await app.handle(event, META)
        app.settle(await app.finish_batch())

    return _handle
