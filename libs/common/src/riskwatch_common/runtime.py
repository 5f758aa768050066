"""Service runtime: health and metrics endpoints, signals, graceful shutdown.

Every service's ``__main__`` is ``run_main(name, SettingsClass, app_main)``: settings are
loaded first (a config error exits 2 naming the variable), logging is configured, then the
app runs until SIGINT/SIGTERM, when it is cancelled and its ``finally`` blocks close
connections in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from riskwatch_common.logs import configure_logging
from riskwatch_common.settings import BaseServiceSettings, ConfigError, load_settings

log = logging.getLogger(__name__)


@dataclass
class Check:
    ok: bool = False
    detail: str = ""


class Health:
    """Named readiness checks; the service is ready when every check is ok."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        check = self._checks.setdefault(name, Check())
        check.ok, check.detail = ok, detail

    def expect(self, *names: str) -> None:
        """Declare checks that start not-ready, so /readyz fails until they report."""
        for name in names:
            self._checks.setdefault(name, Check())

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self._checks.values())

    def report(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "checks": {n: {"ok": c.ok, "detail": c.detail} for n, c in self._checks.items()},
        }


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class HttpServer:
    """``/healthz`` (alive), ``/readyz`` (every check ok), ``/metrics``, plus extra routes."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Health,
        routes: Iterable[web.RouteDef] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.health = health
        self._app = web.Application()
        self._app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
                *routes,
            ]
        )
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return _json({"alive": True})

    async def _readyz(self, _: web.Request) -> web.Response:
        report = self.health.report()
        return _json(report, 200 if report["ready"] else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("http listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson (Decimals need ``default=str``)."""
    return web.Response(
        body=orjson.dumps(data, default=str), status=status, content_type="application/json"
    )


S = TypeVar("S", bound=BaseServiceSettings)


async def _run_until_signal(main: Awaitable[None]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("stopped")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_main(
    service: str,
    settings_cls: type[S],
    app_main: Callable[[S], Awaitable[None]],
    argv_overrides: dict[str, Any] | None = None,
) -> int:
    """Entry point of a service process; returns the exit code."""
    try:
        settings = load_settings(settings_cls, **(argv_overrides or {}))
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        return 2
    configure_logging(service, settings.log_level, settings.log_format.value)
    try:
        asyncio.run(_run_until_signal(app_main(settings)))
    except Exception:
        log.exception("service failed")
        return 1
    return 0


@contextlib.asynccontextmanager
async def serving(server: HttpServer) -> Any:
    """Run the health/metrics server for the duration of the block."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
