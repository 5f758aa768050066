"""The publisher: bounded queue (readers block when Kafka is slow), batches, ordered re-sends."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from ingestor import normalize as n
from ingestor.publisher import DeadLetter, Publish, Publisher
from riskwatch_common.contracts import StreamStatus
from riskwatch_common.testkit import wait_until
from riskwatch_common.topics import ACCOUNT_EVENTS, TopicSpec

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeProducer:
    """Speaks the Producer interface; the broker's answers are scripted."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.flushes = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next: int = 0
        self.dead: list[dict[str, Any]] = []
        self._pending: list[tuple[asyncio.Future[Any], bytes]] = []

    def topic(self, spec: TopicSpec) -> str:
        return spec.name

    async def send_raw(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fut, value))
        return fut

    async def flush(self) -> None:
        await self.gate.wait()
        self.flushes += 1
        for fut, value in self._pending:
            if self.fail_next > 0:
                self.fail_next -= 1
                fut.set_exception(RuntimeError("broker said no"))
            else:
                self.sent.append(value)
                fut.set_result(None)
        self._pending = []

    async def dead_letter(self, spec: TopicSpec, **kw: Any) -> None:
        self.dead.append(kw)


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
    assert producer.dead[0]["reason"] == "malformed_frame"
    assert producer.dead[0]["value"] == b"raw"
    assert producer.dead[0]["source"] == "ws:main"
    assert await publisher.drain(1)
    await stop(task)
