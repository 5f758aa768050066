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

``SharedTable`` is the GlobalTable class (marks, tiers, views): every worker reads every
partition of its changelog, including the records it wrote itself, so a worker applies
(1) another worker's records at once, not 1,000 at a time, and (2) its own records only
when it has not written the key again since (see docs/processing.md, "Two or more
workers").
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from faust import GlobalTable
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


WRITER_HEADER = "riskwatch-writer"
"""Changelog header of a ``SharedTable`` record: ``<process token>:<write number>``."""


class SharedTable(GlobalTable):
    """A GlobalTable that several workers write, each its own keys, and all read.

    Faust's GlobalTable means to apply changelog records as they come
    (``standby_buffer_size=1``), but its assignor also makes every partition of a
    multi-writer global table *active* on every worker, and the recovery loop buffers
    active partitions ``recovery_buffer_size`` (1,000) records at a time, after recovery
    too. A worker would then see another worker's writes only every 1,000 records, and
    re-apply a stale batch of its own over newer local writes. Construct it with
    ``recovery_buffer_size=1``; the echo filter is here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token = os.urandom(8).hex().encode()
        self._writes = itertools.count(1)
        # key -> number of this process's latest local write of it
        self._written: dict[Any, int] = {}

    def local_write_header(self, key: Any) -> tuple[str, bytes]:
        """Note a local write of ``key``; the header its changelog record carries."""
        n = next(self._writes)
        self._written[key] = n
        return WRITER_HEADER, self._token + b":%d" % n

    def _stale_echo(self, event: Any) -> bool:
        """Our own record of a key we have written again since (the newer record follows
        in the same partition, so skipping this one changes nothing but the meantime)."""
        for name, value in event.message.headers or ():
            if name != WRITER_HEADER:
                continue
            token, _, n = bytes(value).partition(b":")
            if token != self._token:
                return False
            latest = self._written.get(self._to_key(event.key))
            return latest is not None and int(n) < latest
        return False

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        super().apply_changelog_batch([e for e in batch if not self._stale_echo(e)])


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
        headers = [table.local_write_header(key)] if isinstance(table, SharedTable) else None
        fut = await self.app.producer.send(changelog, key.encode(), body, partition, None, headers)
        # What Faust's own changelog callback does: RocksDB remembers how far its files
        # are, so a restart reads only the changelog written after that.
        if needs_event:
            store = table.data
            tp = TP(changelog, partition)
            fut.add_done_callback(lambda f: _persisted(store, tp, f))


def _persisted(store: Any, tp: TP, fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is None:
        store.set_persisted_offset(tp, fut.result().offset)
