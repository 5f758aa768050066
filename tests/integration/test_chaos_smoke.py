"""``make chaos`` keeps working: a short run with two of its faults (a SIGKILL of the risk
processor, a poison and an oversize record on every data topic) on its own broker.

Expected: exit 0 and the one summary line, with alerts expected and every one delivered
exactly once, and no service hung."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"^chaos: (\d+) faults, alerts expected (\d+), delivered (\d+), lost (\d+), "
    r"duplicated (\d+), hung (\d+)$"
)


@pytest.mark.integration
def test_chaos_smoke_run_delivers_every_alert_once() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--faults",
            "kill:risk_processor,poison",
            "--cycle",
            "10",
            "--recover",
            "60",
            "--drain",
            "45",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
    )
    out = done.stdout + done.stderr
    lines = [m for m in (SUMMARY.match(x) for x in done.stdout.splitlines()) if m]
    assert len(lines) == 1, out
    faults, expected, delivered, lost, duplicated, hung = map(int, lines[0].groups())
    assert faults == 2, out
    assert expected > 0, out
    assert (delivered, lost, duplicated, hung) == (expected, 0, 0, 0), out
    assert done.returncode == 0, out
    assert "fault 1: SIGKILL risk_processor: recovered" in done.stdout, out
    assert "fault 2: a non-JSON and a 900 KB record" in done.stdout, out
