"""The one path to Kafka: a bounded queue in front of a batching publisher.

Readers put events on the queue; when Kafka is slow the queue fills and ``put`` blocks, so
readers stop reading their sockets (TCP pushes back to the exchange) instead of growing
memory. The publisher takes everything queued (up to a batch), sends it all, flushes once,
and re-sends whatever the broker did not take, in order: an event is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingestor import metrics
from riskwatch_common.contracts import Event
from riskwatch_common.kafka import Producer
from riskwatch_common.topics import TopicSpec, encode

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Publish:
    spec: TopicSpec
    key: str
    event: Event
    # Exchange time of the frame behind the event (ms), for the latency histogram; None for
    # REST snapshots, whose rows can be hours old.
    exchange_ms: int | None = None
    kind: str = "account"


@dataclass(slots=True)
class DeadLetter:
    spec: TopicSpec
    raw: bytes
    key: str
    error: str
    source: str
    reason: str


Item = Publish | DeadLetter
Observer = Callable[[list[Publish], int], None]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Publisher:
    def __init__(
        self,
        producer: Producer,
        *,
        queue_size: int,
        batch_max: int,
        now_ms: Callable[[], int] = _wall_ms,
        monotonic: Callable[[], float] = time.monotonic,
        retry_delay_s: float = 1.0,
        observer: Observer | None = None,
    ) -> None:
        self.producer = producer
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_size)
        self._batch_max = batch_max
        self._now_ms = now_ms
        self._mono = monotonic
        self._retry_delay_s = retry_delay_s
        self._observer = observer
        self.published = 0
        self.published_by_topic: Counter[str] = Counter()
        metrics.QUEUE_DEPTH.set_function(self.queue.qsize)

    async def put(self, item: Item) -> None:
        if self.queue.full():
            started = self._mono()
            await self.queue.put(item)
            metrics.QUEUE_BLOCKED_SECONDS.inc(self._mono() - started)
        else:
            self.queue.put_nowait(item)

    async def run(self) -> None:
        """Publish until cancelled."""
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self._batch_max and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._publish(batch)
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued so far is acknowledged; False on timeout."""
        try:
            await asyncio.wait_for(self.queue.join(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _publish(self, batch: list[Item]) -> None:
        pending = batch
        while pending:
            sent: list[tuple[Item, asyncio.Future[Any] | None]] = []
            for item in pending:
                sent.append((item, await self._send(item)))
            try:
                await self.producer.flush()
            except Exception:
                log.exception("producer flush failed")
            failed_ids = {id(item) for item, fut in sent if fut is None or _failed(fut)}
            self._observe(
                [i for i, _ in sent if isinstance(i, Publish) and id(i) not in failed_ids]
            )
            if failed_ids:
                # Re-send in the original order; readers block on the full queue meanwhile.
                pending = [item for item in pending if id(item) in failed_ids]
                metrics.PUBLISH_RETRIES.inc(len(pending))
                log.warning("broker did not take %d records, re-sending", len(pending))
                await asyncio.sleep(self._retry_delay_s)
            else:
                pending = []
        metrics.PUBLISH_BATCH.observe(len(batch))

    async def _send(self, item: Item) -> asyncio.Future[Any] | None:
        try:
            if isinstance(item, DeadLetter):
                await self.producer.dead_letter(
                    item.spec,
                    value=item.raw,
                    key=item.key.encode(),
                    error=item.error,
                    source=item.source,
                    reason=item.reason,
                )
                metrics.DEAD_LETTERED.labels(item.reason).inc()
                return _done_future()
            return await self.producer.send_raw(
                self.producer.topic(item.spec), item.key.encode(), encode(item.event)
            )
        except Exception:
            log.exception("producer send failed")
            return None

    def _observe(self, ok: list[Publish]) -> None:
        if not ok:
            return
        now = self._now_ms()
        for item in ok:
            self.published_by_topic[item.spec.name] += 1
            metrics.published(item.event.event_type).inc()
            if item.exchange_ms is not None:
                metrics.publish_latency(item.kind).observe((now - item.exchange_ms) / 1000)
        self.published += len(ok)
        if self._observer is not None:
            self._observer(ok, now)


def _failed(fut: asyncio.Future[Any]) -> bool:
    return not fut.done() or fut.cancelled() or fut.exception() is not None


def _done_future() -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut
