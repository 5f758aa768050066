"""The fuzz harness: hypothesis feeds every decoder malformed input and checks it rejects
it with its documented error only. ``FUZZ_EXAMPLES`` inputs per decoder (a few hundred by
default, ``make fuzz``: 10,000); the counts per decoder are printed at the end."""

from __future__ import annotations

import os
from collections import Counter

import pytest

COUNTS: Counter[str] = Counter()
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))


@pytest.fixture(scope="session")
def fuzz_counts() -> Counter[str]:
    return COUNTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not COUNTS:
        return
    terminalreporter.section("fuzz: generated inputs per decoder")
    for name, count in sorted(COUNTS.items()):
        terminalreporter.write_line(f"fuzz: {name:<44} {count:>7} inputs")
    terminalreporter.write_line(
        f"fuzz: {len(COUNTS)} decoders, {sum(COUNTS.values())} inputs, "
        f"{min(COUNTS.values())} at least per decoder"
    )
