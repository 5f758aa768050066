"""``make chaos``: the whole pipeline under injected faults, and whether every alert got out.

On a fresh local broker (``RISKWATCH_BROKER``: Apache Kafka by default) it runs, each as its
own process as deployed, the Bybit simulator (``bybit_sim.load``: ``--accounts`` accounts,
each breaching a 10,000 USD net-exposure limit and unwinding once per ``--cycle`` seconds),
the ingestor, the risk processor, the AI analyst (no LLM key: deterministic analyses) and
the notifier, which delivers to a fake Telegram Bot API in this process over real HTTP
(``riskwatch_common.fakes``). A supervisor here restarts any
service that exits, as Kubernetes would. Then it injects, one after another:

- ``kill:<service>``: SIGKILL of each service (the supervisor restarts it);
- ``telegram``: Telegram down (502) for ``--outage`` seconds, then a storm of 429s;
- ``disconnects``: a storm of abrupt WebSocket disconnects (the simulator's ``disconnect``);
- ``key-revoked``: one account's key refused (``auth_fail``) and its stream dropped, for
  ``--revoked`` seconds, then accepted again;
- ``poison``: a record that is not JSON and one of 900 KB on every data topic;
- ``broker-restart``: the broker stopped and started on its data (Apache Kafka only).

After each fault every service must answer ``/readyz`` and a new ``PipelineHeartbeat``
must reach ``risk.heartbeats.v1`` (the ingestor and the processor made progress) within
``--recover`` seconds; otherwise the fault counts as a hang. One line is printed per fault,
then, after the backlog drained, exactly one summary line::

    chaos: <n> faults, alerts expected <e>, delivered <d>, lost <l>, duplicated <u>, hung <h>

Ground truth. The alerts that must reach the trader are the paging transitions (raised,
escalated, resolved) on ``risk.alerts.v1``, one per event id; an alert raised again while
open (or resolved again while resolved) is a duplicate made by the processor and counts as
duplicated, not expected. A transition is delivered when a message the fake Telegram
accepted carries it: the notifier's delivery log maps each event id to Telegram's
``message_id`` for it, and the fake Telegram gave out that id. A transition delivered
under two message ids, or an accepted message missing from the log whose text equals a
logged one (a re-send after a crash), is duplicated. Digests are off
(``NOTIFIER_DIGEST_THRESHOLD=0``) so every transition is its own message. The exit code is
non-zero when lost, duplicated or hung is not 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from bench.e2e import THRESHOLDS, _accounts_yaml, _read_all
from bybit_sim.load import POSITIONS as LOAD_POSITIONS
from bybit_sim.load import LoadPlan, load_scenario_text
from riskwatch_common.benchkit import fresh_namespace
from riskwatch_common.broker import LocalBroker, free_port, local_broker
from riskwatch_common.contracts import AlertTransition, RiskAlertChanged
from riskwatch_common.fakes import FakeTelegram
from riskwatch_common.kafka import client_kwargs, ensure_topics
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import ServiceProcess
from riskwatch_common.topics import (
    ALERTS,
    ALL_TOPICS,
    DATA_TOPICS,
    DEAD_LETTER_TOPICS,
    HEARTBEATS,
)

TOKEN = "7000000002:AAchaos-fake-telegram-token"
CHAT_ID = "1000000002"  # a private chat: Telegram's 20/min group limit is not under test
SERVICES = ("risk_processor", "notifier", "ai_analyst", "bybit_sim", "ingestor")  # start order
PAGING = {AlertTransition.RAISED, AlertTransition.ESCALATED, AlertTransition.RESOLVED}
ALL_FAULTS = (
    "kill:ingestor",
    "kill:risk_processor",
    "kill:notifier",
    "kill:ai_analyst",
    "kill:bybit_sim",
    "telegram",
    "disconnects",
    "key-revoked",
    "poison",
    "broker-restart",
)
OVERSIZE_BYTES = 900 * 1024  # under the broker's default 1 MiB message limit


@dataclass
class Tally:
    """What the run's faults did to the services."""

    faults: int = 0
    hung: list[str] = field(default_factory=list)
    restarts: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Summary:
    expected: int
    delivered: int
    lost: int
    duplicated: int
    other: int  # accepted messages that carry no alert transition (e.g. monitoring stalled)
    lost_ids: tuple[str, ...]

    def line(self, faults: int, hung: int) -> str:
        return (
            f"chaos: {faults} faults, alerts expected {self.expected}, delivered "
            f"{self.delivered}, lost {self.lost}, duplicated {self.duplicated}, hung {hung}"
        )


