"""``make bench-risk``: the processor against its floors, on a fresh broker.

Starts its own local broker (``RISKWATCH_BROKER``; never a shared one: Tansu slows as it
fills), then
measures in one run, on the same generated data:

1. the raw broker: one hop (produce → consume) and two hops (produce → relay → consume)
   at ``--rate`` records/s: the latency floor of anything that reads and writes Kafka;
2. throughput (``--events`` records already on the topic, then consumed as fast as possible)
   of a plain aiokafka consume–decode–update–produce loop and of the risk processor;
3. input-to-alert latency at ``--rate`` records/s where one record in ``--alert-every``
   opens a position that breaches the net-exposure limit: plain loop vs processor;
4. the pure engine's cost per event (``risk_processor.engine.bench``).

It prints figures and asserts nothing. The throughput runs happen in this process (it is
otherwise idle then); for latency the processor runs as its own process (as deployed)
while this one generates load and the plain loop runs here. On the 2-core development
machine the broker, the processor and the load share the cores; figures vary between
runs (by 2-3x on Tansu), so compare them within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiohttp
import orjson

from risk_processor import state
from risk_processor.app import RiskProcessor
from risk_processor.settings import RiskProcessorSettings
from riskwatch_common.benchkit import (
    Latency,
    bench_consumer,
    bench_producer,
    fresh_namespace,
    paced,
    percentile,
    raw_hops,
)
from riskwatch_common.broker import free_port, local_broker
from riskwatch_common.contracts import OrderUpdated, PositionUpdated, Side
from riskwatch_common.kafka import ensure_topics
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import ACCOUNT_EVENTS, ALERTS, ALL_TOPICS, KeyKind, TopicSpec, encode

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
PRICES = {"BTCUSDT": 70000, "ETHUSDT": 3500, "SOLUSDT": 175, "BNBUSDT": 580, "XRPUSDT": 1}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- data


class Feed:
    """Position and order updates of ``accounts`` steady accounts (small, no alerts), and
    on request a breach: a new account's first position, 20,000 USD net (limit 10,000)."""

    def __init__(self, accounts: int, seed: int = 7) -> None:
        self.accounts = accounts
        self.rnd = random.Random(seed)
        self.seq: dict[tuple[str, str], int] = {}
        self.n = 0

    def steady(self, produced_at: datetime = T0) -> PositionUpdated | OrderUpdated:
        rnd = self.rnd
        self.n += 1
        account = f"acc{self.n % self.accounts}"
        symbol = SYMBOLS[rnd.randrange(len(SYMBOLS))]
        price = Decimal(PRICES[symbol])
        if rnd.random() < 0.6:
            key = (account, symbol)
            seq = self.seq[key] = self.seq.get(key, 0) + 1
            # ~1,000 USD positions on both sides: below every account threshold.
            size = (Decimal(rnd.randint(1, 20)) * 50 / price).quantize(Decimal("0.0001"))
            return PositionUpdated(
                event_id=f"p{self.n}",
                occurred_at=T0,
                produced_at=produced_at,
                source="bench",
                correlation_id=f"c{self.n}",
                account=account,
                symbol=symbol,
                position_idx=0,
                side=Side.BUY if rnd.random() < 0.5 else Side.SELL,
                size=size,
                entry_price=price,
                leverage=Decimal(5),
                seq=seq,
                updated_at=T0,
            )
        return OrderUpdated(
            event_id=f"o{self.n}",
            occurred_at=T0,
            produced_at=produced_at,
            source="bench",
            correlation_id=f"c{self.n}",
            account=account,
            symbol=symbol,
            order_id=f"{account}-o{self.n % 7}",
            side=Side.SELL,
            order_type="Limit",
            order_status="New" if rnd.random() < 0.8 else "Cancelled",
            price=price,
            qty=Decimal("0.001"),
            leaves_qty=Decimal("0.001"),
            updated_at=T0,
        )

    def breach(self, produced_at: datetime) -> PositionUpdated:
        self.n += 1
        return PositionUpdated(
            event_id=f"b{self.n}",
            occurred_at=produced_at,
            produced_at=produced_at,
            source="bench",
            correlation_id=f"breach-{self.n}",
            account=f"breach{self.n}",
            symbol="ETHUSDT",
            position_idx=0,
            side=Side.BUY,
            size=Decimal(5),
            entry_price=Decimal(4000),
            leverage=Decimal(5),
            seq=1,
            updated_at=produced_at,
        )


