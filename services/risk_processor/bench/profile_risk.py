"""``make profile-risk``: where the processor's time per record goes.

``run`` is the workload: a fresh local broker, ``--events`` account events already on the
topic (the benchmark's data), then the processor in this process handling them as fast
as it can (the benchmark's throughput run). ``make profile-risk`` runs it under py-spy
(sampling, so the figures are not distorted by the profiler) and ``summarize`` turns the
raw stacks into a table: each sample goes to the first category found walking from the
innermost frame outwards, so "engine" is time inside the engine, however it was reached.
Run it on an otherwise quiet machine; compare figures within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from bench_risk import PLAIN_TOPICS, Feed, _processor, _produce_all, _throughput

from riskwatch_common.benchkit import fresh_namespace
from riskwatch_common.broker import local_broker
from riskwatch_common.kafka import ensure_topics
from riskwatch_common.topics import ALL_TOPICS

# (category, substrings of "function (file)"), most specific first.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("engine + evaluation (pure)", ("/engine/", "evaluate.py", "outputs.py")),
    ("state updates (pure)", ("state.py",)),
    ("decode (pydantic)", ("pydantic", "topics.py")),
    ("table writes + changelog", ("tables.py", "faust/tables", "faust/stores", "codec")),
    ("metrics", ("prometheus_client",)),
    ("produce (aiokafka producer)", ("aiokafka/producer", "aiokafka/record")),
    ("consume (aiokafka fetcher)", ("aiokafka/consumer", "aiokafka/conn", "aiokafka/protocol")),
    ("faust consumer path", ("faust/transport", "transport.py", "batching.py", "faust/")),
    ("shell (agents, outbox, coalescing)", ("risk_processor/",)),
    ("asyncio / other", ("",)),
)


def categorize(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, needles in CATEGORIES[:-1]:
            if any(n in frame for n in needles):
                return name
    return CATEGORIES[-1][0]


def summarize(raw: Path, records: int | None, cpu_s: float | None) -> None:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if not weight.isdigit():
            continue
        counts[categorize(stack)] += int(weight)
        total += int(weight)
    per_record = cpu_s / records * 1e6 if records and cpu_s else None
    print(f"{total} samples" + (f", {per_record:.1f} µs CPU per record" if per_record else ""))
    for name, samples in counts.most_common():
        share = samples / total if total else 0.0
        extra = f"  {share * per_record:6.1f} µs" if per_record else ""
        print(f"  {name:38s} {share * 100:5.1f} %{extra}")


async def workload(events: int) -> None:
    broker = local_broker()
    broker.start()
    try:
        with TemporaryDirectory() as tmp:
            kafka = fresh_namespace(broker.kafka_settings(), "prof")
            await ensure_topics(kafka, [*ALL_TOPICS, *PLAIN_TOPICS])
            feed = Feed(50)
            n = await _produce_all(kafka, (feed.steady() for _ in range(events)))
            proc = _processor(kafka, Path(tmp) / "t")
            c0 = time.process_time()
            rate, cpu = await _throughput(lambda: proc.records_handled, n, proc.run)
            used = time.process_time() - c0
            print(f"handled {n} records: {rate:.0f} events/s, CPU {cpu:.0f} %")
            print(f"records={n} cpu_s={used:.3f}")
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--events", type=int, default=100_000)
    summ = sub.add_parser("summarize")
    summ.add_argument("raw", type=Path)
    summ.add_argument("--records", type=int)
    summ.add_argument("--cpu-s", type=float)
    args = parser.parse_args()
    if args.command == "run":
        asyncio.run(workload(args.events))
    else:
        summarize(args.raw, args.records, args.cpu_s)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
