from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from riskwatch_common import contracts as c
from riskwatch_common import topics
from riskwatch_common.broker import free_port
from riskwatch_common.kafka import BrokerProbe, Consumer, Producer, RecordMeta
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import read_topic, wait_until

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def mark(symbol: str, price: str) -> c.MarkPriceUpdated:
    return c.MarkPriceUpdated(
        event_id=c.new_event_id(),
        occurred_at=NOW,
        produced_at=NOW,
        source="test",
        correlation_id="corr-1",
        symbol=symbol,
        mark_price=Decimal(price),
    )


async def test_consumer_with_malformed_record_dead_letters_it_and_keeps_consuming(
    kafka: KafkaSettings,
) -> None:
    producer = Producer(kafka, service="test")
    await producer.start()
    seen: list[c.MarkPriceUpdated] = []

    async def handle(event: c.MarkPriceUpdated, meta: RecordMeta) -> None:
        seen.append(event)

    consumer = Consumer(
        kafka,
        specs=[topics.MARK_PRICES],
        group_id="g",
        handler=handle,
        producer=producer,
        service="test",
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await producer.send_and_wait(topics.MARK_PRICES, "BTCUSDT", mark("BTCUSDT", "70000"))
        await producer.send_raw(
            producer.topic(topics.MARK_PRICES), b"BTCUSDT", b'{"not":"an event"'
        )
        await producer.send_and_wait(topics.MARK_PRICES, "BTCUSDT", mark("BTCUSDT", "70001"))
        await wait_until(lambda: len(seen) == 2, message="both good records handled")
        assert [e.mark_price for e in seen] == [Decimal("70000"), Decimal("70001")]

        dead = await read_topic(kafka, topics.dead_letter_of(topics.MARK_PRICES))
        assert len(dead) == 1
        record = c.RecordDeadLettered.model_validate_json(dead[0][1])
        assert record.value == '{"not":"an event"'
        assert record.error_type == "ValidationError"
        assert record.source.startswith(f"{kafka.topic_namespace}bybit.mark-prices.v1[")
        assert record.source_offset == 1
        assert dead[0][0] == b"BTCUSDT"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await producer.stop()


async def test_handler_failure_dead_letters_the_record_with_the_error(
    kafka: KafkaSettings,
) -> None:
    producer = Producer(kafka, service="test")
    await producer.start()
    handled: list[str] = []

    async def handle(event: c.MarkPriceUpdated, meta: RecordMeta) -> None:
        if event.symbol == "BADUSDT":
            raise ValueError("no tier table for BADUSDT")
        handled.append(event.symbol)

    consumer = Consumer(
        kafka,
        specs=[topics.MARK_PRICES],
        group_id="g",
        handler=handle,
        producer=producer,
        service="test",
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await producer.send_and_wait(topics.MARK_PRICES, "BADUSDT", mark("BADUSDT", "1"))
        await producer.send_and_wait(topics.MARK_PRICES, "ETHUSDT", mark("ETHUSDT", "3500"))
        await wait_until(lambda: handled == ["ETHUSDT"], message="good record handled")
        dead = await read_topic(kafka, topics.dead_letter_of(topics.MARK_PRICES))
        record = orjson.loads(dead[0][1])
        assert record["error"] == "no tier table for BADUSDT"
        assert record["error_type"] == "ValueError"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await producer.stop()


async def test_committed_offsets_survive_a_consumer_restart_without_redelivery(
    kafka: KafkaSettings,
) -> None:
    producer = Producer(kafka, service="test")
    await producer.start()
    first: list[str] = []
    second: list[str] = []

    async def run_once(sink: list[str], expect: int) -> None:
        async def handle(event: c.MarkPriceUpdated, meta: RecordMeta) -> None:
            sink.append(str(event.mark_price))

        consumer = Consumer(
            kafka,
            specs=[topics.MARK_PRICES],
            group_id="restart",
            handler=handle,
            producer=producer,
            service="test",
        )
        await consumer.start()
        task = asyncio.create_task(consumer.run())
        try:
            await wait_until(lambda: len(sink) >= expect, message=f"{expect} records")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await consumer.stop()

    try:
        for p in ("1", "2"):
            await producer.send_and_wait(topics.MARK_PRICES, "SOLUSDT", mark("SOLUSDT", p))
        await run_once(first, 2)
        await producer.send_and_wait(topics.MARK_PRICES, "SOLUSDT", mark("SOLUSDT", "3"))
        await run_once(second, 1)
        assert first == ["1", "2"]
        assert second == ["3"]
    finally:
        await producer.stop()


async def test_flush_sends_lingering_records_at_once_like_kafkas_flush(
    kafka: KafkaSettings,
) -> None:
    # A linger of ten minutes: aiokafka's own flush would sit on this record until the
    # linger ran out; ours must make it sendable now and return once it is acknowledged.
    producer = Producer(kafka.model_copy(update={"linger_ms": 600_000}), service="test")
    await producer.start()
    try:
        fut = await producer.send(topics.MARK_PRICES, "BTCUSDT", mark("BTCUSDT", "70002"))
        await asyncio.wait_for(producer.flush(), timeout=30)
        assert fut.done()
        assert fut.exception() is None
        # and the producer keeps working after its open batches were closed
        await producer.send(topics.MARK_PRICES, "ETHUSDT", mark("ETHUSDT", "3500"))
        await asyncio.wait_for(producer.flush(), timeout=30)
    finally:
        await producer.stop()
    records = await read_topic(kafka, topics.MARK_PRICES, min_records=2)
    assert sorted(key or b"" for key, _ in records) == [b"BTCUSDT", b"ETHUSDT"]


async def test_broker_probe_reports_a_reachable_cluster_and_a_dead_one(
    kafka: KafkaSettings,
) -> None:
    results: dict[str, list[tuple[bool, str]]] = {"up": [], "down": []}
    dead = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    probes = [
        asyncio.create_task(
            BrokerProbe(
                k, lambda ok, d, key=key: results[key].append((ok, d)), interval_s=0.1
            ).run()
        )
        for key, k in (("up", kafka), ("down", dead))
    ]
    try:
        await wait_until(lambda: len(results["up"]) >= 2 and results["down"], timeout=20)
    finally:
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
    assert all(ok for ok, _ in results["up"]), results["up"]
    assert not any(ok for ok, _ in results["down"])
    assert "unreachable" in results["down"][0][1]
