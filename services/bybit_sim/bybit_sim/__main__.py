"""``python -m bybit_sim``: the Bybit v5 simulator with its ops endpoints."""

from __future__ import annotations

import sys

from bybit_sim.app import serve
from bybit_sim.server import SimOptions
from bybit_sim.settings import SimSettings
from riskwatch_common.runtime import Health, HttpServer, run_main, serving

SERVICE = "bybit-sim"


async def main(settings: SimSettings) -> None:
    health = Health()
    async with serving(HttpServer(settings.http_host, settings.http_port, health)):
        await serve(
            settings.scenario,
            host=settings.host,
            port=settings.port,
            options=SimOptions(
                idle_timeout_s=settings.idle_timeout_s,
                rate_limit_per_s=settings.rate_limit_per_s,
                frames_log_path=settings.frames_log,
                ip_limit_per_5s=settings.ip_limit_per_5s,
                ip_ban_s=settings.ip_ban_s,
                ws_connect_limit_per_5min=settings.ws_connect_limit_per_5min,
            ),
            health=health,
        )


if __name__ == "__main__":
    sys.exit(run_main(SERVICE, SimSettings, main))
