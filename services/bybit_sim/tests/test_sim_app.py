"""The composition root: serve() listens, reports health, and stops on cancel."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import aiohttp
import pytest

from bybit_sim.app import serve
from bybit_sim.clock import SystemClock
from bybit_sim.server import SimOptions
from riskwatch_common.runtime import Health

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "sample_portfolio.yaml"
DEADLINE_S = 5.0


async def until_ready(health: Health) -> None:
    """Poll with a deadline: an empty Health is trivially ready, so wait for our checks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not (health.ready and "bybit_api" in health.report()["checks"]):
        assert loop.time() < deadline, health.report()
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_listens_marks_health_ready_and_stops_on_cancel() -> None:
    port = free_port()
    health = Health()
    task = asyncio.create_task(
        serve(SCENARIO, host="127.0.0.1", port=port, clock=SystemClock(), health=health)
    )
    await until_ready(health)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/v5/market/time") as resp,
    ):
        body = await resp.json()

    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert body["retCode"] == 0
    assert set(health.report()["checks"]) == {"bybit_api", "scenario_runner"}
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass


async def test_serve_with_runner_disabled_reports_it_as_ready() -> None:
    port = free_port()
    health = Health()
    task = asyncio.create_task(
        serve(
            SCENARIO,
            host="127.0.0.1",
            port=port,
            options=SimOptions(run_scenario=False),
            health=health,
        )
    )
    await until_ready(health)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert health.report()["checks"]["scenario_runner"]["detail"] == "disabled"
