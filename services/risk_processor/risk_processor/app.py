"""Composition root: the Faust app, its tables, batch handlers, timers and the HTTP API.

See ``docs/processing.md``. In short:

- ``accounts``: ``bybit.account-events.v1`` and the internal re-evaluate topic (both keyed
  by account, so one handler owns each account and its tables). Per batch: apply events,
  evaluate each touched account once, publish alert transitions (and keep them in the
  risk book's outbox), write each changed table once, stage the snapshot.
- ``portfolio``: the internal account-exposures topic (key 'portfolio'): every account's
  latest exposure, the portfolio snapshot and the portfolio rules.
- ``marks`` / ``tiers``: market data into GlobalTables; moved marks and changed tier
  tables become at most one re-evaluation per account per interval.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from risk_processor import api, codec, state
from risk_processor.batching import STALE, BatchTopic, run_batches
from risk_processor.codec import JsonValue, RawBytes, Utf8Key, faust_type
from risk_processor.config import RiskConfig, load_config
from risk_processor.evaluate import (
    AccountState,
    evaluate_account,
    evaluate_portfolio,
)
from risk_processor.ledger import PublishedAlerts
from risk_processor.metrics import Metrics
from risk_processor.metrics import build as build_metrics
from risk_processor.outputs import Cause, account_snapshot, exposure_key, portfolio_snapshot
from risk_processor.settings import RiskProcessorSettings
from risk_processor.tables import SharedTable, TableWriter
from risk_processor.transport import (
    DELIVERY,
    FAUST_LOGGER,
    TunedApp,
    quiet_faust_logs,
    transport_class,
)
from riskwatch_common.clock import Clock, from_ms, to_ms, utc_now
from riskwatch_common.contracts import (
    PORTFOLIO_KEY,
    AccountStatusChanged,
    ExecutionReported,
    OrderUpdated,
    PositionUpdated,
    RecordDeadLettered,
    RiskAlertChanged,
    WalletUpdated,
)
from riskwatch_common.kafka import BrokerProbe, ensure_topics, partition_counts
from riskwatch_common.runtime import Health, HttpServer, add_to_dump
from riskwatch_common.settings import ConfigError
from riskwatch_common.topics import (
    ACCOUNT_EVENTS,
    ALERTS,
    EXPOSURES,
    MARK_PRICES,
    RISK_LIMITS,
    CleanupPolicy,
    KeyKind,
    TopicSpec,
    dead_letter_of,
    encode,
)

log = logging.getLogger(__name__)

SERVICE = "risk-processor"
_DAY_MS = 24 * 3600 * 1000

REEVALUATE = TopicSpec(
    name="risk-processor.reevaluate.v1",
    value=bytes,
    key=KeyKind.ACCOUNT,
    description="Internal: 're-evaluate account X' requests from the mark/tier timer, keyed "
    "by account so the request lands in the partition (and agent) that owns X.",
    retention_ms=_DAY_MS,
)
ACCOUNT_EXPOSURES = TopicSpec(
    name="risk-processor.account-exposures.v1",
    value=bytes,
    key=KeyKind.ACCOUNT_OR_PORTFOLIO,
    description="Internal: each account's latest exposure, keyed 'portfolio' so one agent "
    "sees every account.",
    cleanup=CleanupPolicy.DELETE,
    retention_ms=_DAY_MS,
)
INTERNAL_TOPICS = (REEVALUATE, ACCOUNT_EXPOSURES)
_ACCOUNT_KEY = "account:"
_RISK_KEY = "risk"
INPUT_TOPICS = (ACCOUNT_EVENTS, MARK_PRICES, RISK_LIMITS)
OUTPUT_TOPICS = (EXPOSURES, ALERTS)


# (symbol, mark price, tier-table version) of every symbol an account holds.
Fingerprint = tuple[tuple[str, Decimal | None, str | None], ...]


@dataclass(slots=True)
class _Work:
    """One account's state while a batch is being applied to it.

    Table values are never mutated: the first change in a batch copies the value, later
    changes in the same batch mutate that private copy, and the copy is assigned back once.
    """

    account: str
    partition: int
    positions: state.Positions
    orders: state.OrderBook
    wallet: state.WalletEntry | None
    risk: state.RiskBook
    loaded_risk: state.RiskBook
    dirty: set[str] = field(default_factory=set)
    copied: set[str] = field(default_factory=set)
    cause: Cause | None = None
    reevaluate: bool = False

    def positions_for_update(self) -> dict[str, state.PositionEntry]:
        if "positions" not in self.copied:
            self.positions = dict(self.positions)
            self.copied.add("positions")
        return self.positions  # type: ignore[return-value]

    def orders_for_update(self) -> state.OrderBook:
        if "orders" not in self.copied:
            self.orders = self.orders.copy()
            self.copied.add("orders")
        return self.orders

    def account_state(self) -> AccountState:
        return AccountState(self.account, self.positions, self.orders, self.wallet, self.risk)


class _Market:
    """Mark and tier entries of the symbols one batch needs, each looked up once."""

    def __init__(self, marks: Any, tiers: Any) -> None:
        self._marks = marks
        self._tiers = tiers
        self._cache: dict[str, tuple[state.MarkEntry | None, state.TierEntry | None]] = {}

    def get(self, symbol: str) -> tuple[state.MarkEntry | None, state.TierEntry | None]:
        found = self._cache.get(symbol)
        if found is None:
            found = self._cache[symbol] = (self._marks.get(symbol), self._tiers.get(symbol))
        return found

    def marks(self, symbols: Iterable[str]) -> dict[str, Decimal]:
        return {s: m.price for s in symbols if (m := self.get(s)[0]) is not None}

    def tiers(self, symbols: Iterable[str]) -> dict[str, state.TierEntry]:
        return {s: t for s in symbols if (t := self.get(s)[1]) is not None}


@dataclass(frozen=True, slots=True)
class _Staged:
    """A snapshot waiting for its key's publication interval."""

    partition: int
    exposure: Any
    risk: state.RiskBook
    cause: Cause
    now: datetime
    fingerprint: tuple[object, ...]


