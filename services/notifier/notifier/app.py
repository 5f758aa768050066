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
import hmac
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from notifier import commands, metrics
from notifier.bot import Command, TelegramBot
from notifier.channels import Channel, ConsoleChannel, FileChannel
from notifier.dedup import DeliveryLog
from notifier.delivery import Dispatcher, Outcome, RetryPolicy
from notifier.messages import STALLED_RULE, Context, Notification, from_alert, from_analysis
from notifier.outbox import Entry, Outbox, OutboxPolicy
from notifier.routing import ChannelConfig, ChannelType, Router, RoutingFile
from notifier.settings import SERVICE, NotifierSettings
from notifier.silence_store import KafkaSilenceStore, SilenceStore
from notifier.silences import Silences, lifted
from notifier.slack import SlackChannel
from notifier.slack_bot import SlackBotChannel
from notifier.telegram import TelegramChannel
from notifier.watchdog import Watchdog
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import (
    AlertTransition,
    AnalysisCompleted,
    ExposureSnapshotted,
    NotificationDelivered,
    NotificationFailed,
    PipelineHeartbeat,
    RiskAlertChanged,
    Severity,
    derived_event_id,
)
from riskwatch_common.kafka import BrokerProbe, Consumer, Producer, RecordMeta
from riskwatch_common.logs import register_secret
from riskwatch_common.runtime import Health, HttpServer, supervise
from riskwatch_common.text import plain_text
from riskwatch_common.topics import ALERTS, ANALYSES, EXPOSURES, HEARTBEATS, NOTIFICATIONS

log = logging.getLogger(__name__)

