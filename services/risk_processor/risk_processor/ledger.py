"""Which alert transitions are already on the alerts topic, for the crash window.

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

import logging
import ssl
from collections import deque

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from riskwatch_common.kafka import client_kwargs
from riskwatch_common.settings import KafkaSettings

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

    def partition_for(self, key: str) -> int:
        """The alerts partition of ``key``, as the producer's default partitioner picks it."""
        all_partitions = list(range(self.partitions))
        return int(self._partitioner(key.encode(), all_partitions, all_partitions))

    def reset(self) -> None:
        """Forget everything: after a rebalance another worker may have published."""
        self._ids.clear()
        self._order.clear()

    async def load(self, partition: int) -> None:
        """Read the tail of ``partition`` once; later calls return at once."""
        if partition in self._ids:
            return
        ids: set[str] = set()
        order: deque[str] = deque()
        if self.records:
            for event_id in await self._tail(partition):
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

    async def _tail(self, partition: int) -> list[str]:
        tp = TopicPartition(self.topic, partition)
        kwargs = client_kwargs(self.kafka)
        if self.kafka.security_protocol.endswith("SSL"):
            # client_kwargs leaves TLS out; aiokafka refuses SSL without a context.
            kwargs["ssl_context"] = ssl.create_default_context()
        consumer = AIOKafkaConsumer(
            **kwargs,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            begin = (await consumer.beginning_offsets([tp]))[tp]
            start = max(begin, end - self.records)
            if start >= end:
                return []
            consumer.seek(tp, start)
            out: list[str] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500)
                for rec in batch.get(tp, ()):
                    try:
                        event_id = orjson.loads(rec.value or b"{}").get("event_id")
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(event_id, str):
                        out.append(event_id)
            return out
        finally:
            await consumer.stop()
