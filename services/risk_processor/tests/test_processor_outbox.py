"""The alerts-topic tail the outbox reads for the crash window, on a real broker."""

from __future__ import annotations

import asyncio

import pytest

from risk_processor.outbox import PublishedAlerts
from riskwatch_common.kafka import Producer
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import make_alert
from riskwatch_common.topics import ALERTS

pytestmark = pytest.mark.integration


async def _publish(kafka: KafkaSettings, partition_ids: dict[int, list[str]]) -> None:
    producer = Producer(kafka, service="test")
    await producer.start()
    try:
        topic = ALERTS.qualified(kafka.topic_namespace)
        for partition, ids in partition_ids.items():
            for event_id in ids:
                body = make_alert("main", event_id=event_id).model_dump_json().encode()
                await producer._producer.send(topic, body, key=b"main", partition=partition)
        await producer._producer.flush()
    finally:
        await producer.stop()


async def test_tails_of_several_partitions_load_with_one_read_and_keep_the_last_records(
    kafka: KafkaSettings,
) -> None:
    await _publish(kafka, {0: [f"a{i}" for i in range(5)], 1: ["b0", "b1"]})
    published = PublishedAlerts(kafka, ALERTS.qualified(kafka.topic_namespace), 12, 3)
    # A partition's own load while the bulk load runs waits for it instead of reading again.
    await asyncio.gather(published.load_many([0, 1, 2]), published.load(1))
    assert [published.seen(0, f"a{i}") for i in range(5)] == [False, False, True, True, True]
    assert published.seen(1, "b0")
    assert published.seen(1, "b1")
    assert not published.seen(2, "a4")


async def test_a_tail_read_overtaken_by_a_rebalance_installs_nothing(
    kafka: KafkaSettings,
) -> None:
    await _publish(kafka, {0: ["a0"]})
    published = PublishedAlerts(kafka, ALERTS.qualified(kafka.topic_namespace), 12, 10)
    loading = asyncio.ensure_future(published.load_many([0]))
    await asyncio.sleep(0)
    published.reset()
    await loading
    assert not published.seen(0, "a0")
    await published.load(0)  # read again for the new assignment
    assert published.seen(0, "a0")
