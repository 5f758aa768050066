"""Silences kept on the compacted topic ``notify.silences.v1`` (key = silence id).

At startup the whole topic is read back before the first alert is handled, then the
reader keeps following it, so a silence set by another notifier instance (or from the CLI
through another instance) applies here too. Writes wait for the broker's acknowledgement:
a mute the trader was told about is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from riskwatch_common.contracts import SilenceChanged
from riskwatch_common.kafka import Producer, client_kwargs
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import SILENCES

log = logging.getLogger(__name__)

Apply = Callable[[SilenceChanged], None]


class SilenceStore(Protocol):
    async def follow(self, apply: Apply, caught_up: asyncio.Event) -> None: ...

    async def save(self, event: SilenceChanged) -> None: ...


class MemorySilenceStore:
    """For tests: the same contract, kept in a list."""

    def __init__(self) -> None:
        self.saved: list[SilenceChanged] = []

    async def follow(self, apply: Apply, caught_up: asyncio.Event) -> None:
        for event in self.saved:
            apply(event)
        caught_up.set()
        await asyncio.Event().wait()

    async def save(self, event: SilenceChanged) -> None:
        self.saved.append(event)


class KafkaSilenceStore:
    def __init__(self, kafka: KafkaSettings, producer: Producer) -> None:
        self._kafka = kafka
        self._producer = producer

    async def follow(self, apply: Apply, caught_up: asyncio.Event) -> None:
        topic = SILENCES.qualified(self._kafka.topic_namespace)
        consumer = AIOKafkaConsumer(
            **client_kwargs(self._kafka), enable_auto_commit=False, fetch_max_wait_ms=200
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(self._kafka.topic_partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            behind = {tp for tp, end in ends.items() if end > 0}
            if not behind:
                caught_up.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    for r in records:
                        if not r.value:
                            continue
                        try:
                            apply(SILENCES.decode(r.value))
                        except ValueError:
                            log.warning(
                                "unreadable silence record skipped",
                                extra={"source": f"{tp.topic}[{tp.partition}]@{r.offset}"},
                            )
                    if records and records[-1].offset + 1 >= ends[tp]:
                        behind.discard(tp)
                if not behind and not caught_up.is_set():
                    caught_up.set()
        finally:
            await consumer.stop()

    async def save(self, event: SilenceChanged) -> None:
        await self._producer.send_and_wait(SILENCES, event.silence_id, event)
