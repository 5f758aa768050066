"""The task dump a stuck service logs on SIGUSR1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from riskwatch_common.runtime import add_to_dump, dump_tasks


async def test_dump_names_each_waiting_task_with_its_frame_and_registered_state() -> None:
    never = asyncio.Event()

    async def waits_for_ever() -> None:
        await never.wait()

    task = asyncio.create_task(waits_for_ever(), name="stuck-consumer")
    add_to_dump("offsets", lambda: {"accounts[0]": 41})
    await asyncio.sleep(0)
    try:
        dump = dump_tasks()
    finally:
        task.cancel()
    assert "--- task stuck-consumer" in dump
    assert "waits_for_ever" in dump
    assert "--- state offsets: {'accounts[0]': 41}" in dump
    assert "--- thread MainThread" in dump


def test_sigusr1_logs_the_dump_and_the_service_keeps_running(tmp_path: Path) -> None:
    script = tmp_path / "svc.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from riskwatch_common.runtime import _run_until_signal

            async def main():
                print("up", flush=True)
                await asyncio.Event().wait()

            asyncio.run(_run_until_signal(main()))
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"up"
        proc.send_signal(signal.SIGUSR1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert b"task dump" in out
    assert b"in main" in out
    assert proc.returncode == 0
