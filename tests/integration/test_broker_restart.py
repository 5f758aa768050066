"""The Kafka broker restarts mid-stream while the whole pipeline runs.

simulator -> ingestor -> risk processor -> notifier, as separate processes, on a broker of
this test's own (the session's broker is shared by every test). Accounts breach their net
exposure limit before the outage, during it (the exchange keeps trading while Kafka is
away) and after it. The broker stops, stays down 10 s, and starts again on the same data
dir. Expected: no service exits, every service's /readyz goes red while the broker is down
and green after, every alert transition reaches the notifier's file channel exactly once,
and the alerts topic holds no transition twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from riskwatch_common.broker import ApacheKafkaBroker, free_port
from riskwatch_common.contracts import RiskAlertChanged
from riskwatch_common.kafka import ensure_topics
from riskwatch_common.testkit import ServiceProcess, fresh_namespace, read_topic, wait_until
from riskwatch_common.topics import ALERTS, ALL_TOPICS

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
NET_LIMIT = Decimal(40000)
BEFORE, DURING, AFTER = ("acc_before",), ("acc_during1", "acc_during2"), ("acc_after",)
ACCOUNTS = (*BEFORE, *DURING, *AFTER)
SERVICES = ("risk_processor", "notifier", "ingestor")

SCENARIO = """
name: broker-restart
description: static market; the test trades through the admin API
tick_ms: 200
loop: false
duration_s: 3600
symbols:
- symbol: ETHUSDT
  tick_size: 0.01
  tiers:
  - {{id: 1, riskLimitValue: '10000000', maintenanceMargin: '0.005', initialMargin: '0.01',
      maxLeverage: '100.00', mmDeduction: '', isLowestRisk: 1}}
  price: {{start: 3500}}
accounts:
{accounts}
timeline: []
"""
SIM_ACCOUNT = """- name: {name}
  api_key: key-{name}
  api_secret: secret-{name}
  position_mode: one_way
  wallet_balance: 100000
  positions: []
  leverage: {{ETHUSDT: 5}}
"""
ACCOUNTS_YAML = """
simulator:
  rest_url: http://127.0.0.1:{port}
  ws_private_url: ws://127.0.0.1:{port}/v5/private
  ws_public_url: ws://127.0.0.1:{port}/v5/public/linear
accounts:
{accounts}
"""
INGEST_ACCOUNT = """  - name: {name}
    group: restart
    account_type: unified
    position_mode: one_way
    environment: simulator
    credentials:
      api_key_env: K_{upper}
      api_secret_env: S_{upper}
