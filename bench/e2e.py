"""``make bench-e2e``: from an exchange frame to the trader's Telegram, the headline latency.

On a fresh local broker (``RISKWATCH_BROKER``) it runs, each as its own process as
deployed: the Bybit simulator driving ``--accounts`` accounts at ``--rate`` frames/s in
total (``bybit_sim.load``: order churn, ticker deltas, and per account a net-exposure
breach and its unwind every ``--cycle`` seconds), the ingestor, the risk processor and the
notifier, which delivers to a fake Telegram Bot API in this process over real HTTP
(``riskwatch_common.fakes``). The AI analyst is not run: an alert goes out before its
commentary, so the analyst is not in the path measured.

Each delivered alert is traced by its correlation id, the id of the simulator frame that
caused it, through four stamps:

0. the frame's creation time in the simulator (whole ms, the frames log),
1. ``produced_at`` of the account event the ingestor made of that frame,
2. ``produced_at`` of the alert the processor made of it,
3. ``produced_at`` of the notifier's ``NotificationDelivered`` record for that alert on the
   ``telegram`` channel (``notify.deliveries.v1``): the notifier's clock once the fake
   Telegram accepted the ``sendMessage`` request, and once the rest of its consumer batch
   settled.

All four are one machine's clock. Deliveries are matched by the record's
``source_event_id`` (the alert's event id), not by text: the notifier's messages carry
live stats and the local time, and a burst goes out as one digest.

Only alerts whose frame falls in the ``--seconds`` measuring window (after every service is
up and a first alert came through) are counted; the topics and the frames log are read
after the run, so nothing but the fake Telegram shares this process's event loop while the
load runs. Before the pipeline starts, the raw
broker floor (``benchkit.raw_hops``: bare produce → consume, one and two hops) is measured
on the same broker at the same rate. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bybit_sim.load import LoadPlan, api_key, api_secret, load_scenario_text
from riskwatch_common.benchkit import (
    AlertTraces,
    fresh_namespace,
    hop_breakdown,
    percentile,
    raw_hops,
    trace_alerts,
)
from riskwatch_common.broker import free_port, local_broker
from riskwatch_common.contracts import NotificationDelivered, NotificationKind, RiskAlertChanged
from riskwatch_common.fakes import FakeTelegram
from riskwatch_common.kafka import client_kwargs, ensure_topics
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import ServiceProcess
from riskwatch_common.topics import ACCOUNT_EVENTS, ALERTS, ALL_TOPICS, NOTIFICATIONS, TopicSpec

TOKEN = "7000000001:AAbench-e2e-fake-telegram-token"
# A private chat: a group's chat id (negative) gets Telegram's 20 messages a minute per
# group (notifier/telegram.py), and that queue would be all the figure measures.
CHAT_ID = "1000000001"
# A hop ends at the next stamp: the processor stamps an alert when its batch is taken in,
# before the rules run, so the rules count in the third hop.
HOPS = (
    "frame -> account event (WebSocket, parse)",
    "-> processor batch (publish, broker, gather)",
    "-> Telegram (rules, publish, broker, notifier)",
)
# Only net exposure moves in the load; the rules a breach also touches (BTC becomes the
# larger side) are relaxed, and the portfolio (the sum of 20 breaching accounts) is not
# what is measured.
THRESHOLDS = """
thresholds: {net_exposure_usd: 10000, buy_share_high: 0.99, buy_share_low: 0.01,
             same_side_share: 0.99}
portfolio: {net_exposure_usd: 1000000000}
"""
ACCOUNT = """  - name: {name}
    group: bench
    account_type: unified
    position_mode: one_way
    environment: simulator
    credentials: {{api_key_env: {env}_KEY, api_secret_env: {env}_SECRET}}
