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
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

import aiohttp

from notifier import metrics
from notifier.channels import Channel, ConsoleChannel, FileChannel
from notifier.dedup import DeliveryLog
from notifier.delivery import Dispatcher, Outcome, RetryPolicy
from notifier.messages import Context, Notification, from_alert, from_analysis
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
    derived_event_id,
)
from riskwatch_common.kafka import BrokerProbe, Consumer, Producer, RecordMeta
from riskwatch_common.runtime import Health, HttpServer
from riskwatch_common.topics import ALERTS, ANALYSES, EXPOSURES, NOTIFICATIONS

log = logging.getLogger(__name__)

ALL_CHANNELS = ("console", "file", "telegram", "slack")


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
    stdout: TextIO | None = None,
    delivery_log: DeliveryLog | None = None,
) -> list[Channel]:
    """The enabled channels; a channel without credentials is off and says so once."""
    channels: list[Channel] = []
    if settings.console_enabled:
        channels.append(ConsoleChannel(stdout))
    if settings.alerts_file:
        channels.append(FileChannel(settings.alerts_file))
    else:
        log.info("file channel disabled: NOTIFIER_ALERTS_FILE is empty")
    token = settings.telegram_bot_token
    if token is None:
        log.info("telegram disabled: no NOTIFIER_TELEGRAM_BOT_TOKEN")
    elif settings.telegram_chat_id is None:
        log.warning("telegram disabled: no NOTIFIER_TELEGRAM_CHAT_ID")
    else:
        channels.append(
            TelegramChannel(
                session,
                token=token.get_secret_value(),
                chat_id=settings.telegram_chat_id,
                api_base=settings.telegram_api_base,
                min_interval_seconds=settings.telegram_min_interval_seconds,
                delivered_ref=(lambda eid: delivery_log.ref("telegram", eid))
                if delivery_log is not None
                else None,
            )
        )
    if settings.slack_webhook_url is None:
        log.info("slack disabled: no NOTIFIER_SLACK_WEBHOOK_URL")
    else:
        channels.append(
            SlackChannel(
                session,
                webhook_url=settings.slack_webhook_url.get_secret_value(),
                min_interval_seconds=settings.slack_min_interval_seconds,
            )
        )
    enabled = {c.name for c in channels}
    for name in ALL_CHANNELS:
        metrics.CHANNEL_ENABLED.labels(name).set(1 if name in enabled else 0)
    return channels


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
        self.dispatcher = Dispatcher(
            build_channels(settings, self.session, stdout=stdout, delivery_log=self.delivery_log),
            delivery_log=self.delivery_log,
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
            handler=self._handle,
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
        self._tasks = [consumer, probe, *workers]
        log.info("notifier started", extra={"channels": self.dispatcher.channel_names})

    async def wait(self) -> None:
        """Run until a supervised task stops; its error propagates."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RuntimeError("a notifier task stopped unexpectedly")

    async def stop(self) -> None:
        self.health.set("kafka", False, "stopping")
        for task in self._tasks[:2]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dispatcher.stop()
        await self.consumer.stop()
        await self.producer.stop()
        await self.session.close()
        self.delivery_log.close()
        await self.http.stop()

    def context(self, alert: RiskAlertChanged) -> Context:
        return Context(exposure=self.exposures.get(alert.account), tz=self.settings.tz)

    async def _handle(
        self,
        event: RiskAlertChanged | AnalysisCompleted | ExposureSnapshotted,
        meta: RecordMeta,
    ) -> None:
        if isinstance(event, ExposureSnapshotted):
            self.exposures[event.account] = event
        elif isinstance(event, RiskAlertChanged):
            if event.transition == AlertTransition.RESOLVED:
                self.open_alerts.pop(event.alert_id, None)
            else:
                self.open_alerts[event.alert_id] = event
            if event.transition == AlertTransition.UPDATED:
                return  # fresher numbers for reminders and /status; never a page
            self._batch.extend(
                await self.dispatcher.dispatch(from_alert(event, self.context(event)))
            )
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
