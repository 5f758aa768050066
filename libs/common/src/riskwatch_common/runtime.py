"""Service runtime: health and metrics endpoints, signals, graceful shutdown, fail-fast.

Every service's ``__main__`` is ``run_main(name, SettingsClass, app_main)``: settings are
loaded first (a config error exits 2 naming the variable), logging is configured, then the
app runs until SIGINT/SIGTERM, when it is cancelled and its ``finally`` blocks close
connections in order.

Fail fast (never silently blind): a service that can no longer do its job calls
``health.fail(reason)``, or runs its loops with ``supervise(coro, name, health)`` which does
it when the loop raises. From that moment ``/healthz`` and ``/readyz`` answer 503, the app is
cancelled so its ``finally`` blocks run, and the process exits 1 within ``FAIL_EXIT_S`` even
when that graceful stop hangs (a watchdog thread, so a blocked event loop cannot stop it).
A stop on SIGTERM/SIGINT that hangs is forced after ``STOP_TIMEOUT_S`` the same way. Both
use one watchdog, ``force_exit_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from riskwatch_common.logs import configure_logging, has_secrets, redact
from riskwatch_common.settings import BaseServiceSettings, ConfigError, load_settings

log = logging.getLogger(__name__)


@dataclass
class Check:
    ok: bool = False
    detail: str = ""


FAIL_EXIT_S = 5.0
"""Most seconds between ``Health.fail`` and the process's exit (graceful stop or forced)."""
STOP_TIMEOUT_S = 25.0
"""Most seconds a stop on SIGTERM/SIGINT may take before the exit is forced (Kubernetes
kills at 30 s by default)."""

# Set by ``run_main`` for the life of the process: what ``Health.fail`` calls so the
# process ends. None in tests that run a service in-process: they see the 503 and the error.
_on_failure: Callable[[str], None] | None = None
# Set by ``run_main`` when the settings give ``metrics_port``: /metrics is served there, by
# ``MetricsServer``, and no longer by the service's ``HttpServer``.
_metrics_apart = False


class Health:
    """Named readiness checks; the service is ready when every check is ok.

    ``fail(reason)`` marks the whole service failed: not alive, not ready, for good.
    """

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self.failed: str | None = None

    def fail(self, reason: str) -> None:
        """The service cannot do its job: /healthz turns 503 now and the process exits 1."""
        if self.failed is not None:
            return
        self.failed = reason
        log.critical("service failed, exiting", extra={"reason": reason})
        if _on_failure is not None:
            _on_failure(reason)

    @property
    def alive(self) -> bool:
        return self.failed is None

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        check = self._checks.setdefault(name, Check())
        check.ok, check.detail = ok, detail

    def expect(self, *names: str) -> None:
        """Declare checks that start not-ready, so /readyz fails until they report."""
        for name in names:
            self._checks.setdefault(name, Check())

    @property
    def ready(self) -> bool:
        return self.failed is None and all(c.ok for c in self._checks.values())

    def report(self) -> dict[str, Any]:
        """Readiness and every check, redacted (details quote library and exchange errors)."""
        doc: dict[str, Any] = {
            "ready": self.ready,
            "checks": {
                n: {"ok": c.ok, "detail": redact(c.detail)} for n, c in self._checks.items()
            },
        }
        if self.failed is not None:
            doc["failed"] = redact(self.failed)
        return doc


def supervise(coro: Awaitable[Any], name: str, health: Health) -> asyncio.Task[Any]:
    """Run ``coro`` as a task that must never end: when it raises, or returns, the service
    has failed (``health.fail``). Cancelling the task is a normal stop."""

    async def guarded() -> Any:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            health.fail(f"{name} failed: {exc!r}")
            raise
        health.fail(f"{name} stopped")

    return asyncio.ensure_future(guarded())


