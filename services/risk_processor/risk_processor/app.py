"""Composition root: wiring and timers. See ``docs/processing.md``.

- ``faust_app``: the Faust app and its tables;
- ``agents/``: ``accounts`` (account events and re-evaluate requests), ``portfolio``
  (every account's latest exposure) and ``market`` (marks, tier tables), sharing
  ``agents.context.Context``;
- ``outbox``, ``coalesce``, ``reevaluate``: plain classes with an injected clock;
- timers here: re-evaluation (market moves, deadlines), snapshot coalescing, retries of
  failed alert and dead-letter sends. Any unhandled error in an agent or timer ends the
  worker (``RiskProcessor.run`` raises; ``main`` forces the exit if Faust's stop hangs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from risk_processor import api, metrics
from risk_processor.agents.accounts import AccountsAgent
from risk_processor.agents.context import SERVICE, Context, Dedup
from risk_processor.agents.market import MarksAgent, TiersAgent, request_due
from risk_processor.agents.portfolio import PortfolioAgent
from risk_processor.batching import STALE, BatchTopic, run_batches
from risk_processor.coalesce import Coalescer, Throttle
from risk_processor.config import RiskConfig, load_config
from risk_processor.faust_app import (
    abandon_unacked,
    build_app,
    changelog_specs,
    check_partitions,
    consumer_state,
    declare_tables,
)
from risk_processor.outbox import Outbox, PublishedAlerts
from risk_processor.reevaluate import Reevaluator
from risk_processor.settings import RiskProcessorSettings
from risk_processor.tables import TableWriter
from risk_processor.transport import DELIVERY, quiet_faust_logs
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.kafka import BrokerProbe, ensure_topics
from riskwatch_common.runtime import Health, HttpServer, add_to_dump, force_exit_after
from riskwatch_common.topics import (
    ACCOUNT_EVENTS,
    ACCOUNT_EXPOSURES,
    ALERTS,
    EXPOSURES,
    HEARTBEATS,
    INTERNAL_TOPICS,
    MARK_PRICES,
    REEVALUATE,
    RISK_LIMITS,
    TopicSpec,
    dead_letter_of,
)

log = logging.getLogger(__name__)

INPUT_TOPICS = (ACCOUNT_EVENTS, MARK_PRICES, RISK_LIMITS)
OUTPUT_TOPICS = (EXPOSURES, ALERTS, HEARTBEATS)
STOP_TIMEOUT_S = 5.0
"""How long a failed worker waits for Faust's graceful stop before giving up on it."""
SHUTDOWN_TIMEOUT_S = 30.0
"""How long a worker asked to stop (SIGTERM) waits for Faust's graceful stop."""
FORCED_EXIT_S = 9.0
"""After a failure, ``main`` exits the process this long later whatever still runs
(``riskwatch_common.runtime.force_exit_after``): ``STOP_TIMEOUT_S`` for Faust's stop, then
the rest of ``run``'s cleanup."""

__all__ = ["INPUT_TOPICS", "INTERNAL_TOPICS", "OUTPUT_TOPICS", "SERVICE", "RiskProcessor"]


