"""The daily spend, persisted on the compacted topic ``ai.spend.v1`` (key = budget key).

After each billed call the analyst writes its day's spend; at startup it reads the topic
back and keeps the latest record of its own key, so a restart (or a crash loop) cannot
spend the budget twice. Compaction keeps one record per key.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from riskwatch_common.contracts import AiSpendRecorded
from riskwatch_common.kafka import Producer, client_kwargs
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import AI_SPEND

log = logging.getLogger(__name__)


class BudgetStore(Protocol):
    async def load(self, key: str) -> AiSpendRecorded | None: ...

    async def save(self, record: AiSpendRecorded) -> None: ...


class MemoryBudgetStore:
    """For tests and the bench: the same contract, kept in a dict."""

    def __init__(self) -> None:
        self.records: dict[str, AiSpendRecorded] = {}

    async def load(self, key: str) -> AiSpendRecorded | None:
        return self.records.get(key)

    async def save(self, record: AiSpendRecorded) -> None:
        self.records[record.budget_key] = record


class KafkaBudgetStore:
    def __init__(self, kafka: KafkaSettings, producer: Producer) -> None:
        self._kafka = kafka
        self._producer = producer

    async def load(self, key: str) -> AiSpendRecorded | None:
        topic = AI_SPEND.qualified(self._kafka.topic_namespace)
        consumer = AIOKafkaConsumer(
            **client_kwargs(self._kafka), enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await consumer.start()
        found: AiSpendRecorded | None = None
        try:
            partitions = [TopicPartition(topic, p) for p in range(AI_SPEND.partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            remaining = {tp for tp, end in ends.items() if end > 0}
            wanted = key.encode()
            while remaining:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for r in records:
                        if r.key == wanted and r.value:
                            try:
                                found = AI_SPEND.decode(r.value)
                            except ValueError:
                                log.warning("unreadable spend record skipped", extra={"key": key})
                    if records and records[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return found

    async def save(self, record: AiSpendRecorded) -> None:
        await self._producer.send_and_wait(AI_SPEND, record.budget_key, record)
