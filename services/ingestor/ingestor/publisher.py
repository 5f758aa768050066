"""The one path to Kafka: a bounded queue in front of a batching publisher.

Readers put events on the queue; when Kafka is slow the queue fills and ``put`` blocks, so
readers stop reading their sockets (TCP pushes back to the exchange) instead of growing
memory. The publisher takes everything queued (up to a batch), sends it all, flushes once,
and re-sends whatever the broker did not take, in order: an event is never dropped.

A record that can never be taken (too large for the broker, or one that does not encode) is
not re-sent for ever, holding every later event back: it is dead-lettered (bounded: reason,
length, SHA-256, a truncated copy) and the stream goes on. Dead letters are sent and re-sent
like any record. ``watch`` reports a batch that has not gone out for ``stuck_after_s`` on
``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)

from ingestor import metrics
from riskwatch_common.contracts import Event
from riskwatch_common.kafka import Producer, dead_letter_record
from riskwatch_common.logs import excerpt
from riskwatch_common.runtime import Health
from riskwatch_common.topics import TopicSpec, dead_letter_of, encode

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

# The broker refuses these for the record itself: sending it again can never succeed.
FINAL_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    UnsupportedForMessageFormatError,
)
PUBLISHER_CHECK = "publisher"


class Unpublishable(Exception):
    """A record the broker can never take; it is dead-lettered instead."""


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
        self._busy_since: float | None = None
        self._last_error = ""
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
            self._busy_since = self._mono()
            try:
                await self._publish(batch)
            finally:
                self._busy_since = None
                for _ in batch:
                    self.queue.task_done()

    def stuck_for(self) -> float:
        """Seconds the batch being published has been going out (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else max(0.0, self._mono() - since)

    async def watch(self, health: Health, stuck_after_s: float, interval_s: float = 1.0) -> None:
        """Keep the ``publisher`` readiness check: red while a batch has not gone out for
        ``stuck_after_s`` (broker refusing, a send that hangs), so nothing waits unseen."""
        while True:
            stuck = self.stuck_for()
            if stuck >= stuck_after_s:
                health.set(
                    PUBLISHER_CHECK,
                    False,
                    f"stuck {stuck:.0f}s: {self.queue.qsize()} queued; last error: "
                    f"{self._last_error or 'none (send still waiting)'}",
                )
            else:
                health.set(PUBLISHER_CHECK, True, f"{self.queue.qsize()} queued")
            await asyncio.sleep(interval_s)

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
            sent: list[tuple[Item, asyncio.Future[Any]]] = []
            for item in pending:
                sent.append((item, await self._send(item)))
            try:
                await self.producer.flush()
            except Exception:
                log.exception("producer flush failed")
            # What goes out next, in the original order; readers block on the full queue
            # meanwhile. A record that can never be taken goes as its dead letter instead.
            pending = []
            ok: list[Publish] = []
            failed = 0
            for item, fut in sent:
                error = _error(fut)
                if error is None:
                    if isinstance(item, Publish):
                        ok.append(item)
                    else:
                        metrics.DEAD_LETTERED.labels(item.reason).inc()
                elif isinstance(item, Publish) and isinstance(
                    error, (*FINAL_ERRORS, Unpublishable)
                ):
                    pending.append(self._unpublishable(item, error))
                else:
                    self._last_error = excerpt(repr(error), 300)
                    pending.append(item)
                    failed += 1
            self._observe(ok)
            if failed:
                metrics.PUBLISH_RETRIES.inc(failed)
                log.warning("broker did not take %d records, re-sending", failed)
                await asyncio.sleep(self._retry_delay_s)
        metrics.PUBLISH_BATCH.observe(len(batch))

    async def _send(self, item: Item) -> asyncio.Future[Any]:
        """The broker's answer to ``item``; a send that failed at once is a failed future."""
        try:
            if isinstance(item, DeadLetter):
                # Sent like any record (its future is checked and re-sent), never fire and
                # forget: a lost dead letter is a lost frame.
                body = dead_letter_record(
                    source_topic=self.producer.topic(item.spec),
                    partition=None,
                    offset=None,
                    source=item.source,
                    key=item.key.encode(),
                    value=item.raw,
                    error=item.error,
                    reason=item.reason,
                    service=self.producer.service,
                    failed_at=datetime.fromtimestamp(self._now_ms() / 1000, UTC),
                )
                dlq = self.producer.topic(dead_letter_of(item.spec))
                return await self.producer.send_raw(dlq, item.key.encode(), body)
            try:
                value = encode(item.event)
            except Exception as exc:
                raise Unpublishable(f"does not encode: {exc!r}") from exc
            return await self.producer.send_raw(
                self.producer.topic(item.spec), item.key.encode(), value
            )
        except Exception as exc:
            if not isinstance(exc, (*FINAL_ERRORS, Unpublishable)):
                log.exception("producer send failed")
            return _failed_future(exc)

    def _unpublishable(self, item: Publish, error: BaseException) -> DeadLetter:
        metrics.UNPUBLISHABLE.labels(type(error).__name__).inc()
        try:
            raw = encode(item.event)
        except Exception:
            raw = repr(item.event).encode()
        log.error(
            "record can never be published, dead-lettering it",
            extra={
                "topic": item.spec.name,
                "key": item.key,
                "event_type": item.event.event_type,
                "bytes": len(raw),
                "error": excerpt(repr(error), 300),
            },
        )
        return DeadLetter(
            item.spec, raw, item.key, repr(error), f"publisher:{item.key}", "unpublishable"
        )

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


def _error(fut: asyncio.Future[Any]) -> BaseException | None:
    """Why the broker did not take the record, or None when it did."""
    if not fut.done():
        return TimeoutError("not acknowledged by the flush")
    if fut.cancelled():
        return asyncio.CancelledError()
    return fut.exception()


def _failed_future(exc: BaseException) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_exception(exc)
    fut.exception()  # retrieved: asyncio must not log it as lost
    return fut
