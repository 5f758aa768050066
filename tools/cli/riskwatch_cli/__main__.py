"""``riskwatch``: the trader's commands over the query API (watch, exposure, alerts,
what-if), going live (init, doctor) and developer commands (broker, schemas, topics, demo)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

from riskwatch_cli import init, messages, monitoring, query, silence
from riskwatch_cli.demo import run_demo
from riskwatch_cli.doctor import doctor
from riskwatch_common.broker import BrokerError, local_broker
from riskwatch_common.kafka import ensure_topics
from riskwatch_common.logs import configure_logging
from riskwatch_common.schemas import drifted, write_schemas
from riskwatch_common.topics import ALL_TOPICS

REPO = Path(__file__).resolve().parents[3]


def _broker(args: argparse.Namespace) -> int:
    configure_logging("broker", "INFO", "console")
    try:
        broker = local_broker(port=args.port, log_path=Path(args.log) if args.log else None)
        broker.start()
    except BrokerError as exc:
        print(f"riskwatch broker: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if not args.no_topics:
            kafka = broker.kafka_settings(
                topic_namespace=os.environ.get("KAFKA_TOPIC_NAMESPACE", "")
            )
            asyncio.run(ensure_topics(kafka, ALL_TOPICS))
        print(broker.banner(), flush=True)
        # what a service started by hand needs to use this broker
        for name, value in {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            **broker.client_env,
        }.items():
            print(f"{name}={value}", flush=True)
        print("Ctrl-C stops it", flush=True)
        stop.wait()
    finally:
        broker.stop()
        print("broker stopped", flush=True)
    return 0


def _schemas(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if args.check:
        problems = drifted(directory)
        if problems:
            print("schemas drifted from contracts: " + ", ".join(problems), file=sys.stderr)
            print("run `make schemas` and commit the result", file=sys.stderr)
            return 1
        print("schemas match the contracts")
        return 0
    for path in write_schemas(directory):
        print(path)
    return 0


def _topics(_: argparse.Namespace) -> int:
    for t in ALL_TOPICS:
        print(
            f"{t.name:32} key={t.key.value:12} partitions={t.partitions} "
            f"cleanup={t.cleanup.value:8} dlq={t.dead_letter or '-'}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="riskwatch")
    sub = parser.add_subparsers(dest="command", required=True)
    query.add_parsers(sub)
    b = sub.add_parser(
        "broker", help="run a local Kafka broker (RISKWATCH_BROKER=apache|tansu|container)"
    )
    b.add_argument("--port", type=int, default=int(os.environ.get("BROKER_PORT", "9092")))
    b.add_argument("--log", help="append the broker's own output to this file")
    b.add_argument("--no-topics", action="store_true", help="do not create registry topics")
    b.set_defaults(func=_broker)
    s = sub.add_parser("schemas", help="generate JSON Schemas of every event")
    s.add_argument("--dir", default=str(REPO / "schemas"))
    s.add_argument("--check", action="store_true", help="fail if the files drifted")
    s.set_defaults(func=_schemas)
    t = sub.add_parser("topics", help="list the topic registry")
    t.set_defaults(func=_topics)
    d = sub.add_parser("demo", help="run broker, simulator and all services (DEMO_SECONDS=N)")
    d.set_defaults(func=lambda _: run_demo())
    init.add_parser(sub)
    messages.add_parser(sub)
    silence.add_parsers(sub)
    mon = sub.add_parser("monitoring", help="write the PrometheusRule from the rules file")
    mon.add_argument("--check", action="store_true", help="fail if it is out of date")
    mon.set_defaults(func=lambda a: monitoring.run(a.check))
    doc = sub.add_parser("doctor", help="check Bybit keys, Telegram, Slack, the LLM and Kafka")
    doc.add_argument("--env-file", type=Path, help="fills variables the environment lacks")
    doc.add_argument("--accounts", type=Path, help="accounts file (else INGESTOR_ACCOUNTS_FILE)")
    doc.set_defaults(func=lambda a: doctor(a.env_file, a.accounts))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
