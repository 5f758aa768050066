"""``uv run python -m ingestor.bench``: what the ingestor costs, on a fresh local broker.

Prints figures and never asserts times (the numbers depend on the machine):

1. N simulated accounts (default 1,000) in one ingestor process against the Bybit
   simulator (a subprocess), with time to all streaming, RSS and CPU;
2. parse + normalize cost per frame, in process (no I/O);
3. a bare aiokafka send-and-wait loop on the same broker, back to back, for scale;
4. frames/s through parse + normalize + dedupe + publish (batched) to the broker;
5. frame-to-ack latency p50/p99 with frames paced at 2,000/s, beside a bare aiokafka
   producer paced the same way on the same broker (the baseline of the 2x target).

Every phase runs bounded in time. The broker is the one ``RISKWATCH_BROKER`` selects,
started fresh for this run; each phase has its own topics (Tansu slows as topics fill).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from ingestor import normalize
from ingestor.account import AccountStream, Deps, StatusBoard
from ingestor.accounts import GroupConfig, load_group
from ingestor.app import Ingestor
from ingestor.bybit.ratelimit import SlidingWindowLimiter
from ingestor.bybit.rest import BybitRest
from ingestor.publisher import Publish, Publisher
from ingestor.settings import IngestorSettings
from riskwatch_common.benchkit import GcPauses, paced, percentile
from riskwatch_common.broker import free_port, local_broker
from riskwatch_common.kafka import Producer, client_kwargs, ensure_topics
from riskwatch_common.runtime import Health
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import ACCOUNT_EVENTS, ALL_TOPICS

SIM_SCENARIOS = Path(__file__).resolve().parents[2] / "bybit_sim" / "scenarios"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- synthetic frames


class FrameFactory:
    """Private frames in Bybit's shapes, each a new state (nothing is a duplicate)."""

    def __init__(self, accounts: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.accounts = [f"acc{i:04d}" for i in range(accounts)]
        self.seq = 1_000_000
        self.n = 0

    def frame(self, creation_ms: int) -> tuple[str, bytes]:
        self.n += 1
        self.seq += 1
        account = self.accounts[self.n % len(self.accounts)]
        kind = self.rng.random()
        t = str(creation_ms - 2)
        if kind < 0.4:
            row: dict[str, Any] = {
                "category": "linear", "symbol": "BTCUSDT", "orderId": f"o{self.n}",
                "orderLinkId": "", "side": "Buy", "orderType": "Limit", "orderStatus": "New",
                "price": "69000.5", "qty": "0.01", "leavesQty": "0.01", "leavesValue": "690.005",
                "cumExecQty": "0", "cumExecValue": "0", "avgPrice": "", "timeInForce": "GTC",
                "positionIdx": 0, "reduceOnly": False, "closeOnTrigger": False,
                "stopOrderType": "", "triggerPrice": "", "createdTime": t, "updatedTime": t,
            }  # fmt: skip
            topic = "order.linear"
        elif kind < 0.7:
            row = {
                "category": "linear", "symbol": "BTCUSDT", "positionIdx": 0, "side": "Buy",
                "size": f"0.{self.n % 97 + 1:02d}", "entryPrice": "68950.1", "leverage": "10",
                "positionValue": "3447.5", "markPrice": "69001.2", "liqPrice": "62100.4",
                "positionIM": "344.75", "positionMM": "17.24", "unrealisedPnl": "2.55",
                "cumRealisedPnl": "-1.2", "riskId": 1, "positionStatus": "Normal",
                "isReduceOnly": False, "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": "",
                "seq": self.seq, "createdTime": t, "updatedTime": t,
            }  # fmt: skip
            topic = "position.linear"
        elif kind < 0.9:
            row = {
                "category": "linear", "symbol": "BTCUSDT", "execId": f"e{self.n}",
                "orderId": f"o{self.n}", "side": "Buy", "execPrice": "69000.5", "execQty": "0.01",
                "execValue": "690.005", "execFee": "0.38", "execType": "Trade",
                "closedSize": "0", "isMaker": False, "seq": self.seq, "execTime": t,
            }  # fmt: skip
            topic = "execution.linear"
        else:
            row = {
                "accountType": "UNIFIED", "accountIMRate": "0.05", "accountMMRate": "0.01",
                "totalEquity": f"{10000 + self.n}", "totalWalletBalance": "10000",
                "totalMarginBalance": f"{10000 + self.n}", "totalAvailableBalance": "9000",
                "totalPerpUPL": "12", "totalInitialMargin": "500", "totalMaintenanceMargin": "90",
                "coin": [{"coin": "USDT", "equity": "10012", "walletBalance": "10000",
                          "unrealisedPnl": "12", "usdValue": "10012"}],
            }  # fmt: skip
            topic = "wallet"
        frame = {"id": f"f{self.n}", "topic": topic, "creationTime": creation_ms, "data": [row]}
        return account, orjson.dumps(frame)


# --------------------------------------------------------------------------- the pipeline


class Pipeline:
    """The ingestor's real per-frame path: AccountStream.process -> Publisher -> Kafka."""

    def __init__(
        self, kafka: KafkaSettings, accounts: list[str], session: aiohttp.ClientSession
    ) -> None:
        self.latencies_ms: list[float] = []
        # frame id -> perf_counter when the frame was handed in: Bybit's creationTime is
        # whole ms, too coarse beside a sub-millisecond baseline
        self.fed_at: dict[str, float] = {}
        self.producer = Producer(kafka, service="ingestor-bench")
        self.publisher = Publisher(
            self.producer, queue_size=10_000, batch_max=2000, observer=self._observe
        )
        settings = IngestorSettings(
            accounts_file=Path("unused.yaml"), group="bench", kafka=kafka, http_port=0
        )
        board = StatusBoard(Health())
        limiter = SlidingWindowLimiter(10**6, 1.0)
        deps = Deps(
            settings=settings,
            session=session,
            rest=BybitRest(session, ip_limiter=limiter),
            publisher=self.publisher,
            board=board,
            ws_limiter=lambda _url: limiter,
            handshakes=asyncio.Semaphore(32),
            source="ingestor/bench",
            clock=lambda: datetime.now(UTC),
        )
        group = _synthetic_group(accounts)
        self.streams = {cfg.name: AccountStream(cfg, deps) for cfg in group.accounts}
        self._task: asyncio.Task[None] | None = None

    def _observe(self, items: list[Publish], now_ms: int) -> None:
        now = time.perf_counter()
        for item in items:
            fed = self.fed_at.pop(item.event.correlation_id, None)
            if fed is not None:
                self.latencies_ms.append((now - fed) * 1000)

    async def start(self) -> None:
        await self.producer.start()
        self._task = asyncio.create_task(self.publisher.run())

    async def feed(self, account: str, raw: bytes, frame_id: str | None = None) -> None:
        if frame_id is not None:
            self.fed_at[frame_id] = time.perf_counter()
        stream = self.streams[account]
        for item in stream.process(raw, normalize.parse(raw)):
            await self.publisher.put(item)

    async def stop(self) -> None:
        await self.publisher.drain(30)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.producer.stop()


BARE_VALUE = b"x" * 700  # about one encoded PositionUpdated


def _synthetic_group(names: list[str]) -> GroupConfig:
    lines = [
        "simulator: {rest_url: 'http://127.0.0.1:1', ws_private_url: 'ws://127.0.0.1:1/p', "
        "ws_public_url: 'ws://127.0.0.1:1/q'}",
        "accounts:",
    ]
    env = {"BENCH_KEY": "bench-key-000", "BENCH_SECRET": "bench-secret-000"}
    for name in names:
        lines.append(
            f"  - {{name: {name}, group: bench, account_type: unified, position_mode: one_way, "
            "environment: simulator, credentials: {api_key_env: BENCH_KEY, "
            "api_secret_env: BENCH_SECRET}}"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        return load_group(Path(f.name), "bench", env=env)
    finally:
        os.unlink(f.name)


async def _namespace(base: KafkaSettings, name: str) -> KafkaSettings:
    kafka = base.model_copy(update={"topic_namespace": f"bench-{name}."})
    await ensure_topics(kafka, ALL_TOPICS)
    return kafka


# --------------------------------------------------------------------------- phases


def phase_cost(frames: int) -> None:
    factory = FrameFactory(accounts=50)
    by_topic: dict[str, list[bytes]] = {}
    for _ in range(frames):
        raw = factory.frame(_now_ms())[1]
        topic = orjson.loads(raw)["topic"]
        by_topic.setdefault(topic, []).append(raw)
    now = datetime.now(UTC)
    costs: dict[str, float] = {}
    for topic, raws in by_topic.items():
        best = float("inf")
        for _ in range(3):  # best of three: the machine is shared with the broker
            start = time.perf_counter()
            for raw in raws:
                normalize.private_frame(
                    normalize.parse(raw), account="a", source="b", produced_at=now
                )
            best = min(best, (time.perf_counter() - start) / len(raws) * 1e6)
        costs[topic] = best
    mixed = sum(costs[t] * len(r) for t, r in by_topic.items()) / frames
    detail = ", ".join(f"{t} {c:.1f}" for t, c in sorted(costs.items()))
    print(f"  parse + normalize (orjson + pydantic): {mixed:.1f} µs/frame mixed ({detail} µs)")


async def phase_bare(base: KafkaSettings, seconds: float) -> None:
    """One record at a time, each awaited: the broker's round trip with nothing queued."""
    kafka = await _namespace(base, "bare")
    topic = ACCOUNT_EVENTS.qualified(kafka.topic_namespace)
    producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all", linger_ms=0)
    await producer.start()
    lat: list[float] = []
    try:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await producer.send_and_wait(topic, BARE_VALUE, key=b"acc0001")
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        await producer.stop()
    print(
        f"  bare aiokafka send_and_wait loop, back to back: {len(lat) / seconds:,.0f} msg/s, "
        f"p50 {percentile(lat, 0.5):.2f} ms, p99 {percentile(lat, 0.99):.2f} ms"
    )


async def phase_throughput(base: KafkaSettings, frames: int, seconds: float) -> None:
    kafka = await _namespace(base, "throughput")
    factory = FrameFactory(accounts=100)
    raws = [factory.frame(_now_ms()) for _ in range(frames)]
    async with aiohttp.ClientSession() as session:
        pipe = Pipeline(kafka, factory.accounts, session)
        await pipe.start()
        start = time.perf_counter()
        fed = 0
        deadline = start + seconds
        for account, raw in raws:
            await pipe.feed(account, raw)
            fed += 1
            if fed % 1000 == 0 and time.perf_counter() > deadline:
                break
        await pipe.publisher.drain(60)
        elapsed = time.perf_counter() - start
        published = pipe.publisher.published
        await pipe.stop()
    print(
        f"  parse + normalize + dedupe + publish (acks=all, batched): "
        f"{fed / elapsed:,.0f} frames/s ({published:,} events acknowledged in {elapsed:.1f} s)"
    )


class BareProducer:
    """The baseline for the latency target: a bare aiokafka producer (acks=all, no linger)
    fed at the same rate and arrival pattern as the pipeline, each record's ack timed from
    the moment it was handed over. Same keys, record size, topic layout and broker; no
    parsing, no queue, no dedupe."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.topic = ACCOUNT_EVENTS.qualified(kafka.topic_namespace)
        self.producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all", linger_ms=0)
        self.keys = [f"acc{i:04d}".encode() for i in range(100)]
        self.latencies_ms: list[float] = []

    async def send(self, i: int) -> None:
        sent = time.perf_counter()
        fut = await self.producer.send(self.topic, BARE_VALUE, key=self.keys[i % len(self.keys)])
        fut.add_done_callback(
            lambda _f: self.latencies_ms.append((time.perf_counter() - sent) * 1000)
        )


async def phase_latency(base: KafkaSettings, rate: int, seconds: float) -> None:
    """Frame-to-ack latency of the pipeline beside the bare producer at the same rate.

    The two take turns in one-second slices rather than one after the other, so a load
    spike on the shared machine (the broker runs on the same two cores) falls on both.
    """
    bare = BareProducer(await _namespace(base, "bare-paced"))
    factory = FrameFactory(accounts=100, seed=2)
    gc_pauses = GcPauses()

    async def feed(_i: int) -> None:
        account, raw = factory.frame(_now_ms())
        await pipe.feed(account, raw, frame_id=f"f{factory.n}")

    async with aiohttp.ClientSession() as session:
        pipe = Pipeline(await _namespace(base, "latency"), factory.accounts, session)
        await pipe.start()
        await bare.producer.start()
        try:
            for _ in range(max(1, round(seconds))):
                await paced(rate, 1.0, bare.send)
                with gc_pauses:
                    await paced(rate, 1.0, feed)
            await bare.producer.flush()
        finally:
            await bare.producer.stop()
            await pipe.stop()
    lat = pipe.latencies_ms
    for label, values in (
        ("bare aiokafka send + ack", bare.latencies_ms),
        ("ingestor frame -> ack", lat),
    ):
        print(
            f"  {label:<26} at {rate:,}/s, {len(values):,} records: "
            f"p50 {percentile(values, 0.5):.2f} ms, p99 {percentile(values, 0.99):.2f} ms, "
            f"max {max(values, default=0):.1f} ms"
        )
    ratio = percentile(lat, 0.99) / percentile(bare.latencies_ms, 0.99)
    print(f"  ingestor p99 / bare p99 at the same rate: {ratio:.2f}x (target: at most 2x)")
    print(f"  garbage collection during the ingestor's slices: {gc_pauses.summary()}")


# --------------------------------------------------------------------------- many accounts


@contextlib.contextmanager
def _simulator(accounts: int) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """The Bybit simulator in a subprocess with ``accounts`` accounts; yields its base URL."""
    tmp = Path(tempfile.mkdtemp(prefix="ingestor-bench-"))
    scenario = (SIM_SCENARIOS / "many_accounts.yaml").read_text()
    scenario = scenario.replace("count: 50", f"count: {accounts - 1}")
    (tmp / "scenario.yaml").write_text(scenario)
    port, ops_port = free_port(), free_port()
    env = {
        **os.environ,
        "BYBIT_SIM_SCENARIO": str(tmp / "scenario.yaml"),
        "BYBIT_SIM_PORT": str(port),
        "BYBIT_SIM_HTTP_PORT": str(ops_port),
        "BYBIT_SIM_RATE_LIMIT_PER_S": "1000",
        # the bench turns the ingestor's own IP pacing off (phase_many), so the simulator's
        # IP limits go too: this phase measures a cold start, not Bybit's pacing
        "BYBIT_SIM_IP_LIMIT_PER_5S": "1000000",
        "BYBIT_SIM_WS_CONNECT_LIMIT_PER_5MIN": "1000000",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bybit_sim"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "sim.log", "wb"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    lines = [
        "simulator:",
        f"  rest_url: {base}",
        f"  ws_private_url: ws://127.0.0.1:{port}/v5/private",
        f"  ws_public_url: ws://127.0.0.1:{port}/v5/public/linear",
        "accounts:",
    ]
    creds: dict[str, str] = {}
    names = ["main"] + [f"bulk_{i:03d}" for i in range(1, accounts)]
    for i, name in enumerate(names):
        key = "sim-main-key" if name == "main" else f"sim-bulk-{i:03d}-key"
        secret = "sim-main-secret" if name == "main" else f"sim-bulk-{i:03d}-secret"
        creds[f"K{i}"], creds[f"S{i}"] = key, secret
        lines.append(
            f"  - {{name: {name}, group: many, account_type: unified, position_mode: one_way, "
            f"environment: simulator, credentials: {{api_key_env: K{i}, api_secret_env: S{i}}}}}"
        )
    (tmp / "accounts.yaml").write_text("\n".join(lines) + "\n")
    try:
        yield base, tmp / "accounts.yaml", creds
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with s.get(url) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer in {timeout}s")
            await asyncio.sleep(0.2)


async def phase_many(base: KafkaSettings, accounts: int, seconds: float) -> None:
    kafka = await _namespace(base, "many")
    with _simulator(accounts) as (sim_url, accounts_file, creds):
        await _wait_http(f"{sim_url}/v5/market/time", 60)
        settings = IngestorSettings(
            accounts_file=accounts_file,
            group="many",
            kafka=kafka,
            http_port=0,
            # The simulator's IP limits are lifted for this phase; real Bybit paces a cold
            # start of this many accounts (450 new WS connections / 5 min, 500 REST / 5 s).
            ws_connects_per_window=100_000,
            rest_ip_requests=100_000,
            wallet_refresh_s=10,
        )
        group = load_group(accounts_file, "many", env=creds)
        # per-account warnings would bury the figures; the counters below summarise them
        logging.getLogger("ingestor").setLevel(logging.ERROR)
        rss_before = _rss_mb()
        cpu0 = time.process_time()
        app = Ingestor(settings, group=group, serve_http=False, create_topics=False)
        task = asyncio.create_task(app.run())
        start = time.monotonic()
        try:
            while not app.health.ready:
                if time.monotonic() - start > 180 or task.done():
                    break
                await asyncio.sleep(0.2)
            ready_s = time.monotonic() - start
            streaming = sum(1 for st in app.streams if st.resyncs > 0)
            rss_ready = _rss_mb()
            # steady state: trading on random accounts through the simulator's admin API
            cpu1 = time.process_time()
            actions = await _trade(sim_url, accounts, seconds)
            cpu2 = time.process_time()
            rss_end = _rss_mb()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  {accounts:,} accounts in one process: {streaming:,} streaming, all resynced after "
        f"{ready_s:.1f} s (startup CPU {cpu1 - cpu0:.1f} s)"
    )
    print(
        f"  RSS: {rss_before:.0f} MB before the ingestor, {rss_ready:.0f} MB when ready, "
        f"{rss_end:.0f} MB after {seconds:.0f} s streaming ({actions} orders placed/cancelled); "
        f"≈ {(rss_end - rss_before) * 1024 / max(accounts, 1):.0f} KB per account; "
        f"peak RSS of the bench process {peak:.0f} MB"
    )
    print(
        f"  steady-state CPU of the ingestor process: {100 * (cpu2 - cpu1) / seconds:.0f} % of one "
        f"core; events published {app.publisher.published:,}"
    )
    lost = {
        s.labels["cause"]: int(s.value)
        for metric in REGISTRY.collect()
        if metric.name == "ingestor_links_lost"
        for s in metric.samples
        if s.name.endswith("_total") and s.labels.get("link") == "private" and s.value
    }
    print(f"  private links lost during the phase, by cause: {lost or 'none'}")


async def _trade(base: str, accounts: int, seconds: float) -> int:
    rng = random.Random(5)
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            i = rng.randrange(1, accounts)
            body = {
                "action": "place_order", "account": f"bulk_{i:03d}", "symbol": "BTCUSDT",
                "side": "Buy", "qty": "0.01", "price": "60000",
            }  # fmt: skip
            async with s.post(f"{base}/sim/action", data=orjson.dumps(body)) as resp:
                placed = orjson.loads(await resp.read())
            if placed.get("orderId"):
                cancel = {"action": "cancel_order", "account": body["account"],
                          "order_id": placed["orderId"]}  # fmt: skip
                async with s.post(f"{base}/sim/action", data=orjson.dumps(cancel)):
                    pass
                done += 2
            await asyncio.sleep(0.02)
    return done


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> None:
    broker = local_broker()
    broker.start()
    base = broker.kafka_settings()
    print(f"{broker.banner()}, fresh for this run")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    try:
        # first, while the process is small, so the RSS figures are the ingestor's own
        if args.accounts:
            print(f"1. {args.accounts:,} accounts against the simulator")
            await phase_many(base, args.accounts, args.seconds * 2)
        # A phase's garbage is collected before the next starts, so a full collection it
        # triggers is not charged to the next phase's latency (phase 5 prints its own GC).
        gc.collect()
        print("2. in-process cost")
        phase_cost(args.cost_frames)
        gc.collect()
        print("3. baseline")
        await phase_bare(base, args.seconds)
        gc.collect()
        print("4. throughput")
        await phase_throughput(base, args.frames, args.seconds * 2)
        gc.collect()
        print(f"5. latency at {args.rate:,} frames/s")
        await phase_latency(base, args.rate, args.seconds * 2)
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestor.bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="base length of a phase")
    parser.add_argument("--frames", type=int, default=60_000, help="throughput frames")
    parser.add_argument("--cost-frames", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=2000, help="frames/s of the latency phase")
    parser.add_argument("--accounts", type=int, default=1000, help="0 skips the phase")
    args = parser.parse_args(argv)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
