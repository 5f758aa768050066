"""The publisher: bounded queue (readers block when Kafka is slow), batches, ordered re-sends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from ingestor import normalize as n
from ingestor.publisher import PUBLISHER_CHECK, DeadLetter, Publish, Publisher
from riskwatch_common.contracts import RecordDeadLettered, StreamStatus
from riskwatch_common.kafka import DEAD_LETTER_MAX_BYTES, Producer
from riskwatch_common.runtime import Health
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import read_topic, wait_until
from riskwatch_common.topics import ACCOUNT_EVENTS, TopicSpec, dead_letter_of, encode

DLQ = dead_letter_of(ACCOUNT_EVENTS)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeProducer:
    """Speaks the Producer interface; the broker's answers are scripted."""

    service = "ingestor"

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.flushes = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next: int = 0
        self.dead: list[RecordDeadLettered] = []
        # values the broker refuses for good, with this error (e.g. too large)
        self.refuse: dict[bytes, BaseException] = {}
        self._pending: list[tuple[asyncio.Future[Any], str, bytes]] = []

    def topic(self, spec: TopicSpec) -> str:
        return spec.name

    async def send_raw(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fut, topic, value))
        return fut

    async def flush(self) -> None:
        await self.gate.wait()
        self.flushes += 1
        for fut, topic, value in self._pending:
            if self.fail_next > 0:
                self.fail_next -= 1
                fut.set_exception(RuntimeError("broker said no"))
            elif value in self.refuse:
                fut.set_exception(self.refuse[value])
            else:
                if topic == DLQ.name:
                    self.dead.append(DLQ.decode(value))
                else:
                    self.sent.append(value)
                fut.set_result(None)
        self._pending = []


def item(i: int) -> Publish:
    ev = n.status_event(f"a{i}", StreamStatus.CONNECTED, now=NOW, source="t", reason=str(i))
    return Publish(ACCOUNT_EVENTS, ev.account, ev)


def reasons(producer: FakeProducer) -> list[str]:
    return [ACCOUNT_EVENTS.decode(v).reason for v in producer.sent]


