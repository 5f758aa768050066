"""A refused API key end to end, as separate processes on a real broker:
simulator (auth_fail fault) -> ingestor (AccountStatusChanged auth_failed, then connected)
-> risk processor (account_link CRITICAL, then resolved) -> notifier (the file channel).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from riskwatch_common.broker import free_port
from riskwatch_common.contracts import AlertTransition, RiskAlertChanged, Severity
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import ServiceProcess, read_topic, wait_until
from riskwatch_common.topics import ALERTS

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent

ACCOUNTS_YAML = """
simulator:
  rest_url: http://127.0.0.1:{port}
  ws_private_url: ws://127.0.0.1:{port}/v5/private
  ws_public_url: ws://127.0.0.1:{port}/v5/public/linear
accounts:
  - name: main
    group: e2e
    account_type: unified
    position_mode: one_way
    environment: simulator
    credentials:
      api_key_env: E2E_MAIN_KEY
      api_secret_env: E2E_MAIN_SECRET
"""


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture
def chain(kafka: KafkaSettings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    sim_port = free_port()
    ports = {name: free_port() for name in ("sim", "ingestor", "risk", "notifier")}
    accounts_file = tmp_path / "accounts.yaml"
    accounts_file.write_text(ACCOUNTS_YAML.format(port=sim_port))
    common = {**kafka.as_env(), "LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1"}
    alerts_file = tmp_path / "alerts.jsonl"
    envs = {
        "bybit_sim": {
            "BYBIT_SIM_SCENARIO": str(HERE / "scenarios" / "pipeline.yaml"),
            "BYBIT_SIM_PORT": str(sim_port),
            "BYBIT_SIM_HTTP_PORT": str(ports["sim"]),
        },
        "ingestor": {
            "E2E_MAIN_KEY": "sim-main-key",
            "E2E_MAIN_SECRET": "sim-main-secret",
            "INGESTOR_ACCOUNTS_FILE": str(accounts_file),
            "INGESTOR_GROUP": "e2e",
            "INGESTOR_HTTP_PORT": str(ports["ingestor"]),
            # A refused key is retried after this; the default is 5 minutes.
            "INGESTOR_AUTH_RETRY_S": "3",
        },
        "risk_processor": {
            "RISK_PROCESSOR_HTTP_PORT": str(ports["risk"]),
            "RISK_PROCESSOR_DATA_DIR": str(tmp_path / "risk-processor"),
        },
        "notifier": {
            "NOTIFIER_HTTP_PORT": str(ports["notifier"]),
            "NOTIFIER_ALERTS_FILE": str(alerts_file),
            "NOTIFIER_DELIVERY_LOG": str(tmp_path / "delivered.jsonl"),
        },
    }
    order = ("risk_processor", "notifier", "ingestor", "bybit_sim")
    procs = {
        module: ServiceProcess(module, {**common, **envs[module]}, tmp_path / f"{module}.log")
        for module in order
    }
    try:
        for module in order:
            procs[module].start()
        yield {"procs": procs, "ports": ports, "sim_port": sim_port, "alerts_file": alerts_file}
    finally:
        for module in reversed(order):
            procs[module].stop()


async def test_a_refused_key_pages_critical_and_resolves_when_the_key_is_accepted_again(
    chain: dict[str, Any], kafka: KafkaSettings
) -> None:
    procs, ports = chain["procs"], chain["ports"]
    sim = f"http://127.0.0.1:{chain['sim_port']}"  # the exchange port serves /sim/*
    risk = f"http://127.0.0.1:{ports['risk']}"

    def alive() -> None:
        for name, proc in procs.items():
            assert proc.running, f"{name} exited:\n{proc.output()}"

    async def link_of_main() -> str | None:
        alive()
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{risk}/v1/accounts") as r:
                body = orjson.loads(await r.read())
        except aiohttp.ClientError:
            return None
        row = next((row for row in body.get("accounts", ()) if row["account"] == "main"), None)
        return None if row is None else str(row["link"]["status"])

    async def link_alerts() -> list[RiskAlertChanged]:
        records = await read_topic(kafka, ALERTS, timeout=0.5)
        found = [RiskAlertChanged.model_validate_json(v) for _, v in records]
        return [a for a in found if a.account == "main" and a.rule == "account_link"]

    try:
        await wait_until(
            lambda: _is(link_of_main(), "ok"), timeout=90, message="main streams, link ok"
        )
        assert await link_alerts() == []
        # The next two websocket auths are refused; then the link drops.
        async with aiohttp.ClientSession() as http:
            for fault in (
                {"kind": "auth_fail", "account": "main", "count": 2},
                {"kind": "disconnect", "account": "main"},
            ):
                async with http.post(f"{sim}/sim/fault", data=orjson.dumps(fault)) as r:
                    assert r.status == 200, await r.text()

        async def raised_and_resolved() -> list[RiskAlertChanged] | None:
            alive()
            got = await link_alerts()
            return got if len(got) >= 2 else None

        raised, resolved = await wait_until(
            raised_and_resolved, timeout=90, message="account_link raised and resolved"
        )
    except AssertionError:
        for name, proc in procs.items():
            print(f"----- {name}\n{proc.output(40)}")
        raise
    assert raised.transition is AlertTransition.RAISED
    assert raised.severity is Severity.CRITICAL
    assert "Bybit refused the API key of main" in raised.reason
    assert "positions are not watched" in raised.reason
    assert raised.action is not None
    assert raised.action.kind.value == "check_link"
    # The third auth is accepted: `connected` resolves it, with no other event needed.
    assert resolved.transition is AlertTransition.RESOLVED
    assert resolved.alert_id == raised.alert_id
    assert await _is(link_of_main(), "ok")

    # The trader's channel got both (the notifier's file channel).
    async def delivered() -> list[dict[str, Any]] | None:
        docs = [
            d
            for d in jsonl(chain["alerts_file"])
            if d.get("kind") == "alert" and d.get("rule") == "account_link"
        ]
        return docs if len(docs) >= 2 else None

    docs = await wait_until(delivered, timeout=30, message="account_link delivered")
    assert [d["transition"] for d in docs[:2]] == ["raised", "resolved"]


async def _is(value: Any, expected: str) -> bool:
    return await value == expected
