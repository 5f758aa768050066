"""Snapshot coalescing: at most one exposure snapshot per key per interval, the latest.

Alerts are never delayed (they go out as they happen); snapshots are numbers that move
many times a second under load. A key's first change in an interval is published at once
(leading edge), later ones wait for the interval's end and only the latest goes out
(trailing edge, from the snapshot timer). A snapshot equal to the last one published is
not published again. Pure bookkeeping: the caller publishes what ``take_due`` returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from risk_processor import state
from risk_processor.outputs import Cause, exposure_key

Monotonic = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Staged:
    """A snapshot waiting for its key's publication interval."""

    partition: int
    exposure: Any
    risk: state.RiskBook
    cause: Cause
    now: datetime
    fingerprint: tuple[object, ...]

    @property
    def alerts(self) -> object:
        return self.fingerprint[1]


class Coalescer:
    """Which snapshots are due: at most one per key per ``interval_s``."""

    def __init__(self, interval_s: float, *, monotonic: Monotonic = time.monotonic) -> None:
        self.interval_s = interval_s
        self._monotonic = monotonic
        self.staged: dict[str, Staged] = {}
        self.published: dict[str, tuple[object, ...]] = {}
        self._emitted_at: dict[str, float] = {}
        self._alert_views: dict[str, object] = {}

    def stage(
        self,
        key: str,
        partition: int,
        exposure: Any,
        risk: state.RiskBook,
        cause: Cause,
        now: datetime,
    ) -> None:
        """Queue ``key``'s snapshot unless it shows what was published last."""
        alerts = tuple((k, a.severity, a.value) for k, a in risk.alerts.items())
        # The first resync goes to the portfolio stage with the summary (its warm-up).
        resynced = risk.link.resynced if risk.link is not None else None
        fingerprint = (exposure_key(exposure), alerts, resynced)
        if self.published.get(key) == fingerprint:
            self.staged.pop(key, None)
            return
        self.staged[key] = Staged(partition, exposure, risk, cause, now, fingerprint)

    def take_due(self, *, everything: bool = False) -> list[tuple[str, Staged]]:
        """Remove and return the staged snapshots whose key may publish now.

        Taking is synchronous, so two publishers (a batch and the timer) never publish the
        same snapshot twice.
        """
        if not self.staged:
            return []
        clock = self._monotonic()
        due = []
        for key in list(self.staged):
            last = self._emitted_at.get(key)
            if not everything and last is not None and clock - last < self.interval_s:
                continue
            staged = self.staged.pop(key)
            self._emitted_at[key] = clock
            self.published[key] = staged.fingerprint
            due.append((key, staged))
        return due

    def alert_view_changed(self, key: str, staged: Staged) -> bool:
        """Whether ``key``'s alert list differs from the one last written to the views."""
        if self._alert_views.get(key) == staged.alerts:
            return False
        self._alert_views[key] = staged.alerts
        return True

    def reset(self) -> None:
        """After a rebalance: what we published may be stale for the next owner."""
        self.staged.clear()
        self.published.clear()
        self._alert_views.clear()


class Throttle:
    """At most one run per ``interval_s``: the first change runs at once, later ones in
    the interval wait for its end (the portfolio evaluation is O(accounts))."""

    def __init__(self, interval_s: float, *, monotonic: Monotonic = time.monotonic) -> None:
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._last: float | None = None

    def ready(self) -> bool:
        last = self._last
        return last is None or self._monotonic() - last >= self.interval_s

    def ran(self) -> None:
        self._last = self._monotonic()
