"""Fail fast: a supervised task that raises ends the process non-zero within 10 s, even when
the graceful stop hangs, and /healthz answers 503 from the moment of the failure."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

from riskwatch_common.runtime import Health, HttpServer, supervise

_SERVICE = textwrap.dedent(
    """
    import asyncio, sys
    from riskwatch_common.runtime import Health, HttpServer, run_main, supervise
    from riskwatch_common.settings import BaseServiceSettings

    class Settings(BaseServiceSettings):
        model_config = {"env_prefix": "FAILFAST_"}

    async def app(settings):
        health = Health()
        http = HttpServer(settings.http_host, settings.http_port, health)
        await http.start()

        async def loop():
            await asyncio.sleep(0.5)
            raise RuntimeError("consumer loop broke")

        task = supervise(loop(), "consumer", health)
        try:
            await asyncio.Event().wait()
        finally:
            task.cancel()
            if sys.argv[1] == "hang":
                # a stop that never ends, like Faust's wait_empty on an unacked batch
                await asyncio.shield(asyncio.Event().wait())
            await http.stop()

    sys.exit(run_main("failfast", Settings, app))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _run(tmp_path: Path, mode: str) -> tuple[int, float, list[int | None]]:
    """Exit code, seconds from the first 503 (the failure) to the exit, /healthz answers."""
    script = tmp_path / "svc.py"
    script.write_text(_SERVICE)
    port = _free_port()
    env = {**os.environ, "FAILFAST_HTTP_PORT": str(port), "LOG_FORMAT": "console"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(script), mode],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: list[int | None] = []
    failed_at = None
    try:
        while proc.poll() is None and time.monotonic() - started < 30:
            seen.append(_status(f"http://127.0.0.1:{port}/healthz"))
            if seen[-1] == 503 and failed_at is None:
                failed_at = time.monotonic()
            time.sleep(0.05)
        code = proc.wait(timeout=1)
        ended = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, ended - (failed_at or started), seen


def test_failing_task_with_hanging_stop_exits_nonzero_within_10s_and_healthz_503(
    tmp_path: Path,
) -> None:
    code, took, seen = _run(tmp_path, "hang")
    assert code == 1
    assert took < 10
    assert 200 in seen, "the service never answered alive"
    first_bad = seen.index(503)
    assert all(s == 200 for s in seen[:first_bad] if s is not None)
    assert all(s in (503, None) for s in seen[first_bad:])


def test_failing_task_with_clean_stop_exits_nonzero_at_once(tmp_path: Path) -> None:
    code, took, _ = _run(tmp_path, "clean")
    assert code == 1
    assert took < 3


async def test_supervised_task_that_returns_is_a_failure_and_readyz_turns_red() -> None:
    health = Health()
    health.set("broker", True, "ok")
    server = HttpServer("127.0.0.1", 0, health)
    await server.start()
    try:

        async def ends() -> None:
            return None

        task = supervise(ends(), "publisher", health)
        await asyncio.gather(task, return_exceptions=True)
        assert health.failed == "publisher stopped"
        assert not health.ready
        loop = asyncio.get_running_loop()
        for path in ("/healthz", "/readyz"):
            status = await loop.run_in_executor(
                None, _status, f"http://127.0.0.1:{server.port}{path}"
            )
            assert status == 503, path
    finally:
        await server.stop()


async def test_cancelled_supervised_task_is_a_normal_stop() -> None:
    health = Health()
    task = supervise(asyncio.Event().wait(), "reader", health)
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert health.failed is None
