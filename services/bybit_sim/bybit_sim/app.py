"""Composition root: run the simulator's Bybit-facing server until cancelled.

`__main__` (wired by the shared runtime) loads settings, starts the ops server (/healthz,
/readyz, /metrics) with a `Health`, and awaits `serve(...)`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from bybit_sim.clock import Clock, SystemClock
from bybit_sim.scenario import Scenario, load_scenario
from bybit_sim.server import SimOptions, build_app
from riskwatch_common.runtime import Health

log = logging.getLogger(__name__)


async def serve(
    scenario: Scenario | str | Path,
    *,
    host: str,
    port: int,
    options: SimOptions | None = None,
    clock: Clock | None = None,
    health: Health | None = None,
) -> None:
    """Serve Bybit v5 REST + WS (and /sim admin) on host:port until cancelled.

    `health` gets "bybit_api" once the port listens and "scenario_runner" from the runner.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if health is not None:
        health.expect("bybit_api", "scenario_runner")
        if options is not None and not options.run_scenario:
            health.set("scenario_runner", True, "disabled")
    app = build_app(scenario, clock=clock or SystemClock(), options=options, health=health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info(
            "bybit sim listening",
            extra={"host": host, "port": port, "scenario": scenario.name},
        )
        if health is not None:
            health.set("bybit_api", True, f"{host}:{port}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