class RiskProcessor:
    """The risk processor service; ``run()`` serves until cancelled."""

    def __init__(
        self,
        settings: RiskProcessorSettings,
        *,
        config: RiskConfig | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.config = config or load_config(
            settings.thresholds_file, net_exposure_limit_usd=settings.net_exposure_limit_usd
        )
        self.clock = clock
        self.source = f"{SERVICE}/{settings.instance}"
        self.metrics: Metrics = build_metrics()
        ns = self.kafka.topic_namespace
        self.names = {spec.name: spec.qualified(ns) for spec in (*INPUT_TOPICS, *OUTPUT_TOPICS)}
        self.names.update({spec.name: spec.qualified(ns) for spec in INTERNAL_TOPICS})
        self.health = Health()
        self.health.expect("kafka", "broker")
        self.http = HttpServer(
            settings.http_host, settings.http_port, self.health, api.routes(self)
        )
        self.published = PublishedAlerts(
            self.kafka,
            ALERTS.qualified(ns),
            self.kafka.topic_partitions,
            settings.alert_tail_records,
        )
        # Per-worker memory, rebuilt after a restart or rebalance (see docs/processing.md).
        self._exposures: dict[str, Any] = {}
        self._staged: dict[str, _Staged] = {}
        self._published_keys: dict[str, tuple[object, ...]] = {}
        self._emitted_at: dict[str, float] = {}
        self._inflight: dict[str, Any] = {}
        self._alert_views: dict[str, object] = {}
        self._portfolio_accounts: dict[str, state.AccountSummary] | None = None
        self._portfolio_due: tuple[int, Cause] | None = None
        self._portfolio_evaluated_at: float | None = None
        self._portfolio_lock = asyncio.Lock()
        self._fingerprints: dict[str, Fingerprint] = {}
        self._holders: dict[str, set[str]] = {}
        self._requested: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._assigned = False
        # Account-event records handled (including dead-lettered and stale ones).
        self.records_handled = 0
        self._fatal: BaseException | None = None
        # Labelled children looked up once: ``labels()`` costs microseconds per call.
        kinds = (
            "PositionUpdated",
            "OrderUpdated",
            "WalletUpdated",
            "ExecutionReported",
            "AccountStatusChanged",
            "MarkPriceUpdated",
            "RiskLimitTableUpdated",
        )
        self._processed = {k: self.metrics.events_processed.labels(k) for k in kinds}
        self._snapshots_account = self.metrics.snapshots_emitted.labels("account")
        self._eval_seconds = self.metrics.evaluation_seconds.labels("account")
        self._snapshots_portfolio = self.metrics.snapshots_emitted.labels("portfolio")
        self._stale = {k: self.metrics.stale_dropped.labels(k) for k in kinds}
        self.app = self._build_app()
        self._declare()
        self.writer = TableWriter(self.app, self.names[ACCOUNT_EVENTS.name])

    # ------------------------------------------------------------------ Faust wiring

    def _build_app(self) -> Any:
        k = self.kafka
        s = self.settings
        cls = type(
            "RiskProcessorApp",
            (TunedApp,),
            {
                "__module__": FAUST_LOGGER,
                "transport_cls": transport_class(
                    fetch_max_wait_ms=k.fetch_max_wait_ms,
                    enable_idempotence=k.enable_idempotence,
                    batch_drain=s.batch_drain,
                ),
            },
        )
        options: dict[str, Any] = {}
        tls = ssl.create_default_context() if k.security_protocol.endswith("SSL") else None
        if k.sasl_mechanism:
            options["broker_credentials"] = faust.SASLCredentials(
                username=k.sasl_username,
                password=k.sasl_password.get_secret_value() if k.sasl_password else None,
                mechanism=k.sasl_mechanism,
                ssl_context=tls,
            )
        elif tls is not None:
            options["broker_credentials"] = faust.SSLCredentials(tls)
        session_s = k.session_timeout_ms / 1000
        return cls(
            k.topic_namespace + s.app_id,
            broker=[f"kafka://{host}" for host in k.bootstrap_servers.split(",")],
            store=s.store,
            datadir=str(s.data_dir),
            autodiscover=False,
            # The topics' partition count, so every table is co-partitioned with the
            # topics keyed like it (Faust defaults to 8 and would refuse).
            topic_partitions=k.topic_partitions,
            GlobalTable=SharedTable,
            topic_replication_factor=k.replication_factor,
            # The leader topic is only needed for on_leader timers; we have none.
            topic_disable_leader=True,
            # Apache Kafka's minimum session (group.min.session.timeout.ms) is 6 s.
            broker_session_timeout=session_s,
            broker_heartbeat_interval=k.heartbeat_interval_ms / 1000,
            broker_rebalance_timeout=session_s,
            table_standby_replicas=s.table_standby_replicas,
            # Faust's exactly_once duplicates on rebalance and sends outside the
            # transaction; our outputs carry deterministic event ids instead
            # (docs/processing.md, "Restart").
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            producer_linger=k.linger_ms / 1000,
            producer_max_batch_size=256 * 1024,
            producer_acks=-1,
            broker_client_id=f"{SERVICE}-{s.instance}",
            web_enabled=False,
            key_serializer="raw",
            value_serializer="raw",
            **options,
        )

    def _declare(self) -> None:
        app = self.app
        key = faust_type(Utf8Key())
        partitions = self.kafka.topic_partitions
        # All writes go through TableWriter with an explicit partition. A global table is
        # written by the owner of each partition and read by every worker: Faust's
        # multi-writer mode for it is use_partitioner, and every changelog record must
        # apply as it arrives (tables.SharedTable).
        shared: dict[str, Any] = {"use_partitioner": True, "recovery_buffer_size": 1}

        def table(
            name: str,
            to_json: Any,
            from_json: Any,
            *,
            glob: bool = False,
        ) -> Any:
            factory = app.GlobalTable if glob else app.Table
            return factory(
                name,
                default=None,
                partitions=partitions,
                key_type=key,
                value_type=faust_type(JsonValue(to_json, from_json)),
                **(shared if glob else {}),
            )

        self.positions = table("positions", state.positions_to_json, state.positions_from_json)
        self.orders = table("orders", state.orders_to_json, state.orders_from_json)
        self.wallets = table("wallets", state.wallet_to_json, state.wallet_from_json)
        self.risk = table("risk", state.risk_to_json, state.risk_from_json)
        # Keys 'account:<name>' and 'risk', all in the partition of key 'portfolio', so the
        # worker that owns the portfolio recovers all of it.
        self.portfolio = table(
            "portfolio", state.portfolio_value_to_json, state.portfolio_value_from_json
        )
        self.marks = table("marks", state.mark_to_json, state.mark_from_json, glob=True)
        self.tiers = table("tiers", state.tiers_to_json, state.tiers_from_json, glob=True)
        self.views = app.GlobalTable(
            "views",
            default=None,
            partitions=partitions,
            key_type=key,
            value_type=faust_type(RawBytes()),
            **shared,
        )

        buffer = self.settings.buffer_events
        for name, specs, handler in (
            ("accounts", (ACCOUNT_EVENTS, REEVALUATE), self._account_batch),
            ("portfolio", (ACCOUNT_EXPOSURES,), self._portfolio_batch),
            ("marks", (MARK_PRICES,), self._mark_batch),
            ("tiers", (RISK_LIMITS,), self._tier_batch),
        ):
            channel = BatchTopic(
                app,
                topics=[self.names[s.name] for s in specs],
                key_serializer="raw",
                value_serializer="raw",
                partitions=partitions,
                buffer_size=buffer,
            )
            app.topics.add(channel)
            app.task(self._consumer_task(name, channel, handler))
        app.timer(self.settings.reevaluate_interval_s, name="reevaluate")(self._tick)
        # Trailing edge of snapshot coalescing: what a busy account staged gets out.
        snapshot_s = max(
            min(self.settings.snapshot_interval_ms, self.settings.portfolio_interval_ms) / 1000,
            0.02,
        )
        app.timer(snapshot_s, name="snapshots")(self._flush_snapshots)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)

    def _consumer_task(self, name: str, channel: BatchTopic, handler: Any) -> Any:
        max_batch = self.settings.batch_max_events
        gather_s = self.settings.batch_gather_ms / 1000
        histogram = self.metrics.batch_seconds.labels(name)

        async def timed(events: list[Any]) -> None:
            with histogram.time():
                await handler(events)

        async def consume() -> None:
            try:
                await run_batches(self.app, channel, timed, max_batch=max_batch, gather_s=gather_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("batch handler failed; stopping the worker", extra={"agent": name})
                self._fatal = exc

        return consume

    async def _on_revoked(self, sender: Any, revoked: Any, **_: Any) -> None:
        # Another worker may own these accounts next and publish for them.
        self.published.reset()
        self._fingerprints.clear()
        self._holders.clear()
        self._exposures.clear()
        self._published_keys.clear()
        self._alert_views.clear()
        self._portfolio_accounts = None
        self._portfolio_due = None
        self._staged.clear()

    async def _on_assigned(self, sender: Any, assigned: Any, **_: Any) -> None:
        self._assigned = True
        self.published.reset()

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
        """Create topics, start the HTTP server and the Faust worker; serve until cancelled."""
        await ensure_topics(
            self.kafka,
            [
                *INPUT_TOPICS,
                *OUTPUT_TOPICS,
                *(dead_letter_of(s) for s in INPUT_TOPICS),
                *INTERNAL_TOPICS,
                *self._changelogs(),
            ],
        )
        await self._check_partitions()
        # Faust creates only the last level of its data dir (RocksDB files live there).
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.http.start()
        add_to_dump("consumer", self._consumer_state)
        add_to_dump("delivery", lambda: {k: _by_tp(v) for k, v in DELIVERY.items()})
        add_to_dump("stale", lambda: _by_tp(STALE))
        probe = asyncio.ensure_future(
            BrokerProbe(self.kafka, lambda ok, d: self.health.set("broker", ok, d)).run()
        )
        try:
            await self.app.start()
            try:
                while not self.app.should_stop and self._fatal is None:
                    ok = self.ready
                    self.health.set("kafka", ok, "ready" if ok else "joining or recovering")
                    await asyncio.sleep(0.1)
                raise RuntimeError("the Faust worker stopped") from self._fatal
            finally:
                self.health.set("kafka", False, "stopping")
                try:
                    await asyncio.wait_for(self.app.stop(), 30)
                except Exception:
                    log.exception("the Faust worker did not stop cleanly")
        finally:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            await self.http.stop()

    def _changelogs(self) -> list[TopicSpec]:
        """The tables' changelog topics, which we create rather than Faust (see run)."""
        ns = self.kafka.topic_namespace
        keys = {
            "marks": KeyKind.SYMBOL,
            "tiers": KeyKind.SYMBOL,
            "portfolio": KeyKind.ACCOUNT_OR_PORTFOLIO,
        }
        return [
            TopicSpec(
                name=t.changelog_topic.get_topic_name().removeprefix(ns),
                value=bytes,
                key=keys.get(t.name, KeyKind.ACCOUNT),
                description=f"Faust changelog of the {t.name} table.",
                cleanup=CleanupPolicy.COMPACT,
            )
            for t in self.app.tables.values()
        ]

    async def _check_partitions(self) -> None:
        """Wait until the broker's metadata lists every topic we use, and refuse to start
        when one has another partition count than ``KAFKA_TOPIC_PARTITIONS``: an account's
        input, tables and alerts would be read from different partitions
        (docs/deployment.md, "Changing the partition count").

        Waiting matters: a GlobalTable changelog missing from the group leader's metadata
        makes Faust's assignor raise (KeyError in its global-table standby assignment), and
        the worker then never gets an assignment."""
        ns = self.kafka.topic_namespace
        names = [*self.names.values()]
        names += [
            s.qualified(ns) for s in (*self._changelogs(), *map(dead_letter_of, INPUT_TOPICS))
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.kafka.connect_timeout_s
        while len(counts := await partition_counts(self.kafka, names)) < len(names):
            if loop.time() > deadline:
                missing = sorted(set(names) - set(counts))
                raise RuntimeError(f"topics not in the broker's metadata: {missing}")
            await asyncio.sleep(0.1)
        wanted = self.kafka.topic_partitions
        wrong = {name: n for name, n in sorted(counts.items()) if n != wanted}
        if wrong:
            raise ConfigError(
                f"KAFKA_TOPIC_PARTITIONS is {wanted} but these topics have other partition "
                f"counts: {wrong}; see docs/deployment.md, 'Changing the partition count'"
            )

    # ------------------------------------------------------------------ helpers

    def _consumer_state(self) -> dict[str, Any]:
        """Offsets and flow of the Faust consumer per input partition, for the task dump
        (``kill -USR1``): tells a worker that never asks for records from one whose
        records never arrive."""
        consumer = self.app.consumer
        tps = sorted(
            (tp for tp in consumer.assignment() if not tp.topic.endswith("-changelog")),
            key=lambda tp: (tp.topic, tp.partition),
        )
        client = getattr(getattr(consumer, "_thread", None), "_consumer", None)
        assignment = client._subscription.subscription.assignment if client else None

        def fetch_state(tp: Any) -> Any:
            if assignment is None:
                return None
            st = assignment.state_value(tp)
            if st is None:
                return "unassigned in aiokafka"
            buffered = client._fetcher._records.get(tp) if client else None
            return {
                "position": st._position,
                "paused": st.paused,
                "reset": st.awaiting_reset,
                "buffered": buffered is not None,
            }

        active = consumer._active_partitions
        return {
            "generation": self.app.consumer_generation_id,
            "active": None if active is None else len(active),
            "flow_active": consumer.flow_active,
            "rebalancing": self.app.rebalancing,
            "recovered": self.app.tables.recovery.completed.is_set(),
            "paused": sorted(str(tp) for tp in consumer._paused_partitions),
            "partitions": {
                f"{tp.topic}[{tp.partition}]": {
                    "read": consumer._read_offset.get(tp),
                    "committed": consumer._committed_offset.get(tp),
                    "acked": len(consumer._acked.get(tp, ())),
                    "highwater": consumer.highwater(tp),
                    "faust_active": active is None or tp in active,
                    "aiokafka": fetch_state(tp),
                }
                for tp in tps
            },
            "records_handled": self.records_handled,
        }

    def _duplicate(self, event_id: str) -> bool:
        """Whether this process has seen ``event_id`` recently (bounded memory).

        Only a shortcut: the durable guard is the ordering key in each state value.
        """
        window = self.settings.dedup_window
        if not window:
            return False
        seen = self._seen_ids
        if event_id in seen:
            return True
        seen[event_id] = None
        if len(seen) > window:
            seen.popitem(last=False)
        return False

    async def _send(self, topic: str, key: str, value: bytes) -> Any:
        return await self.app.producer.send(topic, key.encode(), value, None, None, None)

    async def _dead_letter(
        self, spec: TopicSpec, message: Any, error: BaseException, reason: str
    ) -> None:
        source_topic = message.topic
        key = message.key
        record = RecordDeadLettered(
            source_topic=source_topic,
            source_partition=message.partition,
            source_offset=message.offset,
            source=f"{source_topic}[{message.partition}]@{message.offset}",
            key=key.decode(errors="replace") if key is not None else None,
            value=(message.value or b"").decode(errors="replace"),
            error_type=type(error).__name__,
            error=str(error)[:4000],
            service=SERVICE,
            failed_at=self.clock(),
        )
        dlq = dead_letter_of(spec).qualified(self.kafka.topic_namespace)
        await self.app.producer.send(dlq, key, encode(record), None, None, None)
        self.metrics.dead_lettered.labels(source_topic, reason).inc()
        log.warning(
            "record dead-lettered",
            extra={"source": record.source, "reason": reason, "error": str(error)[:500]},
        )

    def _market(self) -> _Market:
        return _Market(self.marks, self.tiers)

    def _fingerprint(self, symbols: Iterable[str], market: _Market) -> Fingerprint:
        out = []
        for symbol in sorted(symbols):
            mark, tiers = market.get(symbol)
            out.append(
                (
                    symbol,
                    mark.price if mark is not None else None,
                    tiers.version if tiers is not None else None,
                )
            )
        return tuple(out)

    def _market_cause(
        self, account: str, symbols: Iterable[str], now: datetime, market: _Market
    ) -> Cause:
        """The newest market record among the symbols that moved since the last evaluation."""
        before = {s: (m, v) for s, m, v in self._fingerprints.get(account, ())}
        best: tuple[int, str] | None = None
        for symbol in symbols:
            mark, tiers = market.get(symbol)
            held = before.get(symbol)
            moves: list[tuple[int, str]] = []
            if mark is not None and (held is None or held[0] != mark.price):
                moves.append((mark.produced_ms, mark.correlation_id))
            if tiers is not None and (held is None or held[1] != tiers.version):
                moves.append((tiers.produced_ms, tiers.correlation_id))
            for move in moves:
                if best is None or move[0] > best[0]:
                    best = move
        if best is None:
            return Cause(f"reevaluate-{account}", now, None)
        return Cause(best[1], from_ms(best[0]), from_ms(best[0]))

    # ------------------------------------------------------------------ accounts agent

    def _load(self, account: str, partition: int) -> _Work:
        risk = self.risk.get(account) or state.EMPTY_RISK
        return _Work(
            account=account,
            partition=partition,
            positions=self.positions.get(account) or {},
            orders=self.orders.get(account) or state.EMPTY_ORDERS,
            wallet=self.wallets.get(account),
            risk=risk,
            loaded_risk=risk,
        )

    def _apply(self, work: _Work, event: Any) -> bool:
        """Apply one account event to ``work``; False when it changed nothing."""
        if isinstance(event, PositionUpdated):
            if not state.apply_position(work.positions_for_update(), event):
                return False
            work.dirty.add("positions")
        elif isinstance(event, OrderUpdated):
            if not state.apply_order(work.orders_for_update(), event):
                return False
            work.dirty.add("orders")
        elif isinstance(event, WalletUpdated):
            wallet = state.apply_wallet(work.wallet, event)
            if wallet is None:
                return False
            work.wallet = wallet
            work.dirty.add("wallets")
        else:
            # Executions are followed by the position and order updates they cause; link
            # status is the ingestor's health, not risk state.
            return isinstance(event, ExecutionReported | AccountStatusChanged)
        return True

    async def _account_batch(self, events: list[Any]) -> None:
        reevaluate_topic = self.names[REEVALUATE.name]
        work: dict[str, _Work] = {}
        metrics = self.metrics
        self.records_handled += len(events)
        processed = self._processed
        stale = self._stale
        newest: datetime | None = None
        for ev in events:
            message = ev.message
            if message.topic == reevaluate_topic:
                try:
                    request = orjson.loads(message.value)
                    account = str(request["account"])
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    log.error("bad re-evaluate request dropped", extra={"error": str(exc)})
                    continue
                w = work.get(account)
                if w is None:
                    w = work[account] = self._load(account, message.partition)
                w.reevaluate = True
                continue
            try:
                event = ACCOUNT_EVENTS.decode(message.value or b"")
            except (ValidationError, ValueError) as exc:
                await self._dead_letter(ACCOUNT_EVENTS, message, exc, "decode")
                continue
            kind = event.event_type
            processed[kind].inc()
            if message.key != event.account.encode():
                # The partition (and the table partition) follows the key: a record keyed
                # by another account would put this account's state in the wrong place.
                error = ValueError(f"record key {message.key!r} is not account {event.account!r}")
                await self._dead_letter(ACCOUNT_EVENTS, message, error, "key")
                continue
            if self._duplicate(event.event_id):
                stale[kind].inc()
                continue
            w = work.get(event.account)
            if w is None:
                w = work[event.account] = self._load(event.account, message.partition)
            try:
                changed = self._apply(w, event)
            except (ValueError, ArithmeticError) as exc:
                await self._dead_letter(ACCOUNT_EVENTS, message, exc, "handle")
                continue
            if not changed:
                stale[kind].inc()
                continue
            if not isinstance(event, ExecutionReported | AccountStatusChanged):
                w.cause = Cause(event.correlation_id, event.occurred_at, event.produced_at)
            newest = event.produced_at
        if not work:
            return
        now = self.clock()
        if newest is not None:
            metrics.input_lag_seconds.observe(max((now - newest).total_seconds(), 0.0))
        for w in work.values():
            if w.risk.outbox:
                w.risk = await self._recover_outbox(w.partition, w.risk)
        market = self._market()
        for w in work.values():
            symbols = w.account_state().symbols()
            fingerprint = self._fingerprint(symbols, market)
            unchanged = self._fingerprints.get(w.account) == fingerprint
            if not w.dirty and (not w.reevaluate or unchanged):
                continue
            if not symbols and w.wallet is None:
                continue
            cause = w.cause or self._market_cause(w.account, symbols, now, market)
            started = time.perf_counter()
            try:
                result = evaluate_account(
                    w.account_state(),
                    marks=market.marks(symbols),
                    tiers=market.tiers(symbols),
                    config=self.config,
                    now=now,
                    cause=cause,
                    source=self.source,
                    previous=self._exposures.get(w.account),
                )
            except Exception:
                metrics.evaluation_failures.labels("account").inc()
                log.exception("account evaluation failed", extra={"account": w.account})
                continue
            self._eval_seconds.observe(time.perf_counter() - started)
            self._exposures[w.account] = result.exposure
            metrics.record_exposure(result.exposure, now.timestamp())
            self._fingerprints[w.account] = fingerprint
            for symbol in symbols:
                self._holders.setdefault(symbol, set()).add(w.account)
            self._dirty.discard(w.account)
            if result.risk_id_mismatches:
                metrics.risk_id_disagreements.inc(result.risk_id_mismatches)
            if result.platform_changes:
                metrics.platform_changes.inc(result.platform_changes)
            # Alerts go out now, in this batch; the risk book written below carries them in
            # its outbox, so no wait for the broker's acknowledgement is needed here.
            w.risk = await self._publish(
                w.partition, self._settle(result.risk), result.alerts, cause.produced_at
            )
            if w.risk != w.loaded_risk:
                w.dirty.add("risk")
            self._stage_output(w.account, w.partition, result.exposure, w.risk, cause, now)
        put = self.writer.put
        for w in work.values():
            if "positions" in w.dirty:
                await put(self.positions, w.partition, w.account, w.positions)
            if "orders" in w.dirty:
                await put(self.orders, w.partition, w.account, w.orders)
            if "wallets" in w.dirty:
                await put(self.wallets, w.partition, w.account, w.wallet)
            if "risk" in w.dirty:
                await put(self.risk, w.partition, w.account, w.risk)
        await self._emit_due()
        metrics.accounts.set(len(self._fingerprints))

    # ------------------------------------------------------------------ alert outbox

    async def _publish(
        self,
        partition: int,
        risk: state.RiskBook,
        alerts: Iterable[RiskAlertChanged],
        produced_at: datetime | None,
    ) -> state.RiskBook:
        """Send each transition not already on the alerts topic; return ``risk`` with them
        in its outbox (see ``state.RiskBook``)."""
        alerts = list(alerts)
        if not alerts:
            return risk
        await self.published.load(partition)
        topic = self.names[ALERTS.name]
        outbox = dict(risk.outbox)
        for alert in alerts:
            if self.published.seen(partition, alert.event_id):
                self.metrics.replayed_alerts_suppressed.inc()
                log.info(
                    "alert already published before a restart; not re-sent",
                    extra={"event_id": alert.event_id, "alert_id": alert.alert_id},
                )
                continue
            body = encode(alert)
            self._inflight[alert.event_id] = await self._send(topic, alert.account, body)
            self.published.add(partition, alert.event_id)
            outbox[alert.event_id] = body
            self.metrics.alerts.labels(alert.rule, alert.transition.value).inc()
            if produced_at is not None:
                latency = (datetime.now(UTC) - produced_at).total_seconds()
                self.metrics.input_to_alert_seconds.observe(max(latency, 0.0))
            log.info(
                "alert %s",
                alert.transition.value,
                extra={
                    "alert_id": alert.alert_id,
                    "event_id": alert.event_id,
                    "account": alert.account,
                    "rule": alert.rule,
                    "subject": alert.subject,
                    "severity": alert.severity.value,
                    "correlation_id": alert.correlation_id,
                },
            )
        return replace(risk, outbox=outbox)

    def _settle(self, risk: state.RiskBook) -> state.RiskBook:
        """``risk`` without the outbox entries the broker has acknowledged."""
        if not risk.outbox:
            return risk
        keep: dict[str, bytes] = {}
        for event_id, body in risk.outbox.items():
            fut = self._inflight.get(event_id)
            if fut is not None and fut.done() and not fut.cancelled() and not fut.exception():
                del self._inflight[event_id]
                continue
            keep[event_id] = body
        return risk if len(keep) == len(risk.outbox) else replace(risk, outbox=keep)

    async def _recover_outbox(self, partition: int, risk: state.RiskBook) -> state.RiskBook:
        """Outbox entries this process did not send came from before a restart: publish
        those the alerts topic does not have, drop those it has."""
        unknown = [k for k in risk.outbox if k not in self._inflight]
        if not unknown:
            return self._settle(risk)
        await self.published.load(partition)
        topic = self.names[ALERTS.name]
        keep = dict(risk.outbox)
        for event_id in unknown:
            body = keep[event_id]
            if self.published.seen(partition, event_id):
                del keep[event_id]
                continue
            doc = orjson.loads(body)
            self._inflight[event_id] = await self._send(topic, str(doc["account"]), body)
            self.published.add(partition, event_id)
            self.metrics.alerts.labels(str(doc["rule"]), str(doc["transition"])).inc()
            log.warning(
                "alert from before a restart found unpublished; published now",
                extra={"event_id": event_id, "alert_id": doc.get("alert_id")},
            )
        return replace(risk, outbox=keep)

    # ------------------------------------------------------------------ coalesced outputs

    def _stage_output(
        self,
        key: str,
        partition: int,
        exposure: Any,
        risk: state.RiskBook,
        cause: Cause,
        now: datetime,
    ) -> None:
        """Queue ``key``'s snapshot, alert view and (for an account) portfolio summary,
        unless they show what was published last; ``_emit_due`` publishes at most one per
        interval. Alerts themselves are never delayed: they go out as they happen."""
        alerts = tuple((k, a.severity, a.value) for k, a in risk.alerts.items())
        fingerprint = (exposure_key(exposure), alerts)
        if self._published_keys.get(key) == fingerprint:
            self._staged.pop(key, None)
            return
        self._staged[key] = _Staged(partition, exposure, risk, cause, now, fingerprint)

    async def _flush_snapshots(self) -> None:
        await self._evaluate_portfolio()
        await self._emit_due()

    async def _emit_due(self, *, everything: bool = False) -> None:
        """Publish staged snapshots whose key has not published within the interval."""
        if not self._staged:
            return
        interval = self.settings.snapshot_interval_ms / 1000
        clock = time.monotonic()
        exposures = self.names[EXPOSURES.name]
        summaries = self.names[ACCOUNT_EXPOSURES.name]
        put = self.writer.put
        for key in list(self._staged):
            last = self._emitted_at.get(key)
            if not everything and last is not None and clock - last < interval:
                continue
            # The snapshot timer and a batch both emit, and each yields while sending:
            # what the other already took is gone.
            staged = self._staged.pop(key, None)
            if staged is None:
                continue
            self._emitted_at[key] = clock
            self._published_keys[key] = staged.fingerprint
            e = staged.exposure
            build = portfolio_snapshot if key == PORTFOLIO_KEY else account_snapshot
            body, _ = build(e, now=staged.now, cause=staged.cause, source=self.source)
            await self._send(exposures, key, body)
            await put(self.views, staged.partition, api.exposure_key(key), body)
            alerts = staged.fingerprint[1]
            if self._alert_views.get(key) != alerts:
                self._alert_views[key] = alerts
                await self._update_alert_view(staged.partition, key, staged.risk)
            if key == PORTFOLIO_KEY:
                self._snapshots_portfolio.inc()
                continue
            self._snapshots_account.inc()
            cause = staged.cause
            summary = {
                "account": key,
                "at": to_ms(staged.now),
                "corr": cause.correlation_id,
                "produced": to_ms(cause.produced_at or staged.now),
                "e": codec.exposure_to_json(e),
            }
            await self._send(summaries, PORTFOLIO_KEY, orjson.dumps(summary))

    async def _update_alert_view(self, partition: int, account: str, risk: state.RiskBook) -> None:
        body = orjson.dumps([s.to_dict() for s in risk.alerts.values()])
        key = api.alerts_key(account)
        if self.views.get(key) != body:
            await self.writer.put(self.views, partition, key, body)

    # ------------------------------------------------------------------ portfolio agent

    async def _portfolio_batch(self, events: list[Any]) -> None:
        table = self.portfolio
        cause: Cause | None = None
        partition = events[0].message.partition
        changed: dict[str, state.AccountSummary] = {}
        for ev in events:
            message = ev.message
            try:
                doc = orjson.loads(message.value)
                summary = state.AccountSummary(
                    codec.exposure_from_json(doc["e"]),
                    int(doc["at"]),
                    str(doc["corr"]),
                    int(doc["produced"]),
                    doc["e"],
                )
                account = str(doc["account"])
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                log.error("bad account exposure dropped", extra={"error": str(exc)})
                continue
            held = changed.get(account) or table.get(_ACCOUNT_KEY + account)
            if not state.newer_summary(held, summary):
                self.metrics.stale_dropped.labels("AccountExposure").inc()
                continue
            changed[account] = summary
            cause = Cause(
                summary.correlation_id, from_ms(summary.at_ms), from_ms(summary.produced_ms)
            )
        if not changed or cause is None:
            return
        for account, summary in changed.items():
            await self.writer.put(table, partition, _ACCOUNT_KEY + account, summary)
        accounts = self._portfolio_accounts
        if accounts is None:
            # Rebuilt from the table once per assignment; kept current by this handler.
            accounts = self._portfolio_accounts = {
                k[len(_ACCOUNT_KEY) :]: v for k, v in table.items() if k.startswith(_ACCOUNT_KEY)
            }
        accounts.update(changed)
        self._portfolio_due = (partition, cause)
        await self._evaluate_portfolio()

    async def _evaluate_portfolio(self) -> None:
        """Evaluate the portfolio if an account changed since, at most once per interval.

        The portfolio is O(accounts) to evaluate and accounts change many times a second
        under load; the first change is evaluated at once, later ones within the interval
        together at its end (the snapshot timer calls this too).
        """
        if self._portfolio_due is None:
            return
        interval = self.settings.portfolio_interval_ms / 1000
        last = self._portfolio_evaluated_at
        if last is not None and time.monotonic() - last < interval:
            return
        async with self._portfolio_lock:
            due, self._portfolio_due = self._portfolio_due, None
            accounts = self._portfolio_accounts
            if due is None or accounts is None:
                return
            self._portfolio_evaluated_at = time.monotonic()
            partition, cause = due
            table = self.portfolio
            risk = table.get(_RISK_KEY) or state.EMPTY_RISK
            alerts_partition = self.published.partition_for(PORTFOLIO_KEY)
            if risk.outbox:
                risk = await self._recover_outbox(alerts_partition, risk)
            now = self.clock()
            started = time.perf_counter()
            try:
                result = evaluate_portfolio(
                    accounts, risk, config=self.config, now=now, cause=cause, source=self.source
                )
            except Exception:
                self.metrics.evaluation_failures.labels("portfolio").inc()
                log.exception("portfolio evaluation failed")
                return
            self.metrics.evaluation_seconds.labels("portfolio").observe(
                time.perf_counter() - started
            )
            risk = await self._publish(
                alerts_partition, self._settle(result.risk), result.alerts, cause.produced_at
            )
            await self.writer.put(table, partition, _RISK_KEY, risk)
            self._stage_output(PORTFOLIO_KEY, partition, result.exposure, risk, cause, now)
        await self._emit_due()

    # ------------------------------------------------------------------ market data

    async def _mark_batch(self, events: list[Any]) -> None:
        latest: dict[str, tuple[int, Any]] = {}
        for ev in events:
            try:
                mark = MARK_PRICES.decode(ev.message.value or b"")
            except (ValidationError, ValueError) as exc:
                await self._dead_letter(MARK_PRICES, ev.message, exc, "decode")
                continue
            self._processed["MarkPriceUpdated"].inc()
            # Only the newest mark per symbol matters; older ones in the batch are skipped.
            latest[mark.symbol] = (ev.message.partition, mark)
        moved = []
        for symbol, (partition, mark) in latest.items():
            entry = state.apply_mark(self.marks.get(symbol), mark)
            if entry is None:
                continue
            await self.writer.put(self.marks, partition, symbol, entry)
            moved.append(symbol)
        if moved:
            await self._request_for(moved, "mark")

    async def _tier_batch(self, events: list[Any]) -> None:
        changed = []
        for ev in events:
            try:
                update = RISK_LIMITS.decode(ev.message.value or b"")
                entry = state.apply_tiers(self.tiers.get(update.symbol), update)
            except (ValidationError, ValueError) as exc:
                await self._dead_letter(RISK_LIMITS, ev.message, exc, "decode")
                continue
            self._processed["RiskLimitTableUpdated"].inc()
            if entry is None:
                self._stale["RiskLimitTableUpdated"].inc()
                continue
            await self.writer.put(self.tiers, ev.message.partition, update.symbol, entry)
            changed.append(update.symbol)
            log.info(
                "tier table changed", extra={"symbol": update.symbol, "version": entry.version}
            )
        if changed:
            await self._request_for(changed, "tiers")

    async def _request_for(self, symbols: Iterable[str], reason: str) -> None:
        """Mark the holders of ``symbols`` dirty and request at once those not requested
        within the interval (leading edge); the timer requests the rest (trailing edge)."""
        for symbol in symbols:
            self._dirty |= self._holders.get(symbol, set())
        await self._flush_requests(reason, min_age=self.settings.reevaluate_interval_s)

    async def _flush_requests(self, reason: str, *, min_age: float) -> None:
        """Send a re-evaluate request for every dirty account last requested ``min_age``
        or more seconds ago: at most one per account per interval, whatever the tick rate."""
        now = time.monotonic()
        topic = self.names[REEVALUATE.name]
        due = [
            a
            for a in sorted(self._dirty)
            if (last := self._requested.get(a)) is None or now - last >= min_age
        ]
        for account in due:
            self._requested[account] = now
            self._dirty.discard(account)
            body = orjson.dumps({"account": account, "reason": reason})
            await self._send(topic, account, body)
            self.metrics.reevaluations_requested.labels(reason).inc()

    def _owned_accounts(self) -> set[str]:
        """Accounts in our tables whose partition this worker is assigned now (a memory
        store may still hold accounts of partitions revoked from us)."""
        topic = self.names[ACCOUNT_EVENTS.name]
        owned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}
        partition_for = self.published.partition_for
        accounts = set(self.positions.keys()) | set(self.orders.keys())
        return {a for a in accounts if partition_for(a) in owned}

    async def _tick(self) -> None:
        """Every interval: request re-evaluation of accounts whose marks or tier tables
        moved (found by comparing fingerprints, which also covers market data that
        another worker wrote to the GlobalTables), and of accounts not yet evaluated by
        this process (after a start or a rebalance)."""
        market = self._market()
        for account in self._owned_accounts():
            if account in self._dirty:
                continue
            held = self._fingerprints.get(account)
            if held is None or self._fingerprint([s for s, _, _ in held], market) != held:
                self._dirty.add(account)
        # 0.9: a tick that fires a little early must not postpone a request a whole interval.
        await self._flush_requests("timer", min_age=self.settings.reevaluate_interval_s * 0.9)


def _by_tp(counts: Mapping[Any, int]) -> dict[str, int]:
    return {f"{tp.topic}[{tp.partition}]": n for tp, n in counts.items()}


async def main(settings: RiskProcessorSettings) -> None:
    """Entry point of ``python -m risk_processor`` (logging is configured by then)."""
    quiet_faust_logs(logging.getLogger().getEffectiveLevel())
    await RiskProcessor(settings).run()