@web.middleware
async def _redacting(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every registered secret is replaced in every response this server sends: a route that
    quotes an exchange or library error cannot serve a key."""
    resp: web.StreamResponse = await handler(request)
    if isinstance(resp, web.Response) and isinstance(resp.body, bytes) and has_secrets():
        text = resp.body.decode("utf-8", "replace")
        clean = redact(text)
        if clean != text:
            resp.body = clean.encode()
    return resp


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
        self._app = web.Application(middlewares=[_redacting])
        own = [web.get("/healthz", self._healthz), web.get("/readyz", self._readyz)]
        if not _metrics_apart:
            own.append(web.get("/metrics", _metrics))
        self._app.add_routes([*own, *routes])
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        if self.health.failed is not None:
            return _json({"alive": False, "failed": redact(self.health.failed)}, 503)
        return _json({"alive": True})

    async def _readyz(self, _: web.Request) -> web.Response:
        report = self.health.report()
        return _json(report, 200 if report["ready"] else 503)

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


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


class MetricsServer:
    """``/metrics`` alone, on a port of its own (``metrics_port``); ``run_main`` runs it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._app = web.Application(middlewares=[_redacting])
        self._app.add_routes([web.get("/metrics", _metrics)])
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        log.info("metrics listening", extra={"host": self.host, "port": self.port})

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


_DUMPS: dict[str, Callable[[], Any]] = {}


def add_to_dump(name: str, state: Callable[[], Any]) -> None:
    """Include ``state()`` (anything printable) in every ``dump_tasks``."""
    _DUMPS[name] = state


def _await_chain(coro: Any) -> list[str]:
    """The frames a coroutine waits in, outermost first (``await`` by ``await``)."""
    lines: list[str] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return lines


def dump_tasks() -> str:
    """Where every asyncio task of this loop waits, every thread's stack, and the state
    services registered with ``add_to_dump``.

    ``kill -USR1 <pid>`` logs it: the first thing to read when a live service makes no
    progress (a wait that never ends shows as the same frame in two dumps).
    """
    import io
    import threading
    import traceback

    out = io.StringIO()
    for name, state in _DUMPS.items():
        try:
            out.write(f"--- state {name}: {state()!r}\n")
        except Exception as exc:
            out.write(f"--- state {name}: failed: {exc!r}\n")
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        out.write(f"--- task {task.get_name()}\n")
        for line in _await_chain(task.get_coro())[-6:]:
            out.write(f"    {line}\n")
    frames = sys._current_frames()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            out.write(f"--- thread {thread.name}\n")
            out.write("".join(traceback.format_stack(frame, limit=12)))
    return out.getvalue()


def force_exit_after(seconds: float, code: int, why: str) -> None:
    """Exit with ``code`` after ``seconds`` unless the process ended first; a thread, so a
    hung event loop or a stop that never returns cannot hold it.

    The one watchdog: ``Health.fail`` and signals arm it through ``run_main``; an app that
    runs its own graceful stop on failure (the risk processor stops Faust) arms it directly.
    """

    def fire() -> None:
        log.critical("graceful stop hung, forcing exit", extra={"after_s": seconds, "why": why})
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(code)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


class _Process:
    """What ``run_main`` knows about the running app: its task and whether it failed."""

    def __init__(self, task: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        self.loop = loop
        self.failure: str | None = None
        self.stopping = False

    def fail(self, reason: str) -> None:
        if self.failure is not None:
            return
        self.failure = reason
        force_exit_after(FAIL_EXIT_S, 1, reason)
        self.loop.call_soon_threadsafe(self.task.cancel)

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            force_exit_after(STOP_TIMEOUT_S, 1, "signal")
        self.task.cancel()


async def _run_until_signal(main: Awaitable[None]) -> str | None:
    """Run ``main`` until a signal or a failure; returns the failure, if any."""
    global _on_failure
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    proc = _Process(task, loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, proc.stop)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("task dump\n%s", dump_tasks()))
    _on_failure = proc.fail
    try:
        await task
    except asyncio.CancelledError:
        log.info("stopped")
    except Exception as exc:
        proc.fail(f"{exc!r}")
        raise
    finally:
        _on_failure = None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
    return proc.failure


async def _with_metrics(server: MetricsServer, main: Awaitable[None]) -> None:
    global _metrics_apart
    _metrics_apart = True
    await server.start()
    try:
        await main
    finally:
        await server.stop()


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
    main = app_main(settings)
    if settings.metrics_port is not None:
        main = _with_metrics(MetricsServer(settings.http_host, settings.metrics_port), main)
    try:
        failure = asyncio.run(_run_until_signal(main))
    except ConfigError as exc:
        # A config file the service reads as it starts (thresholds, routing, ...): one line
        # and exit 2, like a bad environment variable, not a traceback.
        print(f"{service}: {exc}", file=sys.stderr)
        return 2
    except Exception:
        log.exception("service failed")
        return 1
    if failure is not None:
        log.error("service failed", extra={"reason": failure})
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
