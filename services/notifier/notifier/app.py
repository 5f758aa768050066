"""Composition root of the notifier: Kafka in and out, channels, health and metrics.

Alerts are queued on every channel the moment they are handled; analyses of the same
batch are queued after them, so a follow-up never overtakes its alert on a channel. The
batch's offsets are committed only after every channel reached a final outcome for every
record of the batch and the outcome events were acknowledged: a crash redelivers, and
the delivery log keeps redelivered records from being sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TextIO

import aiohttp

from notifier import metrics
from notifier.channels import Channel, ConsoleChannel, FileChannel
from notifier.dedup import DeliveryLog
from notifier.delivery import Dispatcher, Outcome, RetryPolicy
from notifier.messages import Context, Notification, from_alert, from_analysis
from notifier.routing import ChannelConfig, ChannelType, Router, RoutingFile
from notifier.settings import SERVICE, NotifierSettings
from notifier.slack import SlackChannel
from notifier.telegram import TelegramChannel
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import (
    AlertTransition,
    AnalysisCompleted,
    ExposureSnapshotted,
    NotificationDelivered,
    NotificationFailed,
    RiskAlertChanged,
    Severity,
    derived_event_id,
)
from riskwatch_common.kafka import BrokerProbe, Consumer, Producer, RecordMeta
from riskwatch_common.logs import register_secret
from riskwatch_common.runtime import Health, HttpServer
from riskwatch_common.topics import ALERTS, ANALYSES, EXPOSURES, NOTIFICATIONS

log = logging.getLogger(__name__)

REMINDER_CHECK_SECONDS = 10.0


def outcome_event(
    outcome: Outcome, *, source: str, now: Clock
) -> NotificationDelivered | NotificationFailed:
    """The NOTIFICATIONS record of one channel's final outcome for one source event."""
    n = outcome.notification
    at = now()
    common = {
        "occurred_at": at,
        "produced_at": at,
        "source": source,
        "correlation_id": n.correlation_id,
        "channel": outcome.channel,
        "kind": n.kind,
        "alert_id": n.alert_id,
        "source_event_id": n.source_event_id,
        "attempts": max(outcome.attempts, 1),
    }
    if outcome.delivered:
        return NotificationDelivered(
            event_id=derived_event_id(
                "notification", outcome.channel, n.source_event_id, "delivered"
            ),
            **common,
        )
    return NotificationFailed(
        event_id=derived_event_id("notification", outcome.channel, n.source_event_id, "failed"),
        error=outcome.error or "not delivered",
        **common,
    )


def build_channels(
    settings: NotifierSettings,
    session: aiohttp.ClientSession,
    *,
    routing: RoutingFile | None = None,
    stdout: TextIO | None = None,
    delivery_log: DeliveryLog | None = None,
) -> list[Channel]:
    """The channels of the routing file (or of the env settings), by their names."""
    routing = routing or settings.routing()
    channels: list[Channel] = []
    token = settings.telegram_bot_token
    for name, c in routing.channels.items():
        if c.type == ChannelType.CONSOLE:
            channels.append(
                ConsoleChannel(stdout, name=name, min_interval_seconds=c.min_interval_seconds or 0)
            )
        elif c.type == ChannelType.FILE:
            path = c.path or settings.alerts_file
            if path:
                channels.append(FileChannel(path, name=name))
            else:
                log.info("file channel disabled: NOTIFIER_ALERTS_FILE is empty")
        elif c.type == ChannelType.TELEGRAM:
            if token is None or c.chat_id is None:
                log.info("telegram disabled: no NOTIFIER_TELEGRAM_BOT_TOKEN")
                continue
            channels.append(
                TelegramChannel(
                    session,
                    name=name,
                    token=token.get_secret_value(),
                    chat_id=c.chat_id,
                    api_base=settings.telegram_api_base,
                    min_interval_seconds=_interval(c, settings.telegram_min_interval_seconds),
                    delivered_ref=_ref_lookup(delivery_log, name),
                )
            )
        else:
            url = (
                os.environ.get(c.webhook_url_env or "", "").strip()
                if settings.routing_file
                else settings.slack_webhook_url.get_secret_value()
                if settings.slack_webhook_url is not None
                else ""
            )
            if not url:
                log.info("slack disabled: no webhook URL", extra={"channel": name})
                continue
            register_secret(url)
            channels.append(
                SlackChannel(
                    session,
                    name=name,
                    webhook_url=url,
                    min_interval_seconds=_interval(c, settings.slack_min_interval_seconds),
                )
            )
    if not any(c.type == ChannelType.TELEGRAM for c in routing.channels.values()):
        if token is None:
            log.info("telegram disabled: no NOTIFIER_TELEGRAM_BOT_TOKEN")
        else:
            log.warning("telegram disabled: no NOTIFIER_TELEGRAM_CHAT_ID")
    if not any(c.type == ChannelType.SLACK for c in routing.channels.values()):
        log.info("slack disabled: no NOTIFIER_SLACK_WEBHOOK_URL")
    for channel in channels:
        metrics.CHANNEL_ENABLED.labels(channel.name).set(1)
    return channels