def summarize(
    alerts: list[RiskAlertChanged],
    telegram: list[tuple[int, str]],
    delivery_log: list[dict[str, Any]],
) -> Summary:
    """Expected transitions vs what Telegram accepted (pure; see the module doc).

    ``telegram`` is (message_id, text) of every accepted message; ``delivery_log`` the
    notifier's delivery-log lines."""
    unique: dict[str, RiskAlertChanged] = {}
    for alert in alerts:
        unique.setdefault(alert.event_id, alert)
    expected: list[str] = []
    duplicated = 0
    last: dict[str, AlertTransition] = {}
    for alert in unique.values():  # topic order: an alert's records share a partition
        if alert.transition not in PAGING:
            continue
        before = last.get(alert.alert_id)
        again = alert.transition in (AlertTransition.RAISED, AlertTransition.RESOLVED)
        if again and before == alert.transition:
            duplicated += 1  # the processor raised an open alert (or resolved one) again
            continue
        last[alert.alert_id] = alert.transition
        expected.append(alert.event_id)
    by_ref: dict[int, str] = {}
    for line in delivery_log:
        if line.get("channel") == "telegram" and isinstance(line.get("ref"), int):
            by_ref[line["ref"]] = str(line["event_id"])
    sent: Counter[str] = Counter()
    logged_texts: set[str] = set()
    unlogged: list[str] = []
    for message_id, text in telegram:
        event_id = by_ref.get(message_id)
        if event_id is None:
            unlogged.append(text)
        else:
            sent[event_id] += 1
            logged_texts.add(text)
    resent = sum(1 for text in unlogged if text in logged_texts)
    duplicated += resent + sum(n - 1 for n in sent.values() if n > 1)
    lost_ids = tuple(e for e in expected if sent[e] == 0)
    return Summary(
        expected=len(expected),
        delivered=len(expected) - len(lost_ids),
        lost=len(lost_ids),
        duplicated=duplicated,
        other=len(unlogged) - resent,
        lost_ids=lost_ids,
    )


def breaches_opened(frames_log: Path) -> Counter[str]:
    """Per account, how often its BTCUSDT position rose above the standing size plus half
    the breach quantity: the load's breaches, as the simulator's frames log records them
    (every private frame, whether or not anyone was subscribed)."""
    standing, breach = (Decimal(LOAD_POSITIONS["BTCUSDT"][1]), LoadPlan().breach_qty)
    edge = standing + breach / 2
    opened: Counter[str] = Counter()
    above: dict[str, bool] = {}
    if not frames_log.exists():
        return opened
    for raw in frames_log.read_bytes().splitlines():
        doc = orjson.loads(raw)
        if doc.get("topic") != "position" or doc.get("fault"):
            continue
        for row in doc.get("rows", []):
            if row.get("symbol") != "BTCUSDT":
                continue
            now = Decimal(str(row["size"])) > edge
            if now and not above.get(doc["account"], False):
                opened[doc["account"]] += 1
            above[doc["account"]] = now
    return opened


