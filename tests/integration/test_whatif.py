"""The pre-trade what-if on the live state: simulator -> ingestor -> risk processor, each
its own process, then ``POST /v1/what-if`` and ``riskwatch what-if`` reproduce Bob's
example of docs/product.md exactly (scenarios/whatif_bob.yaml)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from riskwatch_common.broker import free_port
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import ServiceProcess, wait_until

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
D = Decimal
TOKEN = "whatif-test-token-0123456789"

ACCOUNTS_YAML = """
simulator:
  rest_url: http://127.0.0.1:{port}
  ws_private_url: ws://127.0.0.1:{port}/v5/private
  ws_public_url: ws://127.0.0.1:{port}/v5/public/linear
accounts:
  - name: bob
    group: whatif
    account_type: unified
    position_mode: one_way
    environment: simulator
    credentials:
      api_key_env: WHATIF_BOB_KEY
      api_secret_env: WHATIF_BOB_SECRET
"""


@pytest.fixture
def live(kafka: KafkaSettings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    sim_port = free_port()
    ports = {name: free_port() for name in ("sim", "ingestor", "risk")}
    accounts_file = tmp_path / "accounts.yaml"
    accounts_file.write_text(ACCOUNTS_YAML.format(port=sim_port))
    common = {**kafka.as_env(), "LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1"}
    envs = {
        "risk_processor": {
            "RISK_PROCESSOR_HTTP_PORT": str(ports["risk"]),
            "RISK_PROCESSOR_DATA_DIR": str(tmp_path / "risk-processor"),
            "RISK_PROCESSOR_QUERY_TOKEN": TOKEN,
        },
        "ingestor": {
            "WHATIF_BOB_KEY": "sim-bob-key",
            "WHATIF_BOB_SECRET": "sim-bob-secret",
            "INGESTOR_ACCOUNTS_FILE": str(accounts_file),
            "INGESTOR_GROUP": "whatif",
            "INGESTOR_HTTP_PORT": str(ports["ingestor"]),
        },
        "bybit_sim": {
            "BYBIT_SIM_SCENARIO": str(HERE / "scenarios" / "whatif_bob.yaml"),
            "BYBIT_SIM_PORT": str(sim_port),
            "BYBIT_SIM_HTTP_PORT": str(ports["sim"]),
        },
    }
    order = ("risk_processor", "bybit_sim", "ingestor")
    procs = {m: ServiceProcess(m, {**common, **envs[m]}, tmp_path / f"{m}.log") for m in order}
    try:
        for m in order:
            procs[m].start()
        yield {"procs": procs, "base": f"http://127.0.0.1:{ports['risk']}"}
    finally:
        for m in reversed(order):
            procs[m].stop()


BOB = {"account": "bob", "symbol": "BTCUSDT", "side": "Buy", "qty": "20", "price": "50000"}


async def _what_if(base: str, doc: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
        http.post(f"{base}/v1/what-if", json=doc) as r,
    ):
        body = await r.read()
        if r.content_type != "application/json":
            raise AssertionError(f"what-if answered {r.status}: {body[:300]!r}")
        return r.status, orjson.loads(body)


def cli(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riskwatch_cli", *args],
        env={**os.environ, "RISKWATCH_API_URL": base, "RISKWATCH_API_TOKEN": TOKEN,
             "COLUMNS": "120"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_what_if_on_the_simulator_reproduces_bobs_90x_example(live: dict[str, Any]) -> None:
    procs, base = live["procs"], live["base"]

    async def answered() -> dict[str, Any] | None:
        for name, proc in procs.items():
            assert proc.running, f"{name} exited:\n{proc.output()}"
        try:
            status, body = await _what_if(base, BOB)
        except aiohttp.ClientError:
            return None
        # until the position, the resting order, the tier table and the mark are all in
        if status != 200 or D(body["effective_value_before"]) != 2_000_000:
            return None
        return body  # type: ignore[no-any-return]

    try:
        at_90 = await wait_until(answered, timeout=90, message="what-if on bob's live state")
    except Exception:
        for name, proc in procs.items():
            print(f"----- {name}\n{proc.output(40)}")
        raise
    assert at_90["leverage"] == "90"
    assert at_90["leverage_source"] == "position"
    assert (at_90["tier_before"]["tier_id"], at_90["tier_after"]["tier_id"]) == (2, 3)
    assert D(at_90["effective_value_after"]) == 3_000_000
    assert D(at_90["leverage_cap"]) == 2_600_000
    assert at_90["rejected"] is True
    assert D(at_90["max_leverage_allowing"]) == 80
    assert D(at_90["cap_at_max_leverage"]) == 3_200_000
    assert D(at_90["account_net_before"]) == 1_000_000
    assert D(at_90["account_net_after"]) == 2_000_000

    status, at_80 = await _what_if(base, {**BOB, "leverage": "80"})
    assert status == 200
    assert at_80["rejected"] is False
    assert D(at_80["leverage_cap"]) == 3_200_000

    # the trader's command says the same, in words
    done = cli(base, "what-if", "--account", "bob", "--symbol", "BTCUSDT", "--side", "Buy",
               "--qty", "20", "--price", "50000")  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    assert "REJECTED at 90x: $3.00M of positions and orders > $2.60M allowed" in done.stdout
    assert "fix: lower leverage to 80x or less (allows $3.20M)" in done.stdout
    watch = cli(base, "watch", "--count", "1")
    print(watch.stdout)
    assert watch.returncode == 0, watch.stderr
    assert "bob" in watch.stdout