"""
SERVICES = ("risk_processor", "notifier", "bybit_sim", "ingestor")  # start order


@dataclass
class Run:
    """What one run gathered; read and matched after the load."""

    window: tuple[float, float]
    frames: dict[str, tuple[float, str, int]]  # frame id -> (time s, topic, subscribers)
    event_produced: dict[str, float]  # correlation id -> earliest account event produced_at
    alerts: list[RiskAlertChanged]
    delivered: list[tuple[float, str]]  # (delivered time, alert event id) on Telegram
    telegram_messages: int  # sendMessage requests the fake Telegram got (digests are one)
    tickers: float
    cpu: dict[str, float]
    failure: str | None  # a service that exited during the window, and why


# --------------------------------------------------------------------------- processes


def _accounts_yaml(plan: LoadPlan, sim_port: int) -> tuple[str, dict[str, str]]:
    lines = [
        "simulator:",
        f"  rest_url: http://127.0.0.1:{sim_port}",
        f"  ws_private_url: ws://127.0.0.1:{sim_port}/v5/private",
        f"  ws_public_url: ws://127.0.0.1:{sim_port}/v5/public/linear",
        "accounts:",
    ]
    creds: dict[str, str] = {}
    for name in plan.account_names():
        env = f"BENCH_{name.upper()}"
        lines.append(ACCOUNT.format(name=name, env=env).rstrip("\n"))
        creds[f"{env}_KEY"], creds[f"{env}_SECRET"] = api_key(name), api_secret(name)
    return "\n".join(lines) + "\n", creds


def _processes(
    kafka: KafkaSettings, plan: LoadPlan, tmp: Path, telegram: FakeTelegram
) -> tuple[dict[str, ServiceProcess], dict[str, int]]:
    sim_port = free_port()
    ports = {name: free_port() for name in SERVICES}
    (tmp / "scenario.yaml").write_text(load_scenario_text(plan))
    (tmp / "thresholds.yaml").write_text(THRESHOLDS)
    accounts, creds = _accounts_yaml(plan, sim_port)
    (tmp / "accounts.yaml").write_text(accounts)
    # our services log as deployed (INFO); the simulator stands for Bybit
    common = {**kafka.as_env(), "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    envs = {
        "bybit_sim": {
            "BYBIT_SIM_SCENARIO": str(tmp / "scenario.yaml"),
            "BYBIT_SIM_PORT": str(sim_port),
            "BYBIT_SIM_HTTP_PORT": str(ports["bybit_sim"]),
            "BYBIT_SIM_FRAMES_LOG": str(tmp / "frames.jsonl"),
            "LOG_LEVEL": "WARNING",
        },
        "ingestor": {
            **creds,
            "INGESTOR_ACCOUNTS_FILE": str(tmp / "accounts.yaml"),
            "INGESTOR_GROUP": "bench",
            "INGESTOR_HTTP_PORT": str(ports["ingestor"]),
        },
        "risk_processor": {
            "RISK_PROCESSOR_HTTP_PORT": str(ports["risk_processor"]),
            "RISK_PROCESSOR_DATA_DIR": str(tmp / "risk-processor"),
            "RISK_PROCESSOR_THRESHOLDS_FILE": str(tmp / "thresholds.yaml"),
        },
        "notifier": {
            "NOTIFIER_HTTP_PORT": str(ports["notifier"]),
            "NOTIFIER_TELEGRAM_BOT_TOKEN": TOKEN,
            "NOTIFIER_TELEGRAM_CHAT_ID": CHAT_ID,
            "NOTIFIER_TELEGRAM_API_BASE": telegram.base,
            # Telegram allows ~1 message/s per chat; at 10 alerts/s that pacing would be
            # all the figure measures. Off: this measures our path, not Telegram's limit.
            "NOTIFIER_TELEGRAM_MIN_INTERVAL_SECONDS": "0",
            "NOTIFIER_CONSOLE_ENABLED": "false",
            "NOTIFIER_ALERTS_FILE": "",
            "NOTIFIER_DELIVERY_LOG": str(tmp / "delivered.jsonl"),
        },
    }
    procs = {
        name: ServiceProcess(name, {**common, **envs[name]}, tmp / f"{name}.log")
        for name in SERVICES
    }
    return procs, ports


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_now(procs: Mapping[str, ServiceProcess]) -> dict[str, float]:
    out = {"bench": time.process_time()}
    for name, proc in procs.items():
        if proc.proc is not None and proc.running:
            out[name] = _cpu_seconds(proc.proc.pid)
    return out


async def _ready(http: aiohttp.ClientSession, port: int) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            return resp.status == 200
    return False


async def _ticker_deltas(http: aiohttp.ClientSession, port: int) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    found = re.search(r'^bybit_sim_ticker_messages_total\{type="delta"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _exited(procs: Mapping[str, ServiceProcess]) -> str | None:
    """Which service exited, with the last error it logged; None while all run."""
    for name, proc in procs.items():
        if proc.running:
            continue
        why = ""
        for line in proc.output(200).splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(line)
                if isinstance(doc, dict) and doc.get("level") == "ERROR":
                    why = str(doc.get("msg", ""))[:300]
                    break  # the first error is the cause; later ones are the shutdown's
        code = proc.proc.returncode if proc.proc is not None else None
        return f"{name} exited (code {code}): {why or proc.output(5)} (log {proc.log_path})"
    return None


def _alive(procs: Mapping[str, ServiceProcess]) -> None:
    failure = _exited(procs)
    if failure is not None:
        raise RuntimeError(failure)


async def _wait(what: str, timeout: float, procs: Mapping[str, ServiceProcess], check: Any) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        _alive(procs)
        if time.monotonic() > deadline:
            tails = "\n".join(f"----- {n}\n{p.output(15)}" for n, p in procs.items())
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- reading back


async def _read_all(kafka: KafkaSettings, spec: TopicSpec) -> Iterator[bytes]:
    """Every record value of a topic, up to its end offsets now."""
    topic = spec.qualified(kafka.topic_namespace)
    consumer = AIOKafkaConsumer(
        **client_kwargs(kafka), enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(spec.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        left = {tp for tp in partitions if end[tp] > 0}
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            batch = await consumer.getmany(*left, timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                values.extend(r.value or b"" for r in records)
                if records and records[-1].offset + 1 >= end[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return iter(values)


def _stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _frames(path: Path) -> dict[str, tuple[float, str, int]]:
    out: dict[str, tuple[float, str, int]] = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            doc = orjson.loads(line)
            out[doc["id"]] = (doc["time"] / 1000, doc["topic"], doc["subscribers"])
    return out


# --------------------------------------------------------------------------- the run


async def _pipeline(kafka: KafkaSettings, plan: LoadPlan, args: argparse.Namespace) -> Run:
    with TemporaryDirectory(prefix="bench-e2e-") as name:
        tmp = Path(name)
        telegram = FakeTelegram(TOKEN)
        await telegram.start()
        procs, ports = _processes(kafka, plan, tmp, telegram)
        try:
            async with aiohttp.ClientSession() as http:
                for service in SERVICES:
                    procs[service].start()
                for service in SERVICES:

                    async def up(port: int = ports[service]) -> bool:
                        return await _ready(http, port)

                    await _wait(f"{service} ready", 180, procs, up)

                async def first_alert() -> bool:
                    return bool(telegram.received)

                await _wait("a first alert on Telegram", 120, procs, first_alert)
                await asyncio.sleep(args.settle)  # group joins and first batches behind us
                cpu0, tick0, start = (
                    _cpu_now(procs),
                    await _ticker_deltas(http, ports["bybit_sim"]),
                    time.time(),
                )
                deadline = time.monotonic() + args.seconds
                failure = None
                while failure is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    failure = _exited(procs)
                # a service that fails ends the window there: what came before still counts
                cpu1, end = _cpu_now(procs), time.time()
                tick1 = float("nan")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    tick1 = await _ticker_deltas(http, ports["bybit_sim"])
                # the load goes on while the window's last alerts come through
                await asyncio.sleep(args.drain)
        finally:
            for service in reversed(SERVICES):
                await asyncio.to_thread(procs[service].stop)
            await telegram.stop()
        elapsed = end - start
        cpu = {k: (cpu1[k] - cpu0[k]) / elapsed * 100 for k in cpu1 if k in cpu0}
        produced: dict[str, float] = {}
        for value in await _read_all(kafka, ACCOUNT_EVENTS):
            doc = orjson.loads(value)
            corr, at = doc["correlation_id"], _stamp(doc["produced_at"])
            produced[corr] = min(at, produced.get(corr, at))
        alerts = [ALERTS.decode(v) for v in await _read_all(kafka, ALERTS)]
        delivered = [
            (d.produced_at.timestamp(), d.source_event_id)
            for d in map(NOTIFICATIONS.decode, await _read_all(kafka, NOTIFICATIONS))
            if isinstance(d, NotificationDelivered)
            and d.channel == "telegram"
            and d.kind == NotificationKind.ALERT
        ]
        return Run(
            window=(start, end),
            frames=_frames(tmp / "frames.jsonl"),
            event_produced=produced,
            alerts=[a for a in alerts if isinstance(a, RiskAlertChanged)],
            delivered=delivered,
            telegram_messages=len(telegram.received),
            tickers=tick1 - tick0,
            cpu=cpu,
            failure=failure,
        )


def _report(run: Run, plan: LoadPlan, traced: AlertTraces) -> None:
    start, end = run.window
    seconds = end - start
    if run.failure is not None:
        print(f"WINDOW CUT SHORT after {seconds:.0f} s: {run.failure}")
    topics = Counter(t for at, t, subs in run.frames.values() if start <= at <= end and subs)
    private = sum(topics.values())
    rates = ", ".join(f"{t} {n / seconds:.0f}" for t, n in topics.most_common())
    print(
        f"load over {seconds:.0f} s: {(private + run.tickers) / seconds:.0f} frames/s "
        f"(planned {plan.frames_per_s:.0f}; per s: {rates}, ticker {run.tickers / seconds:.0f})"
    )
    cpu = ", ".join(f"{k} {v:.0f} %" for k, v in run.cpu.items())
    print(f"CPU in the window (of one core): {cpu}")
    kinds = ", ".join(f"{n} {k}" for k, n in traced.transitions.most_common())
    print(
        f"exchange frame -> delivered to the fake Telegram, {len(traced.traces)} alert "
        f"transitions ({kinds}); not delivered by the end: {traced.undelivered}, "
        f"without their account event: {traced.untraced}; the fake Telegram got "
        f"{run.telegram_messages} messages in the whole run"
    )
    print(f"  {'hop':<48}{'p50':>9}{'p99':>9}{'max':>9}{'mean':>9}{'share':>8}")
    for row in hop_breakdown(HOPS, traced.traces):
        print(
            f"  {row.name:<48}{row.p50_ms:7.1f}ms{row.p99_ms:7.1f}ms{row.max_ms:7.1f}ms"
            f"{row.mean_ms:7.1f}ms{row.share * 100:7.0f}%"
        )


async def run(args: argparse.Namespace) -> None:
    plan = LoadPlan(accounts=args.accounts, frames_per_s=args.rate, cycle_s=args.cycle)
    broker = local_broker()
    broker.start()
    print(f"{broker.banner()}, fresh for this run")
    print(
        f"pipeline: bybit_sim ({plan.accounts} accounts, {plan.frames_per_s:.0f} frames/s, "
        f"{plan.transitions_per_s:.0f} alert transitions/s) -> ingestor -> risk_processor -> "
        "notifier -> fake Telegram (HTTP, pacing off), each its own process; "
        "AI analyst not run (not in the alert's path)"
    )
    try:
        base = broker.kafka_settings()
        hop1, hop2 = await raw_hops(base, args.rate, args.floor_seconds)
        print(f"raw broker floor, measured first on the same broker ({args.floor_seconds:.0f} s):")
        print(f"  {hop1.line()}")
        print(f"  {hop2.line()}")
        kafka = fresh_namespace(base, "e2e")
        await ensure_topics(kafka, ALL_TOPICS)
        started = time.monotonic()
        result = await _pipeline(kafka, plan, args)
        traced = trace_alerts(
            result.alerts,
            frame_times={k: v[0] for k, v in result.frames.items()},
            event_times=result.event_produced,
            deliveries=result.delivered,
            window=result.window,
        )
        _report(result, plan, traced)
        total = hop_breakdown(HOPS, traced.traces)[-1]
        print(
            f"headline: exchange frame -> Telegram p50 {total.p50_ms:.1f} ms, p99 "
            f"{total.p99_ms:.1f} ms, max {total.max_ms:.1f} ms (n={len(traced.traces)}); "
            f"the path crosses the broker twice: raw two-hop floor p50 "
            f"{percentile(hop2.samples, 0.5) * 1000:.1f} ms, p99 "
            f"{percentile(hop2.samples, 0.99) * 1000:.1f} ms"
        )
        print(f"pipeline phase took {time.monotonic() - started:.0f} s")
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the window")
    parser.add_argument("--rate", type=float, default=1000.0, help="frames/s, all accounts")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--cycle", type=int, default=4, help="s between an account's breaches")
    parser.add_argument("--floor-seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=5.0, help="s after the first alert")
    parser.add_argument("--drain", type=float, default=10.0, help="s after the window")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # a group coordinator still starting up is retried by aiokafka and is no finding
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