class Chaos:
    """The processes, the fakes and the faults of one run."""

    def __init__(
        self,
        broker: LocalBroker,
        kafka: KafkaSettings,
        tmp: Path,
        args: argparse.Namespace,
    ) -> None:
        self.broker, self.kafka, self.tmp, self.args = broker, kafka, tmp, args
        self.telegram = FakeTelegram(TOKEN)
        self.telegram.chats[CHAT_ID] = {"id": int(CHAT_ID), "type": "private"}
        self.plan = LoadPlan(accounts=args.accounts, frames_per_s=args.rate, cycle_s=args.cycle)
        self.tally = Tally()
        self.procs: dict[str, ServiceProcess] = {}
        self.ports: dict[str, int] = {}
        self.sim_port = 0
        self.paused = False  # the supervisor leaves exits alone while set
        self.heartbeats = 0
        self.last_heartbeat = 0.0
        self.raised: Counter[str] = Counter()  # net-exposure alerts raised, per account
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    # ----------------------------------------------------------------------- processes

    def build(self) -> None:
        self.sim_port = free_port()
        self.ports = {name: free_port() for name in SERVICES}
        (self.tmp / "scenario.yaml").write_text(load_scenario_text(self.plan))
        (self.tmp / "thresholds.yaml").write_text(THRESHOLDS)
        accounts, creds = _accounts_yaml(self.plan, self.sim_port)
        (self.tmp / "accounts.yaml").write_text(accounts)
        common = {**self.kafka.as_env(), "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        envs = {
            "bybit_sim": {
                "BYBIT_SIM_SCENARIO": str(self.tmp / "scenario.yaml"),
                "BYBIT_SIM_PORT": str(self.sim_port),
                "BYBIT_SIM_HTTP_PORT": str(self.ports["bybit_sim"]),
                "BYBIT_SIM_FRAMES_LOG": str(self.tmp / "frames.jsonl"),
                "LOG_LEVEL": "WARNING",
            },
            "ingestor": {
                **creds,
                "INGESTOR_ACCOUNTS_FILE": str(self.tmp / "accounts.yaml"),
                "INGESTOR_GROUP": "bench",
                "INGESTOR_HTTP_PORT": str(self.ports["ingestor"]),
                "INGESTOR_HEARTBEAT_INTERVAL_S": "2",
                # a refused key is tried again soon, so the revoked-key fault can recover
                "INGESTOR_AUTH_RETRY_S": "5",
            },
            "risk_processor": {
                "RISK_PROCESSOR_HTTP_PORT": str(self.ports["risk_processor"]),
                "RISK_PROCESSOR_DATA_DIR": str(self.tmp / "risk-processor"),
                "RISK_PROCESSOR_THRESHOLDS_FILE": str(self.tmp / "thresholds.yaml"),
            },
            "ai_analyst": {
                "AI_ANALYST_HTTP_PORT": str(self.ports["ai_analyst"]),
                # no LLM key: deterministic analyses (the LLM's outages are not under test)
                "AI_ANALYST_API_KEY": "",
                "HOLYSHEEP_API_KEY": "",
            },
            "notifier": {
                "NOTIFIER_HTTP_PORT": str(self.ports["notifier"]),
                "NOTIFIER_TELEGRAM_BOT_TOKEN": TOKEN,
                "NOTIFIER_TELEGRAM_CHAT_ID": CHAT_ID,
                "NOTIFIER_TELEGRAM_API_BASE": self.telegram.base,
                "NOTIFIER_CONSOLE_ENABLED": "false",
                "NOTIFIER_ALERTS_FILE": "",
                "NOTIFIER_DELIVERY_LOG": str(self.tmp / "delivered.jsonl"),
                # one message per transition, so each is counted on its own
                "NOTIFIER_DIGEST_THRESHOLD": "0",
            },
        }
        for override in self.args.env:
            service, _, assignment = override.partition(":")
            key, eq, value = assignment.partition("=")
            if service not in envs or not eq:
                raise SystemExit(f"--env {override!r}: want SERVICE:VARIABLE=VALUE")
            envs[service][key] = value
        self.procs = {
            name: ServiceProcess(name, {**common, **envs[name]}, self.tmp / f"{name}.log")
            for name in SERVICES
        }

    async def supervise(self) -> None:
        """Restart a service that exited, as Kubernetes would (restartPolicy: Always)."""
        while True:
            await asyncio.sleep(0.5)
            if self.paused:
                continue
            for name, proc in self.procs.items():
                if proc.proc is not None and not proc.running:
                    code = proc.proc.returncode
                    self.tally.restarts[name] += 1
                    self.say(f"  {name} exited (code {code}); restarted")
                    proc.start()

    async def follow_heartbeats(self) -> None:
        """Count the PipelineHeartbeat records the processor forwards: progress."""
        consumer = AIOKafkaConsumer(
            HEARTBEATS.qualified(self.kafka.topic_namespace),
            **client_kwargs(self.kafka),
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                n = sum(len(records) for records in batch.values())
                if n:
                    self.heartbeats += n
                    self.last_heartbeat = time.monotonic()
        finally:
            await consumer.stop()

    async def _ready(self, http: aiohttp.ClientSession, name: str) -> bool:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            url = f"http://127.0.0.1:{self.ports[name]}/readyz"
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200
        return False

    async def recovered(self, http: aiohttp.ClientSession, what: str, since: float) -> bool:
        """Every service ready and a heartbeat newer than ``since``, within the deadline.

        False (and the hang recorded) otherwise, naming what did not come back."""
        deadline = time.monotonic() + self.args.recover
        not_ready: list[str] = list(SERVICES)
        while time.monotonic() < deadline:
            not_ready = [n for n in SERVICES if not await self._ready(http, n)]
            if not not_ready and self.last_heartbeat > since:
                return True
            await asyncio.sleep(0.5)
        why = (
            f"not ready: {', '.join(not_ready)}"
            if not_ready
            else "every /readyz ok but no heartbeat got through"
        )
        self.tally.hung.append(f"{what}: {why}")
        self.say(f"  HUNG after {what}: {why} within {self.args.recover:.0f} s")
        return False

    # ----------------------------------------------------------------------- faults

    async def _sim_fault(self, http: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        url = f"http://127.0.0.1:{self.sim_port}/sim/fault"
        async with http.post(url, json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"simulator refused fault {body}: {await resp.text()}")

    async def kill(self, http: aiohttp.ClientSession, name: str) -> str:
        self.procs[name].kill()  # the supervisor sees the exit and restarts it
        return f"SIGKILL {name}"

    async def telegram_outage(self, http: aiohttp.ClientSession, name: str) -> str:
        before = self.telegram.requests
        self.telegram.down = True
        await asyncio.sleep(self.args.outage)
        self.telegram.down = False
        refused = self.telegram.requests - before
        storm = 10
        for _ in range(storm):
            self.telegram.fail(429, "Too Many Requests: retry after 2", {"retry_after": 2})
        return (
            f"Telegram down {self.args.outage:.0f} s (502 to {refused} requests), "
            f"then {storm} x 429 retry_after 2"
        )

    async def disconnects(self, http: aiohttp.ClientSession, name: str) -> str:
        storm = 5
        for _ in range(storm):
            await self._sim_fault(http, {"kind": "disconnect", "abrupt": True, "target": "all"})
            await asyncio.sleep(2)
        return f"{storm} abrupt WebSocket disconnects (private and public), 2 s apart"

    async def key_revoked(self, http: aiohttp.ClientSession, name: str) -> str:
        victim = self.plan.account_names()[0]
        await self._sim_fault(http, {"kind": "auth_fail", "account": victim, "count": 100_000})
        await self._sim_fault(
            http, {"kind": "disconnect", "account": victim, "abrupt": True, "target": "private"}
        )
        before = await self._auth_failures(http)
        await asyncio.sleep(self.args.revoked)
        refused = await self._auth_failures(http) - before
        await self._sim_fault(http, {"kind": "clear", "account": victim})
        return (
            f"API key of {victim} refused for {self.args.revoked:.0f} s ({refused:.0f} "
            "refusals seen by the ingestor), then accepted again"
        )

    async def _auth_failures(self, http: aiohttp.ClientSession) -> float:
        """``ingestor_auth_failures_total``, all ``where``; 0 when it cannot be read."""
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            url = f"http://127.0.0.1:{self.ports['ingestor']}/metrics"
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                text = await resp.text()
            found = re.findall(r"^ingestor_auth_failures_total\{[^}]*\} (\S+)$", text, re.M)
            return sum(float(v) for v in found)
        return 0.0

    async def poison(self, http: aiohttp.ClientSession, name: str) -> str:
        producer = AIOKafkaProducer(
            **client_kwargs(self.kafka), acks="all", max_request_size=2 * OVERSIZE_BYTES
        )
        await producer.start()
        try:
            oversize = b'{"event_type": "' + b"x" * OVERSIZE_BYTES + b'"}'
            for spec in DATA_TOPICS:
                topic = spec.qualified(self.kafka.topic_namespace)
                await producer.send_and_wait(topic, b"\x00not json{", key=b"chaos")
                await producer.send_and_wait(topic, oversize, key=b"chaos")
        finally:
            await producer.stop()
        size = OVERSIZE_BYTES // 1024
        return f"a non-JSON and a {size} KB record on each of {len(DATA_TOPICS)} topics"

    async def new_dead_letters(self, before: int, settle: float = 3.0) -> int:
        """Dead letters since ``before``, once their number stopped growing (30 s at most)."""
        deadline = time.monotonic() + 30
        seen, since = before, time.monotonic()
        while time.monotonic() < deadline:
            now = await self.dead_letters()
            if now != seen:
                seen, since = now, time.monotonic()
            elif seen > before and time.monotonic() - since >= settle:
                break
            await asyncio.sleep(0.5)
        return seen - before

    async def dead_letters(self) -> int:
        """Records on every dead-letter topic now (end offsets summed)."""
        consumer = AIOKafkaConsumer(**client_kwargs(self.kafka), enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [
                TopicPartition(spec.qualified(self.kafka.topic_namespace), p)
                for spec in DEAD_LETTER_TOPICS
                for p in range(spec.partitions)
            ]
            ends = await consumer.end_offsets(partitions)
            return sum(ends.values())
        finally:
            await consumer.stop()

    async def broker_restart(self, http: aiohttp.ClientSession, name: str) -> str:
        await asyncio.to_thread(self.broker.restart, 5.0)
        return "broker stopped, down 5 s, started again on its data"

    # ----------------------------------------------------------------------- the run

    async def run(self, faults: list[str]) -> tuple[Summary, int]:
        await self.telegram.start()
        self.build()
        tasks: list[asyncio.Task[None]] = []
        try:
            async with aiohttp.ClientSession() as http:
                for name in SERVICES:
                    self.procs[name].start()
                tasks.append(asyncio.create_task(self.follow_heartbeats()))
                tasks.append(asyncio.create_task(self.supervise()))
                await self._wait("every service ready and a first alert on Telegram", http)
                self.say(f"pipeline up: {', '.join(SERVICES)}; {self.plan.accounts} accounts")
                actions: dict[str, Callable[[aiohttp.ClientSession, str], Awaitable[str]]] = {
                    "telegram": self.telegram_outage,
                    "disconnects": self.disconnects,
                    "key-revoked": self.key_revoked,
                    "poison": self.poison,
                    "broker-restart": self.broker_restart,
                }
                for fault in faults:
                    kind, _, target = fault.partition(":")
                    act = self.kill if kind == "kill" else actions[kind]
                    began = time.monotonic()
                    dead0 = await self.dead_letters() if kind == "poison" else 0
                    what = await act(http, target)
                    self.tally.faults += 1
                    ok = await self.recovered(http, fault, time.monotonic())
                    took = time.monotonic() - began
                    if kind == "poison":
                        dead = await self.new_dead_letters(dead0)
                        what += f" ({dead} dead-lettered within seconds)"
                    self.say(
                        f"fault {self.tally.faults}: {what}: "
                        f"{'recovered' if ok else 'HUNG'} in {took:.1f} s"
                    )
                    await asyncio.sleep(self.args.gap)
                summary = await self._drain()
        finally:
            self.paused = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for name in reversed(SERVICES):
                await asyncio.to_thread(self.procs[name].stop)
            await self.telegram.stop()
        return summary, self.tally.faults

    async def _wait(self, what: str, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + self.args.startup
        while time.monotonic() < deadline:
            ready = [await self._ready(http, n) for n in SERVICES]
            if all(ready) and self.telegram.received:
                return
            await asyncio.sleep(0.5)
        tails = "\n".join(f"----- {n}\n{p.output(15)}" for n, p in self.procs.items())
        raise RuntimeError(f"timed out waiting for {what}\n{tails}")

    async def _collect(self) -> Summary:
        alerts: list[RiskAlertChanged] = []
        for value in await _read_all(self.kafka, ALERTS):
            with contextlib.suppress(ValidationError, ValueError):
                alert = ALERTS.decode(value)
                if isinstance(alert, RiskAlertChanged):
                    alerts.append(alert)
        log = self.tmp / "delivered.jsonl"
        lines: list[dict[str, Any]] = []
        if log.exists():
            for raw in log.read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError):
                    doc = orjson.loads(raw)
                    if isinstance(doc, dict):
                        lines.append(doc)
        accepted = [(r.message_id, r.payload.get("text", "")) for r in self.telegram.received]
        self.raised = Counter(
            a.account
            for a in {a.event_id: a for a in alerts}.values()
            if a.transition == AlertTransition.RAISED and a.rule.startswith("net_exposure")
        )
        return summarize(alerts, accepted, lines)

    async def _drain(self) -> Summary:
        """Until every expected transition is on Telegram, or the drain deadline."""
        deadline = time.monotonic() + self.args.drain
        self.say(f"faults done; draining (up to {self.args.drain:.0f} s)")
        while True:
            summary = await self._collect()
            if summary.lost == 0 or time.monotonic() > deadline:
                return summary
            await asyncio.sleep(5)


def report(summary: Summary, tally: Tally) -> None:
    if tally.restarts:
        restarts = ", ".join(f"{n} {k}" for k, n in sorted(tally.restarts.items()))
        print(f"restarts by the supervisor: {restarts}")
    if summary.other:
        print(f"other accepted messages (no alert transition, e.g. monitoring): {summary.other}")
    for event_id in summary.lost_ids[:10]:
        print(f"lost: event {event_id}")
    for hang in tally.hung:
        print(f"hung: {hang}")
    print(summary.line(tally.faults, len(tally.hung)), flush=True)


async def main_async(args: argparse.Namespace) -> int:
    faults = [f for f in args.faults.split(",") if f]
    broker = local_broker()
    if "broker-restart" in faults and broker.kind != "apache":
        faults.remove("broker-restart")
        print(f"broker-restart skipped: {broker.kind} cannot restart on its data")
    broker.start()
    print(f"{broker.banner()}, fresh for this run", flush=True)
    try:
        kafka = fresh_namespace(broker.kafka_settings(), "chaos")
        await ensure_topics(kafka, ALL_TOPICS)
        with TemporaryDirectory(prefix="chaos-") as name:
            chaos = Chaos(broker, kafka, Path(name), args)
            summary, _ = await chaos.run(faults)
            opened = breaches_opened(Path(name) / "frames.jsonl")
            per = ", ".join(
                f"{acc} {opened[acc]}/{chaos.raised[acc]}" for acc in chaos.plan.account_names()
            )
            print(
                f"simulator ground truth: {sum(opened.values())} breaches opened (frames log), "
                f"{sum(chaos.raised.values())} net-exposure alerts raised (per account {per}); "
                "informational: a breach that opens and closes while a link is down, or that "
                "straddles a simulator restart, is no separate alert"
            )
            report(summary, chaos.tally)
            if args.keep_logs:
                for proc in chaos.procs.values():
                    target = Path(args.keep_logs) / proc.log_path.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(proc.log_path.read_bytes())
    finally:
        broker.stop()
    bad = summary.lost or summary.duplicated or chaos.tally.hung
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--faults", default=",".join(ALL_FAULTS), help="comma-separated, in order")
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0, help="frames/s, all accounts")
    parser.add_argument("--cycle", type=int, default=20, help="s between an account's breaches")
    parser.add_argument("--outage", type=float, default=60.0, help="s Telegram is down")
    parser.add_argument("--revoked", type=float, default=15.0, help="s the key is refused")
    parser.add_argument("--recover", type=float, default=90.0, help="s to come back per fault")
    parser.add_argument("--gap", type=float, default=3.0, help="s between faults")
    parser.add_argument("--startup", type=float, default=180.0)
    parser.add_argument("--drain", type=float, default=150.0, help="s to deliver the backlog")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="SERVICE:VARIABLE=VALUE",
        help="override a service's setting (repeatable), e.g. to see a fault bite",
    )
    parser.add_argument("--keep-logs", default="", help="copy the service logs to this folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