# --------------------------------------------------------------------------- 2. plain loop


# created before the runs, not auto-created: Apache Kafka here has auto-creation off, as
# production has
PLAIN_TOPICS = [
    TopicSpec(name, bytes, KeyKind.ACCOUNT, "plain loop output")
    for name in ("plain-out", "plain-alerts")
]


class PlainLoop:
    """A hand-written aiokafka consume → decode → update → produce loop (no framework).

    The same decoding and state updates as the processor's (``state.apply_*``); per batch
    one output per touched account (the account's long/short/net) and an alert record for
    a position above 10,000 USD; commits after the producer flushed (at-least-once). No
    engine, no tiers, no changelog: what the broker and Python allow for this work shape.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.input = ACCOUNT_EVENTS.qualified(kafka.topic_namespace)
        self.output = kafka.topic_namespace + "plain-out"
        self.alerts = kafka.topic_namespace + "plain-alerts"
        self.positions: dict[str, dict[str, state.PositionEntry]] = {}
        self.orders: dict[str, state.OrderBook] = {}
        self.alerted: set[str] = set()
        self.processed = 0

    async def run(self) -> None:
        consumer = bench_consumer(
            self.kafka, self.input, group=self.kafka.topic_namespace + "plain"
        )
        producer = bench_producer(self.kafka)
        await consumer.start()
        await producer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                if not batch:
                    continue
                touched: set[str] = set()
                for records in batch.values():
                    for r in records:
                        event = ACCOUNT_EVENTS.decode(r.value or b"")
                        account = event.account
                        if isinstance(event, PositionUpdated):
                            book = self.positions.setdefault(account, {})
                            if state.apply_position(book, event):
                                touched.add(account)
                                notional = event.size * event.entry_price
                                if notional > 10_000 and account not in self.alerted:
                                    self.alerted.add(account)
                                    await producer.send(
                                        self.alerts,
                                        orjson.dumps({"corr": event.correlation_id}),
                                        key=account.encode(),
                                    )
                        elif isinstance(event, OrderUpdated):
                            orders = self.orders.setdefault(account, state.OrderBook())
                            if state.apply_order(orders, event):
                                touched.add(account)
                self.processed += sum(len(r) for r in batch.values())
                for account in touched:
                    long = short = Decimal(0)
                    for entry in self.positions.get(account, {}).values():
                        p = entry.position
                        if p.side is not None:
                            value = p.size * p.entry_price
                            if p.side.value == "Buy":
                                long += value
                            else:
                                short += value
                    body = {"a": account, "l": str(long), "s": str(short), "n": str(long - short)}
                    await producer.send(self.output, orjson.dumps(body), key=account.encode())
                await producer.flush()
                await consumer.commit()
        finally:
            await producer.stop()
            await consumer.stop()


# --------------------------------------------------------------------------- helpers


async def _produce_all(kafka: KafkaSettings, events: Iterator[Any]) -> int:
    producer = bench_producer(kafka)
    await producer.start()
    topic = ACCOUNT_EVENTS.qualified(kafka.topic_namespace)
    n = 0
    try:
        for event in events:
            await producer.send(topic, encode(event), key=event.account.encode())
            n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


async def _throughput(
    count: Callable[[], float], total: int, start: Callable[[], Any]
) -> tuple[float, float]:
    """(events/s, CPU % of this process) from the first to the last record handled."""
    runner = asyncio.ensure_future(start())
    try:
        while count() == 0:
            if runner.done():
                runner.result()
            await asyncio.sleep(0.002)
        t0, c0, n0 = time.perf_counter(), time.process_time(), count()
        while count() < total:
            if runner.done():
                runner.result()
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        cpu = (time.process_time() - c0) / elapsed * 100
        return (total - n0) / elapsed, cpu
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def _processor(kafka: KafkaSettings, data_dir: Path) -> RiskProcessor:
    settings = RiskProcessorSettings(kafka=kafka, http_port=0, data_dir=data_dir)
    return RiskProcessor(settings)


@contextlib.asynccontextmanager
async def _worker_process(
    kafka: KafkaSettings, data_dir: Path
) -> AsyncIterator[Callable[[], float]]:
    """``python -m risk_processor`` on ``kafka``, ready; yields a CPU-% meter since ready."""
    port = free_port()
    env = {
        **os.environ,
        **kafka.as_env(),
        "RISK_PROCESSOR_HTTP_PORT": str(port),
        "RISK_PROCESSOR_DATA_DIR": str(data_dir),
        # the measured alert is net_exposure_usd, whose USD limit is opt-in
        "RISK_PROCESSOR_NET_EXPOSURE_LIMIT_USD": "10000",
        "LOG_LEVEL": "WARNING",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "risk_processor",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                if child.returncode is not None:
                    raise RuntimeError(f"risk processor exited with {child.returncode}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.2)

        def cpu_seconds() -> float:
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        c0, t0 = cpu_seconds(), time.perf_counter()
        yield lambda: (cpu_seconds() - c0) / (time.perf_counter() - t0) * 100
    finally:
        if child.returncode is None:
            child.terminate()
            await asyncio.wait_for(child.wait(), 30)


# --------------------------------------------------------------------------- 3. latency


async def _latency_run(
    kafka: KafkaSettings,
    rate: float,
    seconds: float,
    alert_every: int,
    alerts_topic: str,
    corr_of: Callable[[bytes], str | None],
) -> list[float]:
    """Send steady traffic with a breach every ``alert_every`` records; return each
    breach's input-to-alert latency as seen by a consumer of ``alerts_topic``."""
    feed = Feed(accounts=50, seed=11)
    sent: dict[str, float] = {}
    got: list[float] = []
    producer = bench_producer(kafka)
    consumer = bench_consumer(kafka, alerts_topic)
    await producer.start()
    await consumer.start()
    topic = ACCOUNT_EVENTS.qualified(kafka.topic_namespace)
    breaches = int(rate * seconds) // alert_every

    async def send(i: int) -> None:
        now = _now()
        event = feed.breach(now) if i % alert_every == 0 else feed.steady(now)
        if i % alert_every == 0:
            sent[event.correlation_id] = time.time()
        await producer.send(topic, encode(event), key=event.account.encode())

    async def read() -> None:
        seen: set[str] = set()
        while len(seen) < breaches:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                for r in records:
                    corr = corr_of(r.value or b"")
                    if corr in sent and corr not in seen:
                        seen.add(corr)
                        got.append(now - sent[corr])

    try:
        reader = asyncio.ensure_future(read())
        await paced(rate, seconds, send)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader, 15)
    finally:
        await producer.stop()
        await consumer.stop()
    return got


