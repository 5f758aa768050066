"""What every ``bench`` command shares: a pacer, percentiles, GC pauses, the raw broker floor.

Benchmarks print figures and never assert times; this module only keeps them measuring
the same way (the same arrival pattern for a pipeline and for the bare-client baseline it
is compared with, the same bare produce → consume hop as the floor under every pipeline).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from riskwatch_common.contracts import RiskAlertChanged
from riskwatch_common.kafka import client_kwargs, ensure_topics
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import KeyKind, TopicSpec


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paced(rate: float, seconds: float, send: Callable[[int], Awaitable[object]]) -> int:
    """Call ``send(i)`` ``rate`` times a second for ``seconds``; returns the calls made.

    Arrivals are spread evenly (not in bursts) and a stall is caught up at once, as frames
    queued in a socket would be; every caller compared with another uses the same pattern.
    """
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)
    return total


class GcPauses:
    """Garbage-collector pauses while active (``with GcPauses() as gc_pauses:``).

    A full collection can stop the event loop for many milliseconds; a latency tail that a
    collection explains should say so instead of being blamed on the broker.
    """

    def __init__(self) -> None:
        self.pauses_ms: list[tuple[int, float]] = []  # (generation, ms)
        self._started = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            elapsed_ms = (time.perf_counter() - self._started) * 1000
            self.pauses_ms.append((info["generation"], elapsed_ms))

    def summary(self) -> str:
        if not self.pauses_ms:
            return "no collections"
        full = sum(1 for gen, _ in self.pauses_ms if gen == 2)
        longest = max(ms for _, ms in self.pauses_ms)
        return f"{len(self.pauses_ms)} collections ({full} full), longest {longest:.1f} ms"


@dataclass
class Latency:
    """Latency samples (seconds) under a label, printed as p50 / p99 and the count."""

    label: str
    samples: list[float]

    def line(self) -> str:
        ms = [s * 1000 for s in self.samples]
        return (
            f"{self.label:<46} p50 {percentile(ms, 0.5):7.1f} ms   "
            f"p99 {percentile(ms, 0.99):7.1f} ms   (n={len(ms)})"
        )


@dataclass(frozen=True, slots=True)
class HopFigures:
    """One hop of a traced path: p50 / p99 / max / mean in ms and its share of the mean total."""

    name: str
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    share: float


def hop_breakdown(names: Sequence[str], traces: Sequence[Sequence[float]]) -> list[HopFigures]:
    """Per-hop figures of ``traces``, each the timestamps (s) at the hops' boundaries.

    A trace has ``len(names) + 1`` stamps; hop ``i`` lasts from stamp ``i`` to ``i + 1``.
    The last row is the whole path (first to last stamp). Shares are of the mean total:
    means add up, so the hops' shares sum to 100 % (percentiles of hops do not add up).
    """
    rows: list[HopFigures] = []
    spans = [(name, i, i + 1) for i, name in enumerate(names)]
    spans.append(("total", 0, len(names)))
    for trace in traces:
        if len(trace) != len(names) + 1:
            raise ValueError(f"a trace has {len(trace)} stamps, {len(names) + 1} expected")
    totals = [(t[-1] - t[0]) * 1000 for t in traces]
    total_mean = statistics.fmean(totals) if totals else float("nan")
    for name, start, end in spans:
        ms = [(t[end] - t[start]) * 1000 for t in traces]
        mean = statistics.fmean(ms) if ms else float("nan")
        rows.append(
            HopFigures(
                name=name,
                p50_ms=percentile(ms, 0.5),
                p99_ms=percentile(ms, 0.99),
                max_ms=max(ms, default=float("nan")),
                mean_ms=mean,
                share=mean / total_mean if total_mean else float("nan"),
            )
        )
    return rows


@dataclass
class AlertTraces:
    """Delivered alerts traced back to their exchange frames (see ``trace_alerts``)."""

    traces: list[tuple[float, float, float, float]] = field(default_factory=list)
    transitions: Counter[str] = field(default_factory=Counter)
    undelivered: int = 0  # caused in the window, never delivered
    untraced: int = 0  # delivered, but no account event carries their correlation id


def trace_alerts(
    alerts: Iterable[RiskAlertChanged],
    *,
    frame_times: Mapping[str, float],
    event_times: Mapping[str, float],
    deliveries: Iterable[tuple[float, str]],
    window: tuple[float, float],
) -> AlertTraces:
    """Trace each alert caused in ``window`` from its frame to its delivery.

    An alert's correlation id is the id of the exchange frame that caused it:
    ``frame_times`` (frame id -> exchange time) and ``event_times`` (correlation id ->
    when the account event was produced) are looked up by it. A delivery is
    ``(delivered time, alert event id)``: a ``NotificationDelivered`` record's
    ``produced_at`` and ``source_event_id``, which name the alert whatever text the channel
    got (a digest of a burst has one record per alert in it). Alerts count once per event
    id (a redelivered record is one alert); the earliest delivery of each counts. Each trace
    is (frame, account event produced, alert produced, delivered), in seconds.
    """
    start, end = window
    unique = {a.event_id: a for a in alerts}
    delivered: dict[str, float] = {}
    for at, event_id in deliveries:
        delivered[event_id] = min(at, delivered.get(event_id, at))
    out = AlertTraces()
    for alert in unique.values():
        frame = frame_times.get(alert.correlation_id)
        if frame is None or not start <= frame <= end:
            continue
        received = delivered.get(alert.event_id)
        if received is None:
            out.undelivered += 1
            continue
        ingested = event_times.get(alert.correlation_id)
        if ingested is None:
            out.untraced += 1
            continue
        out.traces.append((frame, ingested, alert.produced_at.timestamp(), received))
        out.transitions[alert.transition.value] += 1
    return out


def fresh_namespace(base: KafkaSettings, prefix: str) -> KafkaSettings:
    """``base`` with a new topic namespace, so each benchmark phase has its own topics."""
    return base.model_copy(update={"topic_namespace": f"{prefix}{uuid.uuid4().hex[:6]}."})


def bench_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    """A bare aiokafka producer (acks=all, the settings' linger), as a baseline sends."""
    return AIOKafkaProducer(
        **client_kwargs(kafka), acks="all", linger_ms=kafka.linger_ms, max_batch_size=256 * 1024
    )


def bench_consumer(
    kafka: KafkaSettings, *topics: str, group: str | None = None
) -> AIOKafkaConsumer:
    """A bare aiokafka consumer from the earliest offset, with the settings' fetch wait."""
    return AIOKafkaConsumer(
        *topics,
        **client_kwargs(kafka),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
    )


async def raw_hops(base: KafkaSettings, rate: float, seconds: float) -> tuple[Latency, Latency]:
    """The raw broker at ``rate`` records/s: one hop (produce → consume) and two hops
    (produce → relay → consume), each record stamped with ``time.time()`` when sent.

    The latency floor of anything that reads and writes Kafka on this broker and machine.
    """
    kafka = fresh_namespace(base, "raw")
    # created, not auto-created: Apache Kafka here has auto-creation off, as production has
    hops = [
        TopicSpec(name, bytes, KeyKind.SOURCE_KEY, "raw hop", partitions=1)
        for name in ("hop-a", "hop-b")
    ]
    await ensure_topics(kafka, hops)
    a, b = (spec.qualified(kafka.topic_namespace) for spec in hops)
    producer = bench_producer(kafka)
    relay_out = bench_producer(kafka)
    one = bench_consumer(kafka, a)
    relay = bench_consumer(kafka, a, group=kafka.topic_namespace + "relay")
    two = bench_consumer(kafka, b)
    await producer.start()
    await producer.send_and_wait(a, b"warm")
    await producer.send_and_wait(b, b"warm")
    for c in (relay_out, one, relay, two):
        await c.start()
    # records sent before the relay has joined its group would wait for the join
    for _ in range(1200):  # up to a minute
        if relay.assignment():
            break
        await asyncio.sleep(0.05)
    hop1: list[float] = []
    hop2: list[float] = []
    expected = int(rate * seconds)

    def stamp() -> bytes:
        return str(time.time()).encode()

    async def read(consumer: AIOKafkaConsumer, out: list[float]) -> None:
        while len(out) < expected:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                out.extend(now - float(r.value) for r in records if r.value != b"warm")

    async def forward() -> None:
        while True:
            batch = await relay.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    if r.value != b"warm":
                        await relay_out.send(b, r.value)

    async def send(_: int) -> None:
        await producer.send(a, stamp())

    forwarder = asyncio.create_task(forward())
    try:
        await asyncio.wait_for(
            asyncio.gather(paced(rate, seconds, send), read(one, hop1), read(two, hop2)),
            seconds + 30,
        )
    finally:
        forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forwarder
        for c in (producer, relay_out, one, relay, two):
            await c.stop()
    return (
        Latency(f"raw broker, one hop @ {rate:.0f}/s", hop1),
        Latency(f"raw broker, two hops (relay, no work) @ {rate:.0f}/s", hop2),
    )
