"""The one Kafka helper layer: producer, consumer, dead letters and topic creation.

Delivery is at-least-once: a consumer commits an offset only after the handler has
finished with the record *and* everything the handler produced has been acknowledged
(``acks=all``). Consumers are therefore idempotent (event ids). A record that fails to
decode or to handle goes to its topic's dead-letter topic with the reason and
``topic[partition]@offset``, is counted, and the consumer moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from pydantic import BaseModel

from riskwatch_common import metrics
from riskwatch_common.contracts import RecordDeadLettered
from riskwatch_common.logs import excerpt
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.tls import kafka_ssl_context
from riskwatch_common.topics import ALL_TOPICS, TopicSpec, dead_letter_of, encode

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retry_until_up(what: str, attempt: Callable[[], Awaitable[T]], kafka: KafkaSettings) -> T:
    """Retry ``attempt`` with capped backoff until it succeeds or the connect timeout passes.

    Services of one deployment start together, usually before the broker answers; failing
    fast would make a process runner stop them all.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + kafka.connect_timeout_s
    delay = 0.2
    while True:
        try:
            return await attempt()
        except KafkaConnectionError as exc:
            if loop.time() + delay > deadline:
                raise
            log.warning("kafka not reachable, retrying", extra={"what": what, "error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection settings shared by producers, consumers and admin clients."""
    kw: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "security_protocol": kafka.security_protocol,
    }
    tls = kafka_ssl_context(kafka)
    if tls is not None:
        # aiokafka refuses TLS without a context
        kw["ssl_context"] = tls
    if kafka.sasl_mechanism:
        kw["sasl_mechanism"] = kafka.sasl_mechanism
        kw["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            kw["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return kw


class _KafkaMetrics:
    def __init__(self, service: str) -> None:
        p = metrics.metric_prefix(service)
        self.produced = metrics.counter(
            f"{p}_kafka_records_produced_total", "Records sent to Kafka", ["topic"]
        )
        self.consumed = metrics.counter(
            f"{p}_kafka_records_consumed_total", "Records read from Kafka", ["topic"]
        )
        self.dead_lettered = metrics.counter(
            f"{p}_kafka_records_dead_lettered_total",
            "Records sent to a dead-letter topic",
            ["topic", "reason"],
        )
        self.handle_seconds = metrics.histogram(
            f"{p}_kafka_batch_handle_seconds", "Time to handle one fetched batch", []
        )


class Producer:
    """An aiokafka producer with acks=all, batching, and idempotence as a setting."""

    def __init__(self, kafka: KafkaSettings, *, service: str, client_id: str | None = None):
        self.kafka = kafka
        self.service = service
        self._metrics = _KafkaMetrics(service)
        self._producer = AIOKafkaProducer(
            **client_kwargs(kafka),
            client_id=client_id or service,
            acks="all",
            enable_idempotence=kafka.enable_idempotence,
            linger_ms=kafka.linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=30_000,
        )
        self._inflight: set[asyncio.Future[Any]] = set()
        self._failures: list[BaseException] = []

    async def start(self) -> None:
        await retry_until_up("producer", self._producer.start, self.kafka)

    async def stop(self) -> None:
        await self._producer.stop()

    def topic(self, spec: TopicSpec) -> str:
        return spec.qualified(self.kafka.topic_namespace)

    async def send(self, spec: TopicSpec, key: str, event: BaseModel) -> asyncio.Future[Any]:
        """Queue a record; the returned future resolves when the broker acknowledged it.

        Awaiting this call only waits for room in the batch buffer, so callers can queue
        many records and ``flush()`` once: that is what keeps per-event cost low.
        """
        return await self.send_raw(self.topic(spec), key.encode(), encode(event))

    async def send_raw(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await self._producer.send(topic, value=value, key=key)
        self._metrics.produced.labels(topic).inc()
        self._inflight.add(fut)
        fut.add_done_callback(self._settled)
        return fut

    def _settled(self, fut: asyncio.Future[Any]) -> None:
        self._inflight.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            self._failures.append(fut.exception())  # type: ignore[arg-type]

    async def send_and_wait(self, spec: TopicSpec, key: str, event: BaseModel) -> None:
        await (await self.send(spec, key, event))

    async def flush(self) -> None:
        """Wait until every queued record is acknowledged; raise if any send failed.

        Raising here is what stops a consumer from committing offsets whose outputs were
        lost: the records are then redelivered and produced again.
        """
        await _send_now_and_wait(self._producer)
        if self._inflight:
            await asyncio.wait(set(self._inflight))
        if self._failures:
            first, self._failures = self._failures[0], []
            raise first

    async def dead_letter(
        self,
        spec: TopicSpec,
        *,
        value: bytes,
        key: bytes | None,
        error: BaseException | str,
        source: str,
        partition: int | None = None,
        offset: int | None = None,
        reason: str = "handle",
    ) -> None:
        """Send a failed input to ``spec``'s dead-letter topic and count it.

        The send is tracked like any other (``flush`` raises when it failed), so a lost
        dead letter stops the offset commit instead of vanishing.
        """
        dlq = dead_letter_of(spec)
        body = dead_letter_record(
            source_topic=self.topic(spec),
            partition=partition,
            offset=offset,
            source=source,
            key=key,
            value=value,
            error=error,
            reason=reason,
            service=self.service,
            failed_at=datetime.now(UTC),
        )
        await self.send_raw(self.topic(dlq), key[:DEAD_LETTER_KEY_BYTES] if key else key, body)
        self._metrics.dead_lettered.labels(self.topic(spec), reason).inc()
        log.warning(
            "record dead-lettered",
            extra={
                "topic": self.topic(spec),
                "source": source,
                "reason": reason,
                "error": str(error)[:500],
            },
        )


DEAD_LETTER_MAX_BYTES = 512 * 1024
"""Most bytes a dead-letter record value takes: half of the broker's default record limit
(``message.max.bytes``, 1 MiB), so a dead letter is never refused for its size."""
DEAD_LETTER_VALUE_BYTES = 64 * 1024
"""Most bytes of the failed value kept verbatim; its full length and SHA-256 are kept too."""
DEAD_LETTER_KEY_BYTES = 1024


def dead_letter_record(
    *,
    source_topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: bytes,
    error: BaseException | str,
    reason: str,
    service: str,
    failed_at: datetime,
    source: str | None = None,
    max_bytes: int = DEAD_LETTER_MAX_BYTES,
) -> bytes:
    """The one dead-letter record builder: a ``RecordDeadLettered`` of at most ``max_bytes``.

    Keeps the reason, ``topic[partition]@offset``, the raw value's length and SHA-256 and a
    truncated copy of it; JSON escaping can grow text up to six times, so the copy shrinks
    until the encoded record fits. The error text is redacted before it is cut (a library's
    error can carry a token).
    """
    where = source or f"{source_topic}[{partition}]@{offset}"
    keep = min(len(value), DEAD_LETTER_VALUE_BYTES)
    while True:
        record = RecordDeadLettered(
            source_topic=source_topic,
            source_partition=partition,
            source_offset=offset,
            source=where[:1000],
            key=key[:DEAD_LETTER_KEY_BYTES].decode(errors="replace") if key is not None else None,
            value=value[:keep].decode(errors="replace"),
            value_length=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
            value_truncated=keep < len(value),
            error_type=type(error).__name__ if isinstance(error, BaseException) else reason,
            error=excerpt(str(error), 4000),
            reason=reason,
            service=service,
            failed_at=failed_at,
        )
        body = encode(record)
        if len(body) <= max_bytes or keep == 0:
            return body
        keep //= 2


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """Where a consumed record came from."""

    spec: TopicSpec
    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int

    @property
    def source(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


Handler = Callable[[Any, RecordMeta], Awaitable[None]]
"""Handles one decoded record. Raising sends the record to the dead-letter topic."""


class Consumer:
    """A consumer-group member that decodes, handles, dead-letters and commits.

    Records are fetched in batches; after a batch is handled the producer is flushed (so
    outputs and dead letters are acknowledged) and only then are offsets committed.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        specs: Sequence[TopicSpec],
        group_id: str,
        handler: Handler,
        producer: Producer,
        service: str,
        auto_offset_reset: str = "earliest",
        max_records: int = 1000,
        on_batch_done: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.kafka = kafka
        self.handler = handler
        self.producer = producer
        self.max_records = max_records
        self.on_batch_done = on_batch_done
        self._metrics = _KafkaMetrics(service)
        self._specs = {s.qualified(kafka.topic_namespace): s for s in specs}
        self._consumer = AIOKafkaConsumer(
            *self._specs,
            **client_kwargs(kafka),
            group_id=kafka.topic_namespace + group_id,
            client_id=service,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            rebalance_timeout_ms=kafka.session_timeout_ms,
        )
        self.assigned = asyncio.Event()

    async def start(self) -> None:
        await retry_until_up("consumer", self._consumer.start, self.kafka)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        """Consume until cancelled."""
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
            if self._consumer.assignment():
                self.assigned.set()
            if not batch:
                continue
            with self._metrics.handle_seconds.time():
                for records in batch.values():
                    await self._handle_all(records)
                if self.on_batch_done is not None:
                    await self.on_batch_done()
                await self.producer.flush()
            await self._consumer.commit()

    async def _handle_all(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            spec = self._specs[rec.topic]
            meta = RecordMeta(spec, rec.topic, rec.partition, rec.offset, rec.key, rec.timestamp)
            self._metrics.consumed.labels(rec.topic).inc()
            value = rec.value or b""
            try:
                event = spec.decode(value)
            except Exception as exc:
                await self._dead_letter(meta, value, exc, "decode")
                continue
            try:
                await self.handler(event, meta)
            except Exception as exc:
                log.exception("handler failed", extra={"source": meta.source})
                await self._dead_letter(meta, value, exc, "handle")

    async def _dead_letter(
        self, meta: RecordMeta, value: bytes, exc: Exception, reason: str
    ) -> None:
        await self.producer.dead_letter(
            meta.spec,
            value=value,
            key=meta.key,
            error=exc,
            source=meta.source,
            partition=meta.partition,
            offset=meta.offset,
            reason=reason,
        )


class BrokerProbe:
    """Readiness check ``broker``: whether the cluster answers, asked every few seconds.

    Producers and consumers reconnect by themselves after a broker outage, silently; while
    the cluster is away a service can do nothing, so its ``/readyz`` must say so. The probe
    sends a Metadata request through a client of its own with the service's connection
    settings (TLS, SASL) and reports the outcome to ``on_result(ok, detail)``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        on_result: Callable[[bool, str], None],
        *,
        interval_s: float = 2.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.kafka = kafka
        self.on_result = on_result
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._down_since: float | None = None

    async def run(self) -> None:
        """Probe until cancelled."""
        from aiokafka.client import AIOKafkaClient

        loop = asyncio.get_running_loop()
        client = AIOKafkaClient(
            **client_kwargs(self.kafka),
            request_timeout_ms=int(self.timeout_s * 1000),
            client_id="riskwatch-broker-probe",
        )
        bootstrapped = False
        try:
            while True:
                try:
                    if not bootstrapped:
                        await asyncio.wait_for(client.bootstrap(), self.timeout_s)
                        bootstrapped = True
                    else:
                        await asyncio.wait_for(client.fetch_all_metadata(), self.timeout_s)
                except (TimeoutError, OSError, KafkaError) as exc:
                    now = loop.time()
                    if self._down_since is None:
                        self._down_since = now
                        log.warning("kafka unreachable", extra={"error": repr(exc)})
                    self.on_result(False, f"broker unreachable for {now - self._down_since:.0f} s")
                else:
                    if self._down_since is not None:
                        log.warning("kafka reachable again")
                    self._down_since = None
                    self.on_result(True, "reachable")
                await asyncio.sleep(self.interval_s)
        finally:
            await client.close()


async def ensure_topics(kafka: KafkaSettings, specs: Iterable[TopicSpec] = ALL_TOPICS) -> None:
    """Create the registry's topics that do not exist yet; existing ones are left alone.

    Explicit creation matters on the embedded broker, which would otherwise auto-create a
    topic with default settings on first use.
    """
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), client_id="riskwatch-admin")
    await retry_until_up("admin", admin.start, kafka)
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=s.qualified(kafka.topic_namespace),
                num_partitions=kafka.topic_partitions,
                replication_factor=kafka.replication_factor,
                topic_configs=s.config,
            )
            for s in specs
            if s.qualified(kafka.topic_namespace) not in existing
        ]
        if missing:
            # another process may create one between our list and create
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("topics created", extra={"topics": [t.name for t in missing]})
    finally:
        await admin.close()


async def partition_counts(kafka: KafkaSettings, topics: Iterable[str]) -> dict[str, int]:
    """The partition count of each of ``topics`` that exists (qualified names)."""
    wanted = list(topics)
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), client_id="riskwatch-admin")
    await retry_until_up("admin", admin.start, kafka)
    try:
        existing = set(await admin.list_topics())
        present = [t for t in wanted if t in existing]
        if not present:
            return {}
        described = await admin.describe_topics(present)
    finally:
        await admin.close()
    return {d["topic"]: len(d["partitions"]) for d in described if d.get("partitions")}


async def _send_now_and_wait(producer: AIOKafkaProducer) -> None:
    """Kafka's flush: what is buffered goes out now, linger or not, and is waited for.

    The Java client's ``flush()`` makes every buffered record sendable at once; aiokafka's
    waits for each batch's linger to run out first, which adds the whole linger window to
    every record a caller flushes on purpose. aiokafka has no public call for "send now",
    so this closes the open batches the way its transactional commit does (pinned aiokafka
    version; covered by ``test_flush_does_not_wait_for_linger``).
    """
    await producer._message_accumulator.flush_for_commit()