REMINDER_CHECK_SECONDS = 10.0
OUTBOX_CHECK_SECONDS = 5.0
WATCH_SECONDS = 5.0
MONITORING_KIND = "monitoring"
"""The file record's ``kind`` of the notifier's own 'monitoring stalled' alerts."""
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


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
                channels.append(
                    FileChannel(
                        path,
                        name=name,
                        max_bytes=int(settings.alerts_file_max_mb * 1024 * 1024),
                        backups=settings.alerts_file_backups,
                    )
                )
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
        elif c.bot_token_env and c.channel:
            bot_token = os.environ.get(c.bot_token_env, "").strip()
            if not bot_token:
                log.info("slack disabled: no bot token", extra={"channel": name})
                continue
            register_secret(bot_token)
            channels.append(
                SlackBotChannel(
                    session,
                    name=name,
                    token=bot_token,
                    channel=c.channel,
                    api_base=settings.slack_api_base,
                    min_interval_seconds=_interval(c, settings.slack_min_interval_seconds),
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
        silence_store: SilenceStore | None = None,
    ) -> None:
        self.settings = settings
        self.source = f"{SERVICE}/{settings.instance}"
        self._clock = clock
        self.health = Health()
        self.health.expect("kafka", "broker")
        self._sleep = sleep
        self.http = HttpServer(
            settings.http_host, settings.http_port, self.health, routes=self._api_routes()
        )
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.request_timeout_seconds)
        )
        self.delivery_log = DeliveryLog(settings.delivery_log, capacity=settings.dedup_capacity)
        self.outbox = Outbox(
            settings.outbox_path,
            policy=OutboxPolicy(
                ttl_urgent=timedelta(hours=settings.outbox_ttl_hours),
                ttl_other=timedelta(hours=settings.outbox_ttl_other_hours),
            ),
            rng=rng,
        )
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
            targets=self._targets,
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
            specs=[ALERTS, ANALYSES, EXPOSURES, HEARTBEATS],
            group_id=settings.group_id,
            handler=self.handle,
            producer=self.producer,
            service=SERVICE,
            max_records=settings.max_batch_records,
            on_batch_done=self._batch_done,
        )
        self.silences = Silences()
        self.silence_store = silence_store or KafkaSilenceStore(settings.kafka, self.producer)
        self._silences_ready = asyncio.Event()
        self._batch: list[asyncio.Future[Outcome]] = []
        self._analyses: list[Notification] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._workers: list[asyncio.Task[None]] = []
        # the latest snapshot per account (and 'portfolio'): quick stats and what a
        # resolved alert's measure is now
        self.exposures: dict[str, ExposureSnapshotted] = {}
        # open alerts by alert id, their latest transition (updated ones included)
        self.open_alerts: dict[str, RiskAlertChanged] = {}
        self._opened_at: dict[str, datetime] = {}
        # (alert id, channel) -> when it last paged there: raised, escalated or repeated
        self._paged: dict[tuple[str, str], datetime] = {}
        self._reminders: set[asyncio.Future[Outcome]] = set()
        self.watchdog = Watchdog(
            stall_after=timedelta(seconds=settings.heartbeat_stall_seconds),
            started_at=clock(),
            expected=settings.expected_groups,
        )
        self._last_ping: datetime | None = None
        self._own: set[asyncio.Future[Outcome]] = set()

    async def start(self) -> None:
        self.delivery_log.open()
        self.outbox.open()
        workers = self.dispatcher.start()
        self.health.set("channels", True, ", ".join(self.dispatcher.channel_names))
        await self.http.start()
        await self.producer.start()
        silences = await self.start_silences()
        await self.consumer.start()
        self.health.set("kafka", True, f"consuming {ALERTS.name}, {ANALYSES.name}")
        # supervised: a loop that raises or ends fails the service (/healthz 503, exit 1)
        # instead of leaving a notifier that looks up and sends nothing
        probe = BrokerProbe(
            self.settings.kafka, lambda ok, detail: self.health.set("broker", ok, detail)
        )
        self._tasks = [
            supervise(self.consumer.run(), "consumer", self.health),
            supervise(probe.run(), "broker probe", self.health),
            supervise(self._remind_forever(), "reminders", self.health),
            supervise(self._retry_forever(), "outbox retries", self.health),
            supervise(self._watch_forever(), "heartbeat watchdog", self.health),
            silences,
            *self.start_bot(),
        ]
        self._workers = workers
        log.info("notifier started", extra={"channels": self.dispatcher.channel_names})

    async def wait(self) -> None:
        """Run until a supervised task stops; its error propagates."""
        done, _ = await asyncio.wait(
            [*self._tasks, *self._workers], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            task.result()
        raise RuntimeError("a notifier task stopped unexpectedly")

    async def stop(self) -> None:
        self.health.set("kafka", False, "stopping")
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dispatcher.stop()
        await self.consumer.stop()
        await self.producer.stop()
        await self.session.close()
        self.delivery_log.close()
        self.outbox.close()
        await self.http.stop()

    async def start_silences(self) -> asyncio.Task[Any]:
        """Read every silence back before the first alert; then keep following the topic."""
        task = supervise(
            self.silence_store.follow(self.silences.apply, self._silences_ready),
            "silence reader",
            self.health,
        )
        ready = asyncio.create_task(self._silences_ready.wait())
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()
            raise RuntimeError("the silence reader stopped before it caught up")
        log.info("silences loaded", extra={"active": len(self.silences.active(self._clock()))})
        return task

    def start_bot(self) -> list[asyncio.Task[Any]]:
        """Answer bot commands in the routing's Telegram chats (when there are any)."""
        token = self.settings.telegram_bot_token
        chats = {
            c.chat_id
            for c in self.router.channels.values()
            if c.type == ChannelType.TELEGRAM and c.chat_id
        }
        if not self.settings.telegram_commands or token is None or not chats:
            return []
        bot = TelegramBot(
            self.session,
            token=token.get_secret_value(),
            api_base=self.settings.telegram_api_base,
            chats=chats,
            on_command=self.telegram_command,
            sleep=self._sleep,
            poll_seconds=self.settings.telegram_poll_seconds,
        )
        self.bot = bot
        return [supervise(bot.run(), "telegram commands", self.health)]

    def _targets(self, n: Notification) -> set[str]:
        now = self._clock()
        targets = self.router.targets(n, now)
        if self.silences.muting(n, now) is None:
            return targets
        kept = set()
        for name in targets:
            if self.router.channels[name].is_phone:
                metrics.SILENCED.labels(name).inc()
            else:
                kept.add(name)
        return kept

    def state(self) -> commands.State:
        return commands.State(
            now=self._clock(),
            tz=self.settings.tz,
            exposures=self.exposures,
            open_alerts=self.open_alerts,
            silences=self.silences,
        )

    async def command(
        self, text: str, *, by: str, replied_alert_id: str | None = None
    ) -> commands.Reply:
        """Run a bot or API command; its silences are durable before the reply says so."""
        reply = commands.run(text, self.state(), by=by, replied_alert_id=replied_alert_id)
        for event in reply.events:
            await self.silence_store.save(event)
            self.silences.apply(event)
        return reply

    async def telegram_command(self, cmd: Command) -> str:
        replied = None
        if cmd.reply_to_message_id is not None:
            for worker in self.dispatcher.workers:
                ch = worker.channel
                if isinstance(ch, TelegramChannel) and ch.chat_id == cmd.chat_id:
                    replied = ch.alert_of_message.get(cmd.reply_to_message_id) or replied
        reply = await self.command(cmd.text, by=f"telegram:{cmd.chat_id}", replied_alert_id=replied)
        return reply.html

    def _api_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/command", self._api_command),
            web.get("/api/silences", self._api_silences),
        ]

    def _authorized(self, request: web.Request) -> str | None:
        """None when the request may use the API, else why not."""
        token = self.settings.api_token
        if token is None:
            if self.settings.http_host in LOOPBACK:
                return None
            return "the notifier API needs NOTIFIER_API_TOKEN when bound beyond loopback"
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if hmac.compare_digest(given.encode(), expected.encode()):
            return None
        return "missing or wrong bearer token"

    async def _api_command(self, request: web.Request) -> web.Response:
        problem = self._authorized(request)
        if problem is not None:
            metrics.API_REQUESTS.labels("unauthorized").inc()
            return web.json_response({"ok": False, "text": problem}, status=401)
        try:
            body = await request.json()
            text = str(body["command"])
        except (ValueError, KeyError, TypeError):
            metrics.API_REQUESTS.labels("bad_request").inc()
            return web.json_response(
                {"ok": False, "text": 'send {"command": "/mute sub_90x 1h"}'}, status=400
            )
        reply = await self.command(text, by="api")
        metrics.API_REQUESTS.labels("ok" if reply.ok else "bad_request").inc()
        return web.json_response(
            {"ok": reply.ok, "text": plain_text(reply.html)}, status=200 if reply.ok else 400
        )

    async def _api_silences(self, request: web.Request) -> web.Response:
        problem = self._authorized(request)
        if problem is not None:
            metrics.API_REQUESTS.labels("unauthorized").inc()
            return web.json_response({"ok": False, "text": problem}, status=401)
        metrics.API_REQUESTS.labels("ok").inc()
        active = self.silences.active(self._clock())
        return web.json_response(
            {"ok": True, "silences": [s.model_dump(mode="json") for s in active]}
        )

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
            if self.silences.ack_of(alert.alert_id) is not None:
                continue  # acknowledged: no repeats until it resolves
            ctx = Context(
                exposure=self.exposures.get(alert.account),
                tz=self.settings.tz,
                reminder_open_since=self._opened_at.get(alert.alert_id, alert.occurred_at),
                now=now,
            )
            n = from_alert(alert, ctx)
            for name in self._targets(n):  # a muted alert is not repeated either
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
        event: RiskAlertChanged | AnalysisCompleted | ExposureSnapshotted | PipelineHeartbeat,
        meta: RecordMeta,
    ) -> None:
        if isinstance(event, ExposureSnapshotted):
            self.exposures[event.account] = event
        elif isinstance(event, PipelineHeartbeat):
            self.watchdog.beat(event, self._clock())
        elif isinstance(event, RiskAlertChanged):
            self._track(event)
            acked = self.silences.ack_of(event.alert_id)
            if event.transition == AlertTransition.RESOLVED and acked is not None:
                # the acknowledgement ends with the alert; a new one pages again
                done = lifted(acked, now=self._clock(), by="resolved")
                await self.silence_store.save(done)
                self.silences.apply(done)
            if event.transition == AlertTransition.UPDATED:
                return  # fresher numbers for reminders and /status; never a page
            n = from_alert(event, self.context(event))
            now = self._clock()
            for name in self.router.targets(n, now):
                self._paged[(event.alert_id, name)] = now
            self._batch.extend(await self.dispatcher.dispatch(n))
        else:
            self._analyses.append(from_analysis(event))

    async def watch(self) -> list[asyncio.Future[Outcome]]:
        """Raise or resolve 'monitoring stalled' per group, straight to the channels (not
        through Kafka, which may be what stalled); ping the dead-man's switch while fresh."""
        if self.settings.heartbeat_stall_seconds <= 0:
            return []
        now = self._clock()
        futures: list[asyncio.Future[Outcome]] = []
        for change in self.watchdog.check(now):
            alert = self._stall_alert(change.group, change.transition, change.since, now)
            stalled = change.transition == AlertTransition.RAISED
            log.log(
                logging.ERROR if stalled else logging.INFO,
                "monitoring stalled" if stalled else "monitoring flows again",
                extra={"group": change.group, "age_s": round(change.age.total_seconds())},
            )
            metrics.STALLED_GROUPS.set(len(self.watchdog.stalled))
            self._track(alert)
            n = from_alert(alert, self.context(alert))
            # in the file apart from the risk alerts of risk.alerts.v1: this one is ours
            n = dataclasses.replace(n, record={**n.record, "kind": MONITORING_KIND})
            futures.extend(await self.dispatcher.dispatch(n))
        if self.settings.deadman_url is not None and self.watchdog.fresh(now):
            due = self._last_ping is None or (now - self._last_ping).total_seconds() >= (
                self.settings.deadman_interval_seconds
            )
            if due:
                self._last_ping = now
                await self._ping(self.settings.deadman_url.get_secret_value())
        return futures

    def _stall_alert(
        self, group: str, transition: AlertTransition, since: datetime, now: datetime
    ) -> RiskAlertChanged:
        seconds = int((now - since).total_seconds())
        return RiskAlertChanged(
            event_id=derived_event_id("stall", group, since.isoformat(), transition.value),
            occurred_at=now,
            produced_at=now,
            source=self.source,
            correlation_id=f"stall:{group}:{since.isoformat()}",
            alert_id=f"pipeline:{STALLED_RULE}:{group}",
            transition=transition,
            account="pipeline",
            rule=STALLED_RULE,
            subject=group,
            severity=Severity.CRITICAL,
            reason=(
                f"no heartbeat from ingestor group {group} has reached the notifier for "
                f"{seconds} s: ingestor, Kafka or risk processor is stalled; riskwatch is "
                "blind for these accounts"
            ),
            numbers={"stalled_seconds": Decimal(seconds)},
        )

    async def _ping(self, url: str) -> None:
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                ok = resp.status < 400
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("dead-man's switch ping failed", extra={"error_type": type(exc).__name__})
            metrics.DEADMAN_PINGS.labels("failed").inc()
            return
        metrics.DEADMAN_PINGS.labels("ok" if ok else "failed").inc()

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            for future in await self.watch():
                # not from a Kafka record: the outcome goes to the outbox when retryable
                self._own.add(future)
                future.add_done_callback(self._settle_own)

    def _settle_own(self, future: asyncio.Future[Outcome]) -> None:
        self._own.discard(future)
        if not future.cancelled() and future.exception() is None:
            self.settle([future.result()])

    def settle(self, outcomes: list[Outcome]) -> list[NotificationDelivered | NotificationFailed]:
        """The outcome events to publish for a batch's outcomes; a retryable failure is put
        in the outbox instead (durably, before the batch commits) and has none yet."""
        events: list[NotificationDelivered | NotificationFailed] = []
        for outcome in outcomes:
            if not outcome.delivered and outcome.retryable:
                self.outbox.add(
                    outcome.channel,
                    outcome.notification,
                    now=self._clock(),
                    error=outcome.error,
                    wait=outcome.retry_after,
                )
                continue
            events.append(outcome_event(outcome, source=self.source, now=self._clock))
        return events

    async def retry_outbox(self) -> list[tuple[str, NotificationDelivered | NotificationFailed]]:
        """Send the outbox entries whose time has come; returns the final outcomes' events
        with the account each is keyed by."""
        now = self._clock()
        events: list[tuple[str, NotificationDelivered | NotificationFailed]] = []
        waiting: list[tuple[Entry, asyncio.Future[Outcome]]] = []
        for entry in self.outbox.due(now):
            if self.delivery_log.delivered(entry.channel, entry.notification.source_event_id):
                self.outbox.done(entry, "delivered")
                continue
            if self.outbox.expired(entry, now):
                self.outbox.done(entry, "expired")
                metrics.NOTIFICATIONS.labels(
                    entry.channel, entry.notification.kind.value, "expired"
                ).inc()
                log.error(
                    "notification expired undelivered",
                    extra={
                        "channel": entry.channel,
                        "event_id": entry.notification.source_event_id,
                        "problem": entry.error,
                    },
                )
                gave_up = Outcome(
                    entry.channel,
                    entry.notification,
                    False,
                    entry.retries + 1,
                    f"not delivered within {self.outbox.policy.ttl(entry.notification)}: "
                    + entry.error,
                )
                event = outcome_event(gave_up, source=self.source, now=self._clock)
                events.append((entry.notification.account, event))
                continue
            future = await self.dispatcher.resend(entry.channel, entry.notification)
            if future is not None:
                waiting.append((entry, future))
        for entry, future in waiting:
            outcome = await future
            if outcome.delivered:
                self.outbox.done(entry, "delivered")
            elif outcome.retryable:
                self.outbox.retry_later(
                    entry, now=self._clock(), error=outcome.error, wait=outcome.retry_after
                )
                continue
            else:
                self.outbox.done(entry, "failed")
            event = outcome_event(outcome, source=self.source, now=self._clock)
            events.append((entry.notification.account, event))
        return events

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(OUTBOX_CHECK_SECONDS)
            events = await self.retry_outbox()
            acks = [await self.producer.send(NOTIFICATIONS, key, e) for key, e in events]
            await asyncio.gather(*acks)

    async def finish_batch(self) -> list[Outcome]:
        """Queue the batch's analyses behind its alerts and wait for every outcome."""
        analyses, self._analyses = self._analyses, []
        for n in analyses:
            self._batch.extend(await self.dispatcher.dispatch(n))
        self._batch.extend(await self.dispatcher.release_overdue())
        batch, self._batch = self._batch, []
        return list(await asyncio.gather(*batch))

    async def _batch_done(self) -> None:
        outcomes = await self.finish_batch()
        acks = []
        accounts = {o.notification.source_event_id: o.notification.account for o in outcomes}
        for event in self.settle(outcomes):
            acks.append(
                await self.producer.send(NOTIFICATIONS, accounts[event.source_event_id], event)
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
