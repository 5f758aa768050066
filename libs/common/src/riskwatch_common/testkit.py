"""Test helpers shared by unit and integration tests of every member.

Kafka comes from ``KAFKA_BOOTSTRAP_SERVERS`` when set, otherwise from an embedded broker
started once per test session; each test isolates itself with its own topic namespace.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from riskwatch_common.kafka import client_kwargs
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import TopicSpec


def external_bootstrap() -> str | None:
    """The cluster named by the environment, if any."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


def kafka_settings_for_test(bootstrap: str, *, external: bool) -> KafkaSettings:
    """Settings with a fresh namespace, so tests sharing a broker never share topics."""
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        enable_idempotence=external,
        topic_namespace=f"t{uuid.uuid4().hex[:10]}.",
    )


async def wait_until(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


async def read_topic(
    kafka: KafkaSettings, spec: TopicSpec, *, min_records: int = 1, timeout: float = 20.0
) -> list[tuple[bytes | None, bytes]]:
    """Every record of a topic from the beginning (key, value), waiting for ``min_records``."""
    topic = spec.qualified(kafka.topic_namespace)
    consumer = AIOKafkaConsumer(
        **client_kwargs(kafka), enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(spec.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            for recs in batch.values():
                out.extend((r.key, r.value or b"") for r in recs)
            if len(out) >= min_records and not batch:
                break
        return out
    finally:
        await consumer.stop()
