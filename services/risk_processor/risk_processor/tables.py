"""Writing Faust tables from batch handlers: one partition rule, one producer.

Faust's ``table[key] = value`` needs a current stream event (its partition chooses the
changelog partition and, with RocksDB, the database file) and queues the changelog record
on a buffer drained one record per event-loop turn, whose back-pressure stalls delivery
of new input. Batch handlers have no current event and write hundreds of values per
batch, so ``TableWriter.put`` does the same two things explicitly:

1. stores the value locally; RocksDB picks its partition file from the current event,
   so for it the write runs under a stand-in event for ``partition`` (the memory store
   ignores partitions);
2. sends the changelog record straight through the app's producer, into ``partition``.

Every key is written to the partition of the input record it came from: an account's
records and its table entries share a partition number, so one worker owns both, and a
restarted or new owner recovers exactly its accounts. The producer is flushed by Faust
before every offset commit, so a committed input always has its table writes on the
broker (at-least-once; replays are recognised by the ordering keys in the values).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event
from faust.types import TP


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class _Event:
    message: _Message


@contextlib.contextmanager
def in_partition(topic: str, partition: int) -> Iterator[None]:
    """Make Faust's ``current_event()`` report ``topic``/``partition`` in this block."""
    stand_in = _Event(_Message(topic, partition))
    # Faust keeps a weakref to the event; any callable returning it does.
    token = _current_event.set(cast(Any, lambda: stand_in))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableWriter:
    """``put(table, partition, key, value)``: local store + changelog record, explicitly."""

    def __init__(self, app: Any, source_topic: str) -> None:
        self.app = app
        # Any topic with the tables' partition count: Faust's stores only read the
        # partition, and its co-partitioning check compares this topic's partitions.
        self.source_topic = source_topic
        self._tables: dict[int, tuple[str, Any, bool]] = {}

    def _about(self, table: Any) -> tuple[str, Any, bool]:
        found = self._tables.get(id(table))
        if found is None:
            # The memory store ignores the partition; only the others need the stand-in.
            needs_event = not isinstance(table.data, MemoryStore)
            codec = table.value_type._options.serializer
            found = (table.changelog_topic.get_topic_name(), codec, needs_event)
            self._tables[id(table)] = found
        return found

    async def put(self, table: Any, partition: int, key: str, value: Any) -> None:
        changelog, codec, needs_event = self._about(table)
        if needs_event:
            with in_partition(self.source_topic, partition):
                table.data[key] = value
        else:
            table.data[key] = value
        body = bytes(codec.dumps(value))
        fut = await self.app.producer.send(changelog, key.encode(), body, partition, None, None)
        # What Faust's own changelog callback does: RocksDB remembers how far its files
        # are, so a restart reads only the changelog written after that.
        if needs_event:
            store = table.data
            tp = TP(changelog, partition)
            fut.add_done_callback(lambda f: _persisted(store, tp, f))


def _persisted(store: Any, tp: TP, fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is None:
        store.set_persisted_offset(tp, fut.result().offset)
