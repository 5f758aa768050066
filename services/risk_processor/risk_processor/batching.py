"""Batch delivery of a Faust topic: the conductor fills a buffer, a task takes it whole.

Why: a Faust ``Stream`` costs about 50 µs of CPU per event before any work is done (one
event-loop turn per event, sensors, context variables, per-event acks), which caps a
worker at ~10k events/s on the embedded broker. Our handlers work per batch anyway (one
evaluation per account per batch), so per-event iteration buys nothing.

How it stays a well-behaved Faust consumer:
- the conductor delivers into ``BatchQueue`` exactly as into a stream's queue (after flow
  control, after producer back-pressure); records are *tracked* as pending acks when they
  are queued, so a rebalance (``stream_wait_empty``) waits for every record we hold;
- a full buffer pauses fetching of that partition (``on_pressure_high``) and resumes it
  once half drained, like Faust's ``FlowControlQueue``; ``put`` waits for room;
- a record delivered before a rebalance whose generation is gone is acked unprocessed
  (as Faust's stream does): the new assignment re-reads from the committed offset;
- records are acked only after the handler returned, so offsets are committed only for
  processed records (at-least-once) and the commit flushes everything the handler
  produced first (Faust's consumer flushes the producer before committing).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import faust

BatchHandler = Callable[[list[Any]], Awaitable[None]]

# Records acked unprocessed because a rebalance made their generation stale, per partition
# (shown in the task dump).
STALE: Counter[Any] = Counter()


class BatchQueue:
    """Stands in for a channel's queue; the conductor calls only what is defined here."""

    def __init__(self, consumer: Callable[[], Any], maxsize: int) -> None:
        self._consumer = consumer
        self.maxsize = maxsize
        self.items: list[Any] = []
        self.ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._drop_callbacks: set[Callable[[], None]] = set()

    def full(self) -> bool:
        return len(self.items) >= self.maxsize

    def empty(self) -> bool:
        return not self.items

    def qsize(self) -> int:
        return len(self.items)

    def _add(self, event: Any) -> None:
        message = event.message
        if not message.tracked:
            # Tracked now, not when handled: a rebalance then waits for it.
            message.tracked = True
            self._consumer().track_message(message)
        self.items.append(event)
        self.ready.set()
        if self.full():
            self._room.clear()

    def put_nowait_enhanced(
        self,
        value: Any,
        *,
        on_pressure_high: Callable[[], None],
        on_pressure_drop: Callable[[], None],
    ) -> None:
        self._add(value)
        if len(self.items) >= self.maxsize * 0.8:
            # Stop fetching this partition until we caught up (Faust's pressure rule).
            on_pressure_high()
            self._drop_callbacks.add(on_pressure_drop)

    async def put(self, value: Any) -> None:
        while self.full():
            await self._room.wait()
        self._add(value)

    def take(self) -> list[Any]:
        items, self.items = self.items, []
        self.ready.clear()
        self._room.set()
        if self._drop_callbacks:
            callbacks, self._drop_callbacks = self._drop_callbacks, set()
            for callback in callbacks:
                callback()
        return items

    def clear(self) -> None:
        self.take()


class BatchTopic(faust.Topic):
    """A Faust topic whose records reach ``BatchQueue`` instead of a stream."""

    def __init__(self, *args: Any, buffer_size: int = 10_000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer = BatchQueue(lambda: self.app.consumer, buffer_size)

    @property
    def queue(self) -> Any:
        return self.buffer

    async def put(self, event: Any) -> None:
        # The conductor puts here when the buffer is full (a burst, a backlog after a
        # restart). Faust's Topic.put refuses a topic nobody iterates, and the records
        # were silently never handled.
        await self.buffer.put(event)

    def _compile_decode(self) -> None:
        create_event = self.app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            # Handlers decode ``event.message.value`` themselves (and dead-letter what
            # fails), so Faust's per-record codec pass would be work thrown away.
            return create_event(message.key, message.value, message.headers, message)

        # Faust binds the compiled decoder over the method the same way (Topic._compile_decode).
        self.decode = decode  # type: ignore[method-assign]


async def run_batches(
    app: Any,
    topic: BatchTopic,
    handler: BatchHandler,
    *,
    max_batch: int,
    gather_s: float = 0.02,
) -> None:
    """Hand ``handler`` every delivered record of ``topic``, in batches, until cancelled.

    After waking up we yield to the loop while the buffer keeps growing, for at most
    ``gather_s``: Faust's delivery loop yields every 100 records, so this collects a whole
    fetch instead of slices of 100 (one evaluation per account per batch is what makes
    batches pay), at the cost of a few loop turns and no timer: an idle record is handled
    at once, and under steady load a batch does not wait for a quiet moment.

    A handler dead-letters bad records itself; if it raises anyway (a bug, or the broker
    refusing our writes) this raises too and the worker must stop: the batch is not acked,
    so its records are read again after the restart instead of being skipped.
    """
    queue = topic.buffer
    consumer = app.consumer
    loop = asyncio.get_running_loop()
    while True:
        await queue.ready.wait()
        # Bounded: under steady load a record arrives on nearly every turn, and a batch
        # must not wait for a quiet moment that never comes.
        until = loop.time() + gather_s
        while len(queue.items) < max_batch and loop.time() < until:
            held = len(queue.items)
            await asyncio.sleep(0)
            if len(queue.items) == held:
                break
        events = queue.take()
        generation = app.consumer_generation_id
        live = [e for e in events if e.message.generation_id == generation]
        for e in events:
            if e.message.generation_id != generation:
                STALE[e.message.tp] += 1
        if live:
            await handler(live)
        for event in events:
            event.message.ack(consumer)
