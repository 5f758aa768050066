"""``python -m ingestor`` as a real process: config errors, then a full run and a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from riskwatch_common.broker import free_port
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import wait_until

StartSim = Any
H = Any


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_accounts_file_exits_2_naming_account_and_field(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n  - {name: main, group: g, account_type: unified, position_mode: sideways,"
        " environment: mainnet, credentials: {api_key_env: K, api_secret_env: S}}\n"
    )

    done = run(["--group", "g"], {"INGESTOR_ACCOUNTS_FILE": str(path)})

    assert done.returncode == 2
    assert "account 'main' (accounts[0]): field 'position_mode' is 'sideways'" in done.stderr


def test_missing_group_exits_2_naming_the_variable(tmp_path: Path) -> None:
    done = run([], {"INGESTOR_ACCOUNTS_FILE": str(tmp_path / "x.yaml"), "INGESTOR_GROUP": ""})

    assert done.returncode == 2
    assert "INGESTOR_GROUP" in done.stderr


@pytest.mark.integration
async def test_process_streams_then_stops_cleanly_on_sigterm(
    kafka: KafkaSettings, start_sim: StartSim, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    path, creds = sim.accounts_yaml(tmp_path / "a.yaml", ["main", "sub_trading"])
    port = free_port()
    env = {
        **os.environ,
        **creds,
        "INGESTOR_ACCOUNTS_FILE": str(path),
        "INGESTOR_HTTP_PORT": str(port),
        **kafka.as_env(),
        "LOG_FORMAT": "console",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingestor", "--group", "g",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as client:

            async def ready() -> bool:
                try:
                    async with client.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, timeout=30, message="/readyz 200")
        assert len(sim.private_connections("main")) == 1
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""

    assert code == 0, stderr[-2000:]
    assert "sim-main-secret" not in stderr  # secrets never reach the log
    await wait_until(lambda: not sim.private_connections("main"), message="links closed")
    folded = await h.read_folded(kafka, min_records=4)
    assert {s.account for s in folded.statuses} == {"main", "sub_trading"}


def test_bad_variable_and_bad_accounts_file_are_reported_together_on_one_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n  - {name: portfolio, group: g, account_type: unified,"
        " position_mode: one_way, environment: mainnet,"
        " credentials: {api_key_env: K, api_secret_env: S}}\n"
    )

    done = run(
        ["--group", "g"],
        {"INGESTOR_ACCOUNTS_FILE": str(path), "LOG_LEVEL": "LOUD", "INGESTOR_QUEUE_SIZE": "0"},
    )

    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "LOG_LEVEL is 'LOUD'" in line
    assert "INGESTOR_QUEUE_SIZE" in line
    assert "field 'name' is reserved" in line


@pytest.mark.integration
async def test_signature_error_echoing_the_key_reaches_no_endpoint_log_or_metric(
    kafka: KafkaSettings, start_sim: StartSim, tmp_path: Path
) -> None:
    # Bybit's 10004 text echoes the signed string, API key included (the sim's sign_fail).
    sim = await start_sim("sample_portfolio.yaml")
    path, creds = sim.accounts_yaml(tmp_path / "a.yaml", ["main"])
    secrets = [v for v in creds.values() if len(v) >= 6]
    assert secrets
    await sim.fault(kind="sign_fail", account="main", count=1000)
    port = free_port()
    env = {
        **os.environ,
        **creds,
        "INGESTOR_ACCOUNTS_FILE": str(path),
        "INGESTOR_HTTP_PORT": str(port),
        **kafka.as_env(),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingestor", "--group", "g",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    bodies: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as client:

            async def get(route: str) -> str:
                async with client.get(f"http://127.0.0.1:{port}{route}") as resp:
                    return await resp.text()

            async def refused() -> bool:
                try:
                    return "error sign!" in await get("/accounts")
                except aiohttp.ClientError:
                    return False

            await wait_until(refused, timeout=30, message="10004 shown on /accounts")
            for route in ("/healthz", "/readyz", "/accounts", "/metrics"):
                bodies[route] = await get(route)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    bodies["log"] = (await proc.stderr.read()).decode() if proc.stderr else ""

    assert "auth_failed" in bodies["/readyz"]
    for where, text in bodies.items():
        for secret in secrets:
            assert secret not in text, f"a test secret leaked into {where}"