"""


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def _ready(http: aiohttp.ClientSession, port: int) -> bool | None:
    """True/False from /readyz; None when nothing answers (the process is gone)."""
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return None


@pytest.fixture
async def broker(tmp_path: Path, broker_kind: str) -> AsyncIterator[ApacheKafkaBroker]:
    if broker_kind not in ("apache", "external"):
        pytest.skip(
            f"the suite runs on {broker_kind}: this test restarts an Apache Kafka of its own"
        )
    own = ApacheKafkaBroker(data_dir=tmp_path / "kafka")
    await asyncio.to_thread(own.start)
    try:
        yield own
    finally:
        await asyncio.to_thread(own.stop)


async def test_broker_restart_mid_stream_loses_and_duplicates_no_alert(
    broker: ApacheKafkaBroker, tmp_path: Path
) -> None:
    kafka = broker.kafka_settings(topic_namespace=fresh_namespace())
    await ensure_topics(kafka, ALL_TOPICS)

    sim_port, sim_http = free_port(), free_port()
    ports = {name: free_port() for name in SERVICES}
    (tmp_path / "scenario.yaml").write_text(
        SCENARIO.format(accounts="".join(SIM_ACCOUNT.format(name=n) for n in ACCOUNTS))
    )
    (tmp_path / "accounts.yaml").write_text(
        ACCOUNTS_YAML.format(
            port=sim_port,
            accounts="".join(INGEST_ACCOUNT.format(name=n, upper=n.upper()) for n in ACCOUNTS),
        )
    )
    keys = {f"K_{n.upper()}": f"key-{n}" for n in ACCOUNTS}
    keys |= {f"S_{n.upper()}": f"secret-{n}" for n in ACCOUNTS}
    alerts_file = tmp_path / "alerts.jsonl"
    common = {**kafka.as_env(), "LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1"}
    envs = {
        "bybit_sim": {
            "BYBIT_SIM_SCENARIO": str(tmp_path / "scenario.yaml"),
            "BYBIT_SIM_PORT": str(sim_port),
            "BYBIT_SIM_HTTP_PORT": str(sim_http),
        },
        "ingestor": {
            **keys,
            "INGESTOR_ACCOUNTS_FILE": str(tmp_path / "accounts.yaml"),
            "INGESTOR_GROUP": "restart",
            "INGESTOR_HTTP_PORT": str(ports["ingestor"]),
        },
        "risk_processor": {
            "RISK_PROCESSOR_HTTP_PORT": str(ports["risk_processor"]),
            "RISK_PROCESSOR_NET_EXPOSURE_LIMIT_USD": str(NET_LIMIT),
            "RISK_PROCESSOR_DATA_DIR": str(tmp_path / "risk-processor"),
        },
        "notifier": {
            "NOTIFIER_HTTP_PORT": str(ports["notifier"]),
            "NOTIFIER_ALERTS_FILE": str(alerts_file),
            "NOTIFIER_DELIVERY_LOG": str(tmp_path / "delivered.jsonl"),
        },
    }
    order = ("bybit_sim", *SERVICES)
    procs = {m: ServiceProcess(m, {**common, **envs[m]}, tmp_path / f"{m}.log") for m in order}

    def alive() -> None:
        for name, proc in procs.items():
            assert proc.running, f"{name} exited:\n{proc.output()}"

    async def trade(http: aiohttp.ClientSession, account: str) -> None:
        """Open 20 ETH long (70,000 USD, over the 40,000 limit) by a fill."""
        base = f"http://127.0.0.1:{sim_port}/sim/action"
        link = f"open-{account}"
        for body in (
            {"action": "place_order", "account": account, "symbol": "ETHUSDT",
             "side": "Buy", "qty": "20", "price": "3500", "order_link_id": link},
            {"action": "fill_order", "account": account, "order_link_id": link},
        ):  # fmt: skip
            async with http.post(base, data=orjson.dumps(body)) as resp:
                assert resp.status == 200, await resp.text()

    def delivered(account: str) -> list[dict[str, Any]]:
        return [
            d
            for d in _jsonl(alerts_file)
            if d.get("kind") == "alert"
            and d.get("account") == account
            and d.get("rule") == "net_exposure_usd"
        ]

    async def all_ready(http: aiohttp.ClientSession) -> bool:
        alive()
        return all([await _ready(http, ports[m]) for m in SERVICES])

    try:
        for m in order:
            procs[m].start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            await wait_until(lambda: all_ready(http), timeout=90, message="all services ready")
            await trade(http, BEFORE[0])
            await wait_until(
                lambda: alive() or delivered(BEFORE[0]), timeout=60, message="alert before"
            )

            await asyncio.to_thread(broker.halt)
            down_at = asyncio.get_running_loop().time()

            async def none_ready() -> bool:
                alive()
                return not any([await _ready(http, ports[m]) for m in SERVICES])

            await wait_until(none_ready, timeout=15, message="readiness red while down")
            for account in DURING:
                await trade(http, account)
            left = 10 - (asyncio.get_running_loop().time() - down_at)
            await asyncio.sleep(max(0.0, left))  # the outage itself: 10 s down
            alive()
            await asyncio.to_thread(broker.resume)

            await wait_until(lambda: all_ready(http), timeout=90, message="ready again")
            await trade(http, AFTER[0])

            async def every_alert_delivered() -> bool:
                alive()
                return all(delivered(a) for a in ACCOUNTS)

            await wait_until(every_alert_delivered, timeout=90, message="every alert delivered")
            alive()
    except AssertionError:
        for name, proc in procs.items():
            print(f"----- {name}\n{proc.output(40)}")
        raise
    finally:
        for m in reversed(order):
            procs[m].stop()

    # exactly once: on the topic, and in what reached the channel
    records = await read_topic(kafka, ALERTS, min_records=len(ACCOUNTS), timeout=30)
    alerts = [RiskAlertChanged.model_validate_json(v) for _, v in records]
    # a transition's event id is derived from (alert, transition, sequence): a record
    # repeated by a retried send or a replay after the outage shows as a repeated id
    on_topic = Counter(a.event_id for a in alerts)
    assert set(on_topic.values()) == {1}, on_topic.most_common(3)
    files = Counter(d["event_id"] for d in _jsonl(alerts_file) if d.get("kind") == "alert")
    assert set(files.values()) == {1}, files.most_common(3)
    assert {a.event_id for a in alerts} == set(files), "an alert on the topic was not delivered"
    for account in ACCOUNTS:
        assert [d["transition"] for d in delivered(account)] == ["raised"], account
