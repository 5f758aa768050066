"""The alert outbox: alert transitions out, exactly once as far as the broker lets us.

``Outbox`` sends each transition, keeps the send in flight until the broker acknowledged
it, re-sends a send that failed (in the running process, from the timer), and after a
restart publishes what the risk book's outbox holds and the alerts topic does not.

Which alert transitions are already on the alerts topic, for the crash window:

A transition leaves in two records that a crash can separate: the alert itself and the
changelog record of the risk book, which carries the transition in its outbox. If the
changelog record got out and the alert did not, the outbox publishes it after the restart.
If the alert got out and the changelog record did not, the input is replayed (it was not
committed) and computes the same transition with the same deterministic event id. Before
publishing for a partition the first time (after a start or a rebalance), the processor
reads the last ``records_per_partition`` records of that alerts partition and skips any
transition whose event id is already there, so a replay re-publishes nothing that made it
out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from risk_processor import metrics, state
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import RiskAlertChanged
from riskwatch_common.kafka import client_kwargs
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import encode

log = logging.getLogger(__name__)


class PublishedAlerts:
    def __init__(
        self, kafka: KafkaSettings, topic: str, partitions: int, records_per_partition: int
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.partitions = partitions
        self.records = records_per_partition
        self._partitioner = DefaultPartitioner()
        self._ids: dict[int, set[str]] = {}
        self._order: dict[int, deque[str]] = {}
        self._loading: dict[int, asyncio.Future[None]] = {}
        self._generation = 0

    def partition_for(self, key: str) -> int:
        """The alerts partition of ``key``, as the producer's default partitioner picks it."""
        all_partitions = list(range(self.partitions))
        return int(self._partitioner(key.encode(), all_partitions, all_partitions))

    def reset(self) -> None:
        """Forget everything: after a rebalance another worker may have published."""
        self._ids.clear()
        self._order.clear()
        # A tail read still running belongs to the old assignment: it must not install.
        self._generation += 1

    async def load(self, partition: int) -> None:
        """Read the tail of ``partition`` once; later calls return at once."""
        while partition not in self._ids:
            await self.load_many([partition])

    async def load_many(self, partitions: Iterable[int]) -> None:
        """Read the tails of every partition of ``partitions`` not loaded yet, with one
        consumer; a partition another call is loading is waited for, not read twice.

        The processor calls this for its whole assignment as soon as it has one, so the
        first alert of each partition does not wait for a consumer to start (each one
        used to, and those waits were the input-to-alert p99).
        """
        wanted = sorted({p for p in partitions if p not in self._ids})
        waiting = {self._loading[p] for p in wanted if p in self._loading}
        todo = [p for p in wanted if p not in self._loading]
        if todo:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for p in todo:
                self._loading[p] = done
            generation = self._generation
            try:
                tails = await self._tails(todo) if self.records else {}
                if generation == self._generation:
                    for p in todo:
                        self._install(p, tails.get(p, []))
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)
                done.exception()  # retrieved: the waiters retry on their own
                raise
            finally:
                for p in todo:
                    if self._loading.get(p) is done:
                        del self._loading[p]
        for other in waiting:
            with contextlib.suppress(Exception):
                await asyncio.shield(other)

    def _install(self, partition: int, event_ids: list[str]) -> None:
        ids: set[str] = set()
        order: deque[str] = deque()
        for event_id in event_ids:
            self._remember(ids, order, event_id)
        self._ids[partition] = ids
        self._order[partition] = order
        log.info(
            "published alerts loaded",
            extra={"topic": self.topic, "partition": partition, "records": len(ids)},
        )

    def seen(self, partition: int, event_id: str) -> bool:
        return event_id in self._ids.get(partition, ())

    def add(self, partition: int, event_id: str) -> None:
        ids = self._ids.setdefault(partition, set())
        order = self._order.setdefault(partition, deque())
        self._remember(ids, order, event_id)

    def _remember(self, ids: set[str], order: deque[str], event_id: str) -> None:
        if event_id in ids:
            return
        ids.add(event_id)
        order.append(event_id)
        while len(order) > max(self.records, 1):
            ids.discard(order.popleft())

    async def _tails(self, partitions: list[int]) -> dict[int, list[str]]:
        """The event ids of the last ``records`` records of each partition."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.kafka),
            enable_auto_commit=False,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            begins = await consumer.beginning_offsets(tps)
            out: dict[int, list[str]] = {tp.partition: [] for tp in tps}
            reading: dict[TopicPartition, int] = {}
            for tp in tps:
                start = max(begins[tp], ends[tp] - self.records)
                if start < ends[tp]:
                    consumer.seek(tp, start)
                    reading[tp] = ends[tp]
                else:
                    consumer.pause(tp)
            while reading:
                batch = await consumer.getmany(*reading, timeout_ms=500)
                for tp, records in batch.items():
                    for rec in records:
                        try:
                            doc = orjson.loads(rec.value or b"{}")
                        except orjson.JSONDecodeError:
                            continue
                        event_id = doc.get("event_id") if isinstance(doc, dict) else None
                        if isinstance(event_id, str):
                            out[tp.partition].append(event_id)
                for tp in list(reading):
                    if await consumer.position(tp) >= reading[tp]:
                        del reading[tp]
                        consumer.pause(tp)
            return out
        finally:
            await consumer.stop()


Send = Callable[[str, str, bytes], Awaitable["asyncio.Future[Any]"]]


@dataclass(slots=True)
class _InFlight:
    future: asyncio.Future[Any]
    partition: int
    key: str
    body: bytes


class Outbox:
    """Publishes alert transitions and tracks each until the broker acknowledged it.

    ``send(topic, key, value)`` queues a record and returns its delivery future (the Faust
    producer's); ``clock`` is wall time, for the input-to-alert latency.
    """

    def __init__(
        self,
        published: PublishedAlerts,
        send: Send,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.published = published
        self.topic = published.topic
        self._send = send
        self._clock = clock
        self._inflight: dict[str, _InFlight] = {}
        self._preloads: set[asyncio.Task[None]] = set()

    def partition_for(self, key: str) -> int:
        return self.published.partition_for(key)

    def reset(self) -> None:
        """After a rebalance: another worker may have published for our old partitions."""
        self.published.reset()

    def preload(self, partitions: Iterable[int]) -> None:
        """Start reading the alerts-topic tails of ``partitions`` in the background (the
        partitions just assigned), so the first alert of each does not wait for it."""
        task = asyncio.ensure_future(self._preload(list(partitions)))
        self._preloads.add(task)
        task.add_done_callback(self._preloads.discard)

    async def _preload(self, partitions: list[int]) -> None:
        try:
            await self.published.load_many(partitions)
        except Exception as exc:
            # The first publish of each partition reads its tail itself (and fails loudly).
            log.warning("published alerts not preloaded", extra={"error": repr(exc)})

    async def publish(
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
        outbox = dict(risk.outbox)
        for alert in alerts:
            if self.published.seen(partition, alert.event_id):
                metrics.REPLAYED_ALERTS_SUPPRESSED.inc()
                log.info(
                    "alert already published before a restart; not re-sent",
                    extra={"event_id": alert.event_id, "alert_id": alert.alert_id},
                )
                continue
            body = encode(alert)
            await self._put(partition, alert.event_id, alert.account, body)
            outbox[alert.event_id] = body
            metrics.ALERTS.labels(alert.rule, alert.transition.value).inc()
            if produced_at is not None:
                latency = (self._clock() - produced_at).total_seconds()
                metrics.INPUT_TO_ALERT_SECONDS.observe(max(latency, 0.0))
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

    async def _put(self, partition: int, event_id: str, key: str, body: bytes) -> None:
        future = await self._send(self.topic, key, body)
        self._inflight[event_id] = _InFlight(future, partition, key, body)
        self.published.add(partition, event_id)

    def settle(self, risk: state.RiskBook) -> state.RiskBook:
        """``risk`` without the outbox entries the broker has acknowledged."""
        if not risk.outbox:
            return risk
        keep: dict[str, bytes] = {}
        for event_id, body in risk.outbox.items():
            sent = self._inflight.get(event_id)
            if sent is not None and _acknowledged(sent.future):
                del self._inflight[event_id]
                continue
            keep[event_id] = body
        return risk if len(keep) == len(risk.outbox) else replace(risk, outbox=keep)

    async def recover(self, partition: int, risk: state.RiskBook) -> state.RiskBook:
        """Outbox entries this process did not send came from before a restart: publish
        those the alerts topic does not have, drop those it has."""
        unknown = [k for k in risk.outbox if k not in self._inflight]
        if not unknown:
            return self.settle(risk)
        await self.published.load(partition)
        keep = dict(risk.outbox)
        for event_id in unknown:
            body = keep[event_id]
            if self.published.seen(partition, event_id):
                del keep[event_id]
                continue
            alert = RiskAlertChanged.model_validate_json(body)
            await self._put(partition, event_id, alert.account, body)
            metrics.ALERTS.labels(alert.rule, alert.transition.value).inc()
            log.warning(
                "alert from before a restart found unpublished; published now",
                extra={"event_id": event_id, "alert_id": alert.alert_id},
            )
        return replace(risk, outbox=keep)

    async def retry_failed(self) -> int:
        """Send again every transition whose send failed; returns how many (the timer
        calls this, so a failed publish does not wait for a restart)."""
        failed = [
            (event_id, sent)
            for event_id, sent in self._inflight.items()
            if sent.future.done() and not _acknowledged(sent.future)
        ]
        for event_id, sent in failed:
            metrics.ALERT_PUBLISH_RETRIES.inc()
            log.warning(
                "alert publish failed; sending it again",
                extra={"event_id": event_id, "error": _failure(sent.future)},
            )
            await self._put(sent.partition, event_id, sent.key, sent.body)
        return len(failed)


def _acknowledged(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _failure(future: asyncio.Future[Any]) -> str:
    if future.cancelled():
        return "cancelled"
    return repr(future.exception())