class RiskProcessor:
    """The risk processor service; ``run()`` serves until cancelled, raises on failure."""

    def __init__(
        self,
        settings: RiskProcessorSettings,
        *,
        config: RiskConfig | None = None,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.config = config or load_config(
            settings.thresholds_file, net_exposure_limit_usd=settings.net_exposure_limit_usd
        )
        self.clock = clock
        ns = self.kafka.topic_namespace
        self.names = {
            s.name: s.qualified(ns) for s in (*INPUT_TOPICS, *OUTPUT_TOPICS, *INTERNAL_TOPICS)
        }
        self.health = Health()
        self.health.expect("kafka", "broker")
        self.http = HttpServer(
            settings.http_host, settings.http_port, self.health, api.routes(self)
        )
        self.app = build_app(settings)
        self.tables = declare_tables(self.app, self.kafka.topic_partitions)
        writer = TableWriter(self.app, self.names[ACCOUNT_EVENTS.name])
        self.ctx = Context(
            settings=settings,
            config=self.config,
            clock=clock,
            app=self.app,
            tables=self.tables,
            writer=writer,
            outbox=Outbox(
                PublishedAlerts(
                    self.kafka,
                    self.names[ALERTS.name],
                    self.kafka.topic_partitions,
                    settings.alert_tail_records,
                ),
                self._send,
            ),
            coalescer=Coalescer(settings.snapshot_interval_ms / 1000, monotonic=monotonic),
            portfolio_throttle=Throttle(settings.portfolio_interval_ms / 1000, monotonic=monotonic),
            reevaluator=Reevaluator(settings.reevaluate_interval_s, monotonic=monotonic),
            names=self.names,
            source=f"{SERVICE}/{settings.instance}",
            dedup=Dedup(settings.dedup_window),
        )
        self.accounts = AccountsAgent(self.ctx)
        self.portfolio = PortfolioAgent(self.ctx)
        self._assigned = False
        self._fatal: BaseException | None = None
        self.failed = asyncio.Event()
        self._wire()

    # Tables by name, for tests and tools.
    @property
    def positions(self) -> Any:
        return self.tables.positions

    @property
    def risk(self) -> Any:
        return self.tables.risk

    @property
    def marks(self) -> Any:
        return self.tables.marks

    @property
    def tiers(self) -> Any:
        return self.tables.tiers

    @property
    def records_handled(self) -> int:
        return self.ctx.records_handled

    async def _send(self, topic: str, key: str, value: bytes) -> Any:
        return await self.ctx.send(topic, key, value)

    def _wire(self) -> None:
        app = self.app
        s = self.settings
        buffer = s.buffer_events
        partitions = self.kafka.topic_partitions
        handlers: tuple[tuple[str, tuple[TopicSpec, ...], Any], ...] = (
            ("accounts", (ACCOUNT_EVENTS, REEVALUATE), self.accounts),
            ("portfolio", (ACCOUNT_EXPOSURES,), self.portfolio),
            ("marks", (MARK_PRICES,), MarksAgent(self.ctx)),
            ("tiers", (RISK_LIMITS,), TiersAgent(self.ctx)),
        )
        for name, specs, handler in handlers:
            channel = BatchTopic(
                app,
                topics=[self.names[spec.name] for spec in specs],
                key_serializer="raw",
                value_serializer="raw",
                partitions=partitions,
                buffer_size=buffer,
            )
            app.topics.add(channel)
            app.task(self._consumer_task(name, channel, handler))
        app.timer(s.reevaluate_interval_s, name="reevaluate")(
            self._supervised("reevaluate", self._tick)
        )
        # Trailing edge of snapshot coalescing: what a busy account staged gets out.
        snapshot_s = max(min(s.snapshot_interval_ms, s.portfolio_interval_ms) / 1000, 0.02)
        app.timer(snapshot_s, name="snapshots")(self._supervised("snapshots", self._flush))
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)

    def _fail(self, what: str, exc: BaseException) -> None:
        log.error("%s failed; stopping the worker", what, exc_info=exc)
        if self._fatal is None:
            self._fatal = exc
        self.failed.set()

    def _supervised(self, name: str, fn: Callable[[], Awaitable[None]]) -> Any:
        async def run() -> None:
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fail(f"timer {name}", exc)

        run.__name__ = name
        return run

    def _consumer_task(self, name: str, channel: BatchTopic, handler: Any) -> Any:
        max_batch = self.settings.batch_max_events
        gather_s = self.settings.batch_gather_ms / 1000
        histogram = metrics.BATCH_SECONDS.labels(name)

        async def timed(events: list[Any]) -> None:
            with histogram.time():
                await handler(events)

        async def consume() -> None:
            try:
                await run_batches(self.app, channel, timed, max_batch=max_batch, gather_s=gather_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fail(f"agent {name}", exc)

        return consume

    async def _tick(self) -> None:
        """Every interval: re-evaluate accounts whose marks or tier tables moved (also
        market data another worker wrote to the GlobalTables), accounts not yet evaluated
        by this process (after a start or a rebalance) and accounts with a deadline due;
        and send again what failed to send."""
        ctx = self.ctx
        ctx.reevaluator.check(self._owned_accounts(), ctx.market().get, ctx.clock())
        # 0.9: a tick that fires a little early must not postpone a request a whole interval.
        await request_due(ctx, min_age=self.settings.reevaluate_interval_s * 0.9)
        await ctx.outbox.retry_failed()
        await ctx.retry_failed_dead_letters()

    async def _flush(self) -> None:
        await self.portfolio.evaluate()
        await self.ctx.emit_due()

    def _owned_accounts(self) -> set[str]:
        """Accounts in our tables whose partition this worker is assigned now (a memory
        store may still hold accounts of partitions revoked from us)."""
        topic = self.names[ACCOUNT_EVENTS.name]
        owned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}
        partition_for = self.ctx.outbox.partition_for
        accounts = set(self.tables.positions.keys()) | set(self.tables.orders.keys())
        return {a for a in accounts if partition_for(a) in owned}

    async def _on_revoked(self, sender: Any, revoked: Any, **_: Any) -> None:
        # Another worker may own these accounts next and publish for them.
        ctx = self.ctx
        ctx.outbox.reset()
        ctx.reevaluator.reset()
        ctx.exposures.clear()
        ctx.coalescer.reset()
        self.portfolio.reset()

    async def _on_assigned(self, sender: Any, assigned: Any, **_: Any) -> None:
        self._assigned = True
        outbox = self.ctx.outbox
        outbox.reset()
        # Alerts are keyed and partitioned like the account events: the partitions this
        # worker will publish to are the account-event partitions it was assigned.
        topic = self.names[ACCOUNT_EVENTS.name]
        outbox.preload(tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic)

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """Assigned partitions and recovered every table from its changelog."""
        app = self.app
        return bool(
            self._assigned
            and not app.rebalancing
            and app.tables.recovery.completed.is_set()
            and not app.should_stop
        )

    async def run(self) -> None:
        """Create topics, start the HTTP server and the Faust worker; serve until cancelled.

        On a failure the HTTP server stops at once (``/healthz`` stops answering), Faust
        gets ``STOP_TIMEOUT_S`` to stop, and this raises."""
        await ensure_topics(
            self.kafka,
            [
                *INPUT_TOPICS,
                *OUTPUT_TOPICS,
                *(dead_letter_of(s) for s in (*INPUT_TOPICS, *INTERNAL_TOPICS)),
                *INTERNAL_TOPICS,
                *self._changelogs(),
            ],
        )
        await check_partitions(
            self.kafka,
            [
                *self.names.values(),
                *(s.qualified(self.kafka.topic_namespace) for s in self._changelogs()),
                *(
                    dead_letter_of(s).qualified(self.kafka.topic_namespace)
                    for s in (*INPUT_TOPICS, *INTERNAL_TOPICS)
                ),
            ],
        )
        # Faust creates only the last level of its data dir (RocksDB files live there).
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.http.start()
        add_to_dump("consumer", lambda: consumer_state(self.app, self.ctx.records_handled))
        add_to_dump("delivery", lambda: {k: _by_tp(v) for k, v in DELIVERY.items()})
        add_to_dump("stale", lambda: _by_tp(STALE))
        probe = asyncio.ensure_future(
            BrokerProbe(self.kafka, lambda ok, d: self.health.set("broker", ok, d)).run()
        )
        http_up = True
        try:
            await self.app.start()
            try:
                while not self.app.should_stop and self._fatal is None:
                    ok = self.ready
                    self.health.set("kafka", ok, "ready" if ok else "joining or recovering")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.failed.wait(), 0.1)
                self.failed.set()
                raise RuntimeError("the Faust worker stopped") from self._fatal
            finally:
                self.health.set("kafka", False, "stopping")
                if self._fatal is not None:
                    # Unhealthy at once: a liveness probe must not wait for Faust.
                    http_up = False
                    await self.http.stop()
                    abandon_unacked(self.app)
                stop = asyncio.ensure_future(self.app.stop())
                limit = STOP_TIMEOUT_S if self._fatal is not None else SHUTDOWN_TIMEOUT_S
                done, _ = await asyncio.wait({stop}, timeout=limit)
                if not done:
                    log.error("the Faust worker did not stop in %.0f s", limit)
                elif stop.exception() is not None:
                    log.error("the Faust worker did not stop cleanly", exc_info=stop.exception())
        finally:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            if http_up:
                await self.http.stop()

    def _changelogs(self) -> list[TopicSpec]:
        return changelog_specs(self.app, self.kafka.topic_namespace)


def _by_tp(counts: Mapping[Any, int]) -> dict[str, int]:
    return {f"{tp.topic}[{tp.partition}]": n for tp, n in counts.items()}


async def main(settings: RiskProcessorSettings) -> None:
    """Entry point of ``python -m risk_processor`` (logging is configured by then)."""
    quiet_faust_logs(logging.getLogger().getEffectiveLevel())
    processor = RiskProcessor(settings)

    async def watchdog() -> None:
        # The worker stops itself on a failure (Faust first, then ``run`` raises); should
        # that stop hang (Faust's wait_empty on a batch never acked), the shared watchdog
        # ends the process: a blind worker must not stay alive.
        await processor.failed.wait()
        force_exit_after(FORCED_EXIT_S, 1, "the Faust worker failed and did not stop in time")

    guard = asyncio.ensure_future(watchdog())
    try:
        await processor.run()
    finally:
        guard.cancel()