def _interval(config: ChannelConfig, default: float) -> float:
    return default if config.min_interval_seconds is None else config.min_interval_seconds


def _ref_lookup(delivery_log: DeliveryLog | None, channel: str) -> Callable[[str], object] | None:
    if delivery_log is None:
        return None
    return lambda event_id: delivery_log.ref(channel, event_id)


class NotifierApp:
    """Builds the real channels; tests replace ``stdout``, ``clock``, ``sleep`` and time."""

    def __init__(
        self,
        settings: NotifierSettings,
        *,
        stdout: TextIO | None = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.source = f"{SERVICE}/{settings.instance}"
        self._clock = clock
        self.health = Health()
        self.health.expect("kafka", "broker")
        self.http = HttpServer(settings.http_host, settings.http_port, self.health)
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.request_timeout_seconds)
        )
        self.delivery_log = DeliveryLog(settings.delivery_log, capacity=settings.dedup_capacity)
        routing = settings.routing()
        self.router = Router(routing, settings.tz)
        self.dispatcher = Dispatcher(
            build_channels(
                settings,
                self.session,
                routing=routing,
                stdout=stdout,
                delivery_log=self.delivery_log,
            ),
            delivery_log=self.delivery_log,
            targets=lambda n: self.router.targets(n, self._clock()),
            policy=RetryPolicy(
                max_attempts=settings.max_attempts,
                base_seconds=settings.retry_base_seconds,
                max_seconds=settings.retry_max_seconds,
                max_retry_after_seconds=settings.max_retry_after_seconds,
            ),
            queue_size=settings.queue_size,
            digest_threshold=settings.digest_threshold,
            clock=clock,
            sleep=sleep,
            monotonic=monotonic,
            rng=rng,
        )
        self.producer = Producer(settings.kafka, service=SERVICE)
        self.consumer = Consumer(
            settings.kafka,
            specs=[ALERTS, ANALYSES, EXPOSURES],
            group_id=settings.group_id,
            handler=self.handle,
            producer=self.producer,
            service=SERVICE,
            max_records=settings.max_batch_records,
            on_batch_done=self._batch_done,
        )
        self._batch: list[asyncio.Future[Outcome]] = []
        self._analyses: list[Notification] = []
        self._tasks: list[asyncio.Task[None]] = []
        # the latest snapshot per account (and 'portfolio'): quick stats and what a
        # resolved alert's measure is now
        self.exposures: dict[str, ExposureSnapshotted] = {}
        # open alerts by alert id, their latest transition (updated ones included)
        self.open_alerts: dict[str, RiskAlertChanged] = {}
        self._opened_at: dict[str, datetime] = {}
        # (alert id, channel) -> when it last paged there: raised, escalated or repeated
        self._paged: dict[tuple[str, str], datetime] = {}
        self._reminders: set[asyncio.Future[Outcome]] = set()

    async def start(self) -> None:
        self.delivery_log.open()
        workers = self.dispatcher.start()
        self.health.set("channels", True, ", ".join(self.dispatcher.channel_names))
        await self.http.start()
        await self.producer.start()
        await self.consumer.start()
        self.health.set("kafka", True, f"consuming {ALERTS.name}, {ANALYSES.name}")
        consumer = asyncio.create_task(self.consumer.run(), name="notifier-consumer")
        probe = asyncio.create_task(
            BrokerProbe(
                self.settings.kafka, lambda ok, detail: self.health.set("broker", ok, detail)
            ).run(),
            name="notifier-broker-probe",
        )
        reminders = asyncio.create_task(self._remind_forever(), name="notifier-reminders")
        self._tasks = [consumer, probe, reminders, *workers]
        log.info("notifier started", extra={"channels": self.dispatcher.channel_names})

    async def wait(self) -> None:
        """Run until a supervised task stops; its error propagates."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RuntimeError("a notifier task stopped unexpectedly")

    async def stop(self) -> None:
        self.health.set("kafka", False, "stopping")
        for task in self._tasks[:3]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dispatcher.stop()
        await self.consumer.stop()
        await self.producer.stop()
        await self.session.close()
        self.delivery_log.close()
        await self.http.stop()

    def _track(self, alert: RiskAlertChanged) -> None:
        if alert.transition == AlertTransition.RESOLVED:
            self.open_alerts.pop(alert.alert_id, None)
            self._opened_at.pop(alert.alert_id, None)
            for key in [k for k in self._paged if k[0] == alert.alert_id]:
                del self._paged[key]
            return
        self.open_alerts[alert.alert_id] = alert
        self._opened_at.setdefault(alert.alert_id, alert.occurred_at)

    async def remind(self) -> list[asyncio.Future[Outcome]]:
        """Repeat each unresolved HIGH/CRITICAL alert on every phone channel whose repeat
        interval has passed since it last paged there, with the alert's current numbers."""
        now = self._clock()
        futures: list[asyncio.Future[Outcome]] = []
        for alert in list(self.open_alerts.values()):
            if alert.severity not in (Severity.HIGH, Severity.CRITICAL):
                continue
            ctx = Context(
                exposure=self.exposures.get(alert.account),
                tz=self.settings.tz,
                reminder_open_since=self._opened_at.get(alert.alert_id, alert.occurred_at),
                now=now,
            )
            n = from_alert(alert, ctx)
            for name in self.router.targets(n, now):
                config = self.router.channels[name]
                repeat = self.router.repeat_seconds(name)
                if not config.is_phone or repeat <= 0:
                    continue
                last = self._paged.get((alert.alert_id, name))
                if last is not None and (now - last).total_seconds() < repeat:
                    continue
                self._paged[(alert.alert_id, name)] = now
                reminder = dataclasses.replace(
                    n,
                    source_event_id=derived_event_id(
                        "reminder", alert.alert_id, name, now.isoformat()
                    ),
                )
                futures.extend(await self.dispatcher.dispatch(reminder, only={name}))
        return futures

    async def _remind_forever(self) -> None:
        while True:
            await asyncio.sleep(REMINDER_CHECK_SECONDS)
            for future in await self.remind():
                # not part of a Kafka batch: outcomes are in the delivery log and metrics
                self._reminders.add(future)
                future.add_done_callback(self._reminders.discard)

    def context(self, alert: RiskAlertChanged) -> Context:
        return Context(exposure=self.exposures.get(alert.account), tz=self.settings.tz)

    async def handle(
        self,
        event: RiskAlertChanged | AnalysisCompleted | ExposureSnapshotted,
        meta: RecordMeta,
    ) -> None:
        if isinstance(event, ExposureSnapshotted):
            self.exposures[event.account] = event
        elif isinstance(event, RiskAlertChanged):
            self._track(event)
            if event.transition == AlertTransition.UPDATED:
                return  # fresher numbers for reminders and /status; never a page
            n = from_alert(event, self.context(event))
            now = self._clock()
            for name in self.router.targets(n, now):
                self._paged[(event.alert_id, name)] = now
            self._batch.extend(await self.dispatcher.dispatch(n))
        else:
            self._analyses.append(from_analysis(event))

    async def _batch_done(self) -> None:
        analyses, self._analyses = self._analyses, []
        for n in analyses:
            self._batch.extend(await self.dispatcher.dispatch(n))
        self._batch.extend(await self.dispatcher.release_overdue())
        batch, self._batch = self._batch, []
        acks = []
        for outcome in await asyncio.gather(*batch):
            event = outcome_event(outcome, source=self.source, now=self._clock)
            acks.append(
                await self.producer.send(NOTIFICATIONS, outcome.notification.account, event)
            )
        # a failed ack raises here, before the commit, instead of vanishing in flush()
        await asyncio.gather(*acks)


async def main(settings: NotifierSettings) -> None:
    app = NotifierApp(settings)
    await app.start()
    try:
        await app.wait()
    finally:
        await app.stop()
