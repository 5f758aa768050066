"""``riskwatch demo``: the whole product on the simulator, on one machine, no keys.

Starts the local broker (``RISKWATCH_BROKER``: Apache Kafka by default), creates the
topics, then runs the simulator and the four services as separate processes under
honcho. It follows the notifier's alert file and, on exit, traces one delivered alert
back to the simulator frame that caused it (same correlation id). With ``DEMO_SECONDS=N``
it stops by itself after N seconds and exits 0 only if such an alert was delivered.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from riskwatch_common.broker import free_port, local_broker
from riskwatch_common.kafka import ensure_topics
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.topics import ALL_TOPICS

REPO = Path(__file__).resolve().parents[3]


def demo_env(var: Path, kafka: KafkaSettings) -> dict[str, str]:
    """Environment for the demo processes; anything already set in the shell wins."""
    defaults = {
        **kafka.as_env(),
        "LOG_FORMAT": "console",
        "PYTHONUNBUFFERED": "1",
        "BYBIT_SIM_SCENARIO": str(REPO / "services/bybit_sim/scenarios/drift_to_liquidation.yaml"),
        "BYBIT_SIM_FRAMES_LOG": str(var / "sim-frames.jsonl"),
        "INGESTOR_ACCOUNTS_FILE": str(REPO / "services/ingestor/config/accounts.demo.yaml"),
        "INGESTOR_GROUP": "sim",
        "NOTIFIER_ALERTS_FILE": str(var / "alerts.jsonl"),
        # per run, like the broker: event ids repeat across runs on a fresh broker, so a
        # delivery log kept from an earlier run would suppress this run's alerts
        "NOTIFIER_DELIVERY_LOG": str(var / "notifier-delivered.jsonl"),
        "RISK_PROCESSOR_DATA_DIR": str(var / "risk-processor"),
    }
    # the simulator's public test keys, which the accounts file names by variable
    for line in (REPO / "services/ingestor/config/sim.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            defaults[key] = value
    env = dict(os.environ)
    for key, value in defaults.items():
        env.setdefault(key, value)
    return env


@dataclass
class AlertFollower:
    """Tails the notifier's JSON-lines file and prints each delivered alert."""

    path: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        offset = 0
        while not self._stop.wait(0.5):
            if not self.path.exists():
                continue
            with self.path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            end = chunk.rfind(b"\n") + 1
            offset += end
            for raw in chunk[:end].splitlines():
                doc = orjson.loads(raw)
                self.lines.append(doc)
                if doc.get("kind") == "alert":
                    print(
                        f"\n>>> ALERT {doc.get('transition')} {doc.get('severity')} "
                        f"{doc.get('account')} {doc.get('rule')}: {doc.get('reason')}\n",
                        flush=True,
                    )

    def stop(self) -> None:
        self._stop.set()


def _frames_by_id(path: Path) -> dict[str, dict[str, Any]]:
    frames: dict[str, dict[str, Any]] = {}
    if path.exists():
        for raw in path.read_bytes().splitlines():
            doc = orjson.loads(raw)
            frames[str(doc.get("id"))] = doc
    return frames


def trace(alerts: list[dict[str, Any]], frames_log: Path) -> dict[str, Any] | None:
    """The first delivered alert whose correlation id is a simulator frame id, with it."""
    frames = _frames_by_id(frames_log)
    for doc in alerts:
        if doc.get("kind") == "alert" and doc.get("correlation_id") in frames:
            return {"alert": doc, "frame": frames[doc["correlation_id"]]}
    return None


def _stop_honcho(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # honcho stops its children in order
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_demo() -> int:
    seconds = float(os.environ.get("DEMO_SECONDS", "0") or 0)
    var = REPO / "var" / "demo"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    port = int(os.environ.get("DEMO_BROKER_PORT", "0")) or free_port()
    broker = local_broker(port=port, log_path=var / "broker.log")
    broker.start()
    print(broker.banner(), flush=True)
    kafka = broker.kafka_settings()
    env = demo_env(var, kafka)
    asyncio.run(ensure_topics(kafka, ALL_TOPICS))

    follower = AlertFollower(Path(env["NOTIFIER_ALERTS_FILE"]))
    threading.Thread(target=follower.run, daemon=True).start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "honcho", "-f", str(REPO / "Procfile.demo"), "start"],
        cwd=REPO,
        env=env,
        start_new_session=True,
    )
    interrupted = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    signal.signal(signal.SIGTERM, lambda *_: interrupted.set())
    started = time.monotonic()
    try:
        while proc.poll() is None and not interrupted.is_set():
            if seconds and time.monotonic() - started >= seconds:
                break
            time.sleep(0.2)
    finally:
        _stop_honcho(proc)
        follower.stop()
        broker.stop()

    delivered = [d for d in follower.lines if d.get("kind") == "alert"]
    print(
        f"\ndemo stopped after {time.monotonic() - started:.0f}s; "
        f"{len(delivered)} alert notifications delivered",
        flush=True,
    )
    found = trace(delivered, Path(env["BYBIT_SIM_FRAMES_LOG"]))
    if found:
        frame, alert = found["frame"], found["alert"]
        print(
            f"trace: simulator frame {frame.get('id')} ({frame.get('account')} "
            f"{frame.get('topic')}) -> alert {alert.get('alert_id')} "
            f"[{alert.get('rule')}] delivered, correlation_id={alert.get('correlation_id')}",
            flush=True,
        )
    if not seconds:
        return 0
    if found is None:
        print("demo failed: no delivered alert traced to a simulator frame", file=sys.stderr)
        return 1
    return 0
