"""``make profile-risk``: where the processor's time per record goes.

``run`` is the workload: a fresh local broker, ``--events`` account events already on the
topic (the benchmark's data), then the processor in this process handling them as fast
as it can (the benchmark's throughput run), sampled by py-spy (so the figures are not
distorted by the profiler) while it handles them; ``summarize`` turns the raw stacks into
a table: each sample goes to the first category found walking from the
innermost frame outwards, so "engine" is time inside the engine, however it was reached.
Run it on an otherwise quiet machine; compare figures within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from bench_risk import PLAIN_TOPICS, Feed, _processor, _produce_all

from riskwatch_common.benchkit import fresh_namespace
from riskwatch_common.broker import local_broker
from riskwatch_common.kafka import ensure_topics
from riskwatch_common.topics import ALL_TOPICS

# (category, substrings of "function (file)"), most specific first.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("engine + evaluation (pure)", ("/engine/", "evaluate.py", "outputs.py")),
    ("state updates (pure)", ("risk_processor/state.py",)),
    ("decode (pydantic)", ("pydantic", "riskwatch_common/topics.py")),
    ("table writes + changelog codecs", ("tables.py", "faust/tables", "faust/stores", "codec")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("aiokafka (fetch, record batches, produce)", ("aiokafka/",)),
    ("faust consumer path", ("faust/", "mode/", "transport.py", "batching.py")),
    ("shell (agents, outbox, coalescing)", ("risk_processor/",)),
    ("asyncio, other", ("",)),
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
        print(f"  {name:42s} {share * 100:5.1f} %{extra}")


async def workload(events: int, raw: Path | None) -> None:
    """Produce ``events``, then let the processor handle them; with ``raw``, py-spy samples
    this process from the first record handled to the last (broker start, data generation
    and the processor's start-up stay out of the profile)."""
    broker = local_broker()
    broker.start()
    try:
        with TemporaryDirectory() as tmp:
            kafka = fresh_namespace(broker.kafka_settings(), "prof")
            await ensure_topics(kafka, [*ALL_TOPICS, *PLAIN_TOPICS])
            feed = Feed(50)
            n = await _produce_all(kafka, (feed.steady() for _ in range(events)))
            proc = _processor(kafka, Path(tmp) / "t")
            runner = asyncio.ensure_future(proc.run())
            spy: asyncio.subprocess.Process | None = None
            try:
                while proc.records_handled == 0:
                    if runner.done():
                        runner.result()
                    await asyncio.sleep(0.002)
                if raw is not None:
                    spy = await asyncio.create_subprocess_exec(
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "--pid",
                        str(os.getpid()),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                        "--nonblocking",
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                    )
                t0, c0, n0 = time.perf_counter(), time.process_time(), proc.records_handled
                while proc.records_handled < n:
                    if runner.done():
                        runner.result()
                    await asyncio.sleep(0.01)
                elapsed = time.perf_counter() - t0
                cpu_s = time.process_time() - c0
                handled = proc.records_handled - n0
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    await asyncio.wait_for(spy.wait(), 60)
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            print(
                f"handled {handled} records in {elapsed:.2f} s: {handled / elapsed:.0f} events/s,"
                f" CPU {cpu_s / elapsed * 100:.0f} %"
            )
            print(f"records={handled} cpu_s={cpu_s:.3f}")
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--events", type=int, default=100_000)
    run.add_argument("--raw", type=Path, help="py-spy's raw stacks go here")
    summ = sub.add_parser("summarize")
    summ.add_argument("raw", type=Path)
    summ.add_argument("--records", type=int)
    summ.add_argument("--cpu-s", type=float)
    args = parser.parse_args()
    if args.command == "run":
        asyncio.run(workload(args.events, args.raw))
    else:
        summarize(args.raw, args.records, args.cpu_s)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