def _alert_corr(value: bytes) -> str | None:
    doc = orjson.loads(value)
    if doc.get("rule") == "net_exposure_usd" and doc.get("transition") == "raised":
        corr = doc.get("correlation_id")
        return corr if isinstance(corr, str) else None
    return None


def _plain_corr(value: bytes) -> str | None:
    corr = orjson.loads(value).get("corr")
    return corr if isinstance(corr, str) else None


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> None:
    broker = local_broker()
    broker.start()
    base = broker.kafka_settings()
    print(f"{broker.banner()}, fresh for this run")
    print(
        f"data: {args.events} account events over 50 accounts (60 % positions, 40 % orders);"
        f" latency at {args.rate:.0f}/s for {args.seconds:.0f} s, 1 breach per"
        f" {args.alert_every} records"
    )
    results: list[str] = []
    try:
        hop1, hop2 = await raw_hops(base, args.rate, args.seconds)
        print(hop1.line())
        print(hop2.line())

        with TemporaryDirectory() as tmp:
            kafka = fresh_namespace(base, "plain")
            await ensure_topics(kafka, [*ALL_TOPICS, *PLAIN_TOPICS])
            feed = Feed(50)
            n = await _produce_all(kafka, (feed.steady() for _ in range(args.events)))
            plain = PlainLoop(kafka)
            plain_rate, plain_cpu = await _throughput(lambda: plain.processed, n, plain.run)
            line = f"plain aiokafka loop throughput: {plain_rate:10.0f} events/s"
            print(f"{line}  (CPU {plain_cpu:.0f} %)")

            kafka = fresh_namespace(base, "proc")
            await ensure_topics(kafka, [*ALL_TOPICS, *PLAIN_TOPICS])
            feed = Feed(50)
            n = await _produce_all(kafka, (feed.steady() for _ in range(args.events)))
            proc = _processor(kafka, Path(tmp) / "t")
            proc_rate, proc_cpu = await _throughput(lambda: proc.records_handled, n, proc.run)
            line = f"risk processor throughput:      {proc_rate:10.0f} events/s"
            print(f"{line}  (CPU {proc_cpu:.0f} %, {proc_rate / plain_rate * 100:.0f} % of plain)")

            kafka = fresh_namespace(base, "plainlat")
            await ensure_topics(kafka, [*ALL_TOPICS, *PLAIN_TOPICS])
            plain = PlainLoop(kafka)
            runner = asyncio.ensure_future(plain.run())
            await asyncio.sleep(4)  # consumer-group join (Tansu holds it ~3 s), once
            try:
                samples = await _latency_run(
                    kafka, args.rate, args.seconds, args.alert_every, plain.alerts, _plain_corr
                )
            finally:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            plain_lat = Latency("plain loop, input-to-alert", samples)
            print(plain_lat.line())

            kafka = fresh_namespace(base, "proclat")
            await ensure_topics(kafka, [*ALL_TOPICS, *PLAIN_TOPICS])
            # Its own process, as deployed: the load generator here must not share its
            # event loop and GIL.
            async with _worker_process(kafka, Path(tmp) / "l") as cpu:
                samples = await _latency_run(
                    kafka,
                    args.rate,
                    args.seconds,
                    args.alert_every,
                    ALERTS.qualified(kafka.topic_namespace),
                    _alert_corr,
                )
                used = cpu()
            proc_lat = Latency(f"risk processor, input-to-alert (CPU {used:.0f} %)", samples)
            print(proc_lat.line())

        floor = percentile(hop2.samples, 0.99)
        results.append(
            f"throughput: processor {proc_rate:.0f}/s = {proc_rate / plain_rate * 100:.0f} %"
            f" of the plain loop ({plain_rate:.0f}/s); target >= 50 %"
        )
        results.append(
            f"input-to-alert p99: processor {percentile(proc_lat.samples, 0.99) * 1000:.1f} ms ="
            f" {percentile(proc_lat.samples, 0.99) / floor:.2f} x the raw two-hop p99"
            f" ({floor * 1000:.1f} ms); target <= 1.5 x;"
            f" p50 {percentile(proc_lat.samples, 0.5) * 1000:.1f} ms vs"
            f" {statistics.median(hop2.samples) * 1000 if hop2.samples else float('nan'):.1f} ms"
        )
    finally:
        broker.stop()

    print("engine (pure, no I/O):")
    try:
        from risk_processor.engine import bench as engine_bench

        engine_bench.main(args.engine_iterations)
    except (ImportError, AttributeError) as exc:  # pragma: no cover - engine in progress
        print(f"  engine bench unavailable: {exc}")
    print("summary:")
    for line in results:
        print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--alert-every", type=int, default=20)
    parser.add_argument("--engine-iterations", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # Stopping a worker between phases makes Faust and aiokafka log closed connections;
    # a phase that really fails raises and stops the benchmark.
    for name in ("faust", "mode", "aiokafka", "risk_processor.faust"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
