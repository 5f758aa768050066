"""The whole chain as separate processes on a real broker:
simulator -> ingestor -> risk processor -> AI analyst -> notifier.

The simulator opens the sample portfolio of docs/product.md by fills on a market that does not move,
so the delivered alert's numbers are exact, and its correlation id must be the id of the
simulator frame whose fill caused it.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from riskwatch_common.broker import free_port
from riskwatch_common.contracts import AnalysisCompleted
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import ServiceProcess, read_topic, wait_until
from riskwatch_common.topics import ANALYSES

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NET_LIMIT = Decimal(40000)
# marks 70,000 / 3,520 / 176.5 / 584 (scenarios/pipeline.yaml)
EXPECTED_NET = Decimal("0.5") * 70000 + 5 * Decimal(3520) - 100 * Decimal("176.5") + 20 * 584

ACCOUNTS_YAML = """
simulator:
  rest_url: http://127.0.0.1:{port}
  ws_private_url: ws://127.0.0.1:{port}/v5/private
  ws_public_url: ws://127.0.0.1:{port}/v5/public/linear
accounts:
{accounts}
"""
ACCOUNT = """  - name: {name}
    group: e2e
    account_type: unified
    position_mode: one_way
    environment: simulator
    credentials:
      api_key_env: E2E_{upper}_KEY
      api_secret_env: E2E_{upper}_SECRET
"""


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture
def pipeline(kafka: KafkaSettings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    sim_port = free_port()
    ports = {name: free_port() for name in ("sim", "ingestor", "risk", "analyst", "notifier")}
    names = ("main", "sub_trading", "sub_hedge")
    accounts_file = tmp_path / "accounts.yaml"
    accounts_file.write_text(
        ACCOUNTS_YAML.format(
            port=sim_port,
            accounts="".join(ACCOUNT.format(name=n, upper=n.upper()) for n in names),
        )
    )
    common = {
        **kafka.as_env(),
        "LOG_FORMAT": "console",
        "PYTHONUNBUFFERED": "1",
    }
    keys = {}
    for n in names:
        keys[f"E2E_{n.upper()}_KEY"] = f"sim-{n.replace('_', '-')}-key"
        keys[f"E2E_{n.upper()}_SECRET"] = f"sim-{n.replace('_', '-')}-secret"
    paths = {
        "frames": tmp_path / "sim-frames.jsonl",
        "alerts": tmp_path / "alerts.jsonl",
    }
    envs = {
        "bybit_sim": {
            "BYBIT_SIM_SCENARIO": str(HERE / "scenarios" / "pipeline.yaml"),
            "BYBIT_SIM_PORT": str(sim_port),
            "BYBIT_SIM_HTTP_PORT": str(ports["sim"]),
            "BYBIT_SIM_FRAMES_LOG": str(paths["frames"]),
        },
        "ingestor": {
            **keys,
            "INGESTOR_ACCOUNTS_FILE": str(accounts_file),
            "INGESTOR_GROUP": "e2e",
            "INGESTOR_HTTP_PORT": str(ports["ingestor"]),
        },
        "risk_processor": {
            "RISK_PROCESSOR_HTTP_PORT": str(ports["risk"]),
            "RISK_PROCESSOR_NET_EXPOSURE_LIMIT_USD": str(NET_LIMIT),
            "RISK_PROCESSOR_DATA_DIR": str(tmp_path / "risk-processor"),
        },
        "ai_analyst": {"AI_ANALYST_HTTP_PORT": str(ports["analyst"])},
        "notifier": {
            "NOTIFIER_HTTP_PORT": str(ports["notifier"]),
            "NOTIFIER_ALERTS_FILE": str(paths["alerts"]),
            "NOTIFIER_DELIVERY_LOG": str(tmp_path / "delivered.jsonl"),
        },
    }
    # consumers first, so nothing depends on how early the simulator starts its timeline
    order = ("risk_processor", "ai_analyst", "notifier", "ingestor", "bybit_sim")
    procs = {
        module: ServiceProcess(module, {**common, **envs[module]}, tmp_path / f"{module}.log")
        for module in order
    }
    try:
        for module in order:
            procs[module].start()
        yield {"procs": procs, "ports": ports, "paths": paths}
    finally:
        for module in reversed(order):
            procs[module].stop()


async def _ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as resp,
        ):
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def test_simulated_fill_becomes_a_delivered_alert_with_exact_numbers(
    pipeline: dict[str, Any], kafka: KafkaSettings
) -> None:
    procs, ports, paths = pipeline["procs"], pipeline["ports"], pipeline["paths"]

    def alive() -> None:
        for name, proc in procs.items():
            assert proc.running, f"{name} exited:\n{proc.output()}"

    async def portfolio_alert() -> dict[str, Any] | None:
        alive()
        for doc in jsonl(paths["alerts"]):
            if (
                doc.get("kind") == "alert"
                and doc.get("account") == "portfolio"
                and doc.get("rule") == "net_exposure_usd"
            ):
                return doc
        return None

    try:
        alert = await wait_until(portfolio_alert, timeout=90, message="portfolio alert")
        for port in ports.values():
            assert await _ready(port)
    except AssertionError:
        for name, proc in procs.items():
            print(f"----- {name}\n{proc.output(40)}")
        raise

    # the numbers our code computed, exactly
    numbers = {k: Decimal(v) for k, v in alert["numbers"].items()}
    assert numbers["value"] == EXPECTED_NET == Decimal("46630")
    assert numbers["threshold"] == NET_LIMIT
    assert alert["transition"] == "raised"

    # one correlation id from the simulator's frame to the notification: a frame of the
    # BTCUSDT fill that took the portfolio over the limit (the fill pushes execution, order,
    # position and wallet frames at one exchange time; the alert names the last one handled)
    frames = jsonl(paths["frames"])
    frame = next((f for f in frames if f["id"] == alert["correlation_id"]), None)
    assert frame is not None, f"correlation id {alert['correlation_id']} is no simulator frame"
    assert frame["account"] == "main"
    btc_position = [
        f
        for f in frames
        if f["account"] == "main"
        and f["topic"] == "position"
        and f["frame"]["data"][0]["symbol"] == "BTCUSDT"
    ]
    # Bybit pushes a position frame when the order is placed too; the fill is the last one
    assert btc_position[-1]["frame"]["data"][0]["size"] == "0.5"
    # the fill's frames carry its exchange time, give or take the millisecond they straddle
    assert abs(btc_position[-1]["time"] - frame["time"]) <= 2

    # the AI commentary follows the alert (deterministic: no AI_ANALYST_API_KEY here), after
    # the analyst's coalescing window: poll for it rather than read what is there once
    async def analysis_of_alert() -> AnalysisCompleted | None:
        records = await read_topic(kafka, ANALYSES, min_records=1, timeout=5)
        analyses = [AnalysisCompleted.model_validate_json(v) for _, v in records]
        return next((a for a in analyses if a.alert_id == alert["alert_id"]), None)

    analysis = await wait_until(analysis_of_alert, timeout=60, message="analysis of the alert")
    assert analysis.mode.value == "deterministic"
    assert analysis.correlation_id == alert["correlation_id"]
    await wait_until(
        lambda: any(
            d.get("kind") == "analysis" and d.get("alert_id") == alert["alert_id"]
            for d in jsonl(paths["alerts"])
        ),
        timeout=30,
        message="analysis delivered after the alert",
    )

    # no Bybit secret in any service's log
    secrets = [v for k, v in procs["ingestor"].env.items() if k.endswith("_SECRET")]
    assert len(secrets) == 3
    for name, proc in procs.items():
        text = proc.log_path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, name