async def run(publisher: Publisher) -> asyncio.Task[None]:
    return asyncio.create_task(publisher.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_readers_block_when_the_queue_is_full_instead_of_growing_memory() -> None:
    producer = FakeProducer()
    producer.gate.clear()  # the broker is stuck
    publisher = Publisher(producer, queue_size=3, batch_max=100, retry_delay_s=0)  # type: ignore[arg-type]
    task = await run(publisher)

    # the publisher holds one batch in flight, then the queue fills to its bound
    for i in range(4):
        await asyncio.wait_for(publisher.put(item(i)), 1)
    blocked = asyncio.create_task(publisher.put(item(4)))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    assert publisher.queue.qsize() == 3

    producer.gate.set()
    await asyncio.wait_for(blocked, 2)
    await wait_until(lambda: len(producer.sent) == 5)
    assert reasons(producer) == ["0", "1", "2", "3", "4"]
    await stop(task)


async def test_many_queued_records_go_out_in_one_flush() -> None:
    producer = FakeProducer()
    publisher = Publisher(producer, queue_size=1000, batch_max=500)  # type: ignore[arg-type]
    for i in range(300):
        await publisher.put(item(i))
    task = await run(publisher)

    await wait_until(lambda: len(producer.sent) == 300)
    assert producer.flushes == 1
    assert publisher.published == 300
    await stop(task)


async def test_records_the_broker_refused_are_resent_in_order() -> None:
    producer = FakeProducer()
    producer.fail_next = 2
    publisher = Publisher(producer, queue_size=10, batch_max=10, retry_delay_s=0)  # type: ignore[arg-type]
    for i in range(4):
        await publisher.put(item(i))
    task = await run(publisher)

    await wait_until(lambda: len(producer.sent) == 4)
    assert reasons(producer) == ["2", "3", "0", "1"]  # the refused two, re-sent in order
    assert publisher.published == 4
    await stop(task)


async def test_dead_letters_go_through_the_same_queue() -> None:
    producer = FakeProducer()
    publisher = Publisher(producer, queue_size=10, batch_max=10)  # type: ignore[arg-type]
    await publisher.put(
        DeadLetter(ACCOUNT_EVENTS, b"raw", "main", "boom", "ws:main", "malformed_frame")
    )
    task = await run(publisher)

    await wait_until(lambda: producer.dead)
    assert producer.dead[0].error_type == "malformed_frame"
    assert producer.dead[0].value == "raw"
    assert producer.dead[0].source == "ws:main"
    assert await publisher.drain(1)
    await stop(task)


async def test_a_dead_letter_the_broker_refused_is_resent_not_lost() -> None:
    producer = FakeProducer()
    producer.fail_next = 1  # the dead letter's own send fails once
    publisher = Publisher(producer, queue_size=10, batch_max=10, retry_delay_s=0)  # type: ignore[arg-type]
    await publisher.put(
        DeadLetter(ACCOUNT_EVENTS, b"raw", "main", "boom", "ws:main", "malformed_frame")
    )
    task = await run(publisher)

    assert await publisher.drain(2)
    assert [d.value for d in producer.dead] == ["raw"]
    await stop(task)


async def test_a_record_the_broker_can_never_take_is_dead_lettered_and_the_stream_goes_on() -> None:
    producer = FakeProducer()
    poison = item(1)
    producer.refuse[encode(poison.event)] = MessageSizeTooLargeError("too large")
    publisher = Publisher(producer, queue_size=10, batch_max=1, retry_delay_s=0.5)  # type: ignore[arg-type]
    for i in (item(0), poison, item(2), item(3)):
        await publisher.put(i)
    task = await run(publisher)

    # within one retry delay: the poison is not re-sent while every later event waits
    assert await publisher.drain(0.4)
    assert reasons(producer) == ["0", "2", "3"]
    (dead,) = producer.dead
    assert dead.error_type == "unpublishable"
    assert "MessageSizeTooLargeError" in dead.error
    assert dead.value_sha256 == hashlib.sha256(encode(poison.event)).hexdigest()
    assert ACCOUNT_EVENTS.decode(dead.value.encode()).reason == "1"
    await stop(task)


async def test_a_publisher_stuck_on_the_broker_turns_its_readiness_check_red() -> None:
    producer = FakeProducer()
    producer.gate.clear()  # the broker takes nothing
    health = Health()
    publisher = Publisher(producer, queue_size=10, batch_max=10, retry_delay_s=0)  # type: ignore[arg-type]
    task = await run(publisher)
    watch = asyncio.create_task(publisher.watch(health, stuck_after_s=0.2, interval_s=0.02))
    await wait_until(lambda: health.ready)

    await publisher.put(item(0))

    await wait_until(lambda: not health.ready, timeout=2)
    assert "stuck" in health.report()["checks"][PUBLISHER_CHECK]["detail"]
    producer.gate.set()
    await wait_until(lambda: health.ready, timeout=2)
    await stop(watch)
    await stop(task)


@pytest.mark.integration
async def test_oversize_record_on_a_real_broker_becomes_a_bounded_dead_letter(
    kafka: KafkaSettings,
) -> None:
    producer = Producer(kafka, service="ingestor")
    await producer.start()
    publisher = Publisher(producer, queue_size=10, batch_max=10, retry_delay_s=0.5)
    huge = n.status_event("main", StreamStatus.CONNECTED, now=NOW, source="t")
    huge = huge.model_copy(update={"reason": "\x00" * 1_500_000})  # 9 MB JSON-escaped
    task = await run(publisher)
    try:
        await publisher.put(Publish(ACCOUNT_EVENTS, "main", huge))
        await publisher.put(item(7))

        assert await publisher.drain(20)
        (after,) = [ACCOUNT_EVENTS.decode(v) for _, v in await read_topic(kafka, ACCOUNT_EVENTS)]
        assert after.reason == "7"
        ((_, raw),) = await read_topic(kafka, DLQ)
        assert len(raw) <= DEAD_LETTER_MAX_BYTES
        dead = DLQ.decode(raw)
        body = encode(huge)
        assert (dead.value_length, dead.value_sha256) == (
            len(body),
            hashlib.sha256(body).hexdigest(),
        )
        assert dead.value_truncated
        assert body.decode().startswith(dead.value)
    finally:
        await stop(task)
        await producer.stop()
