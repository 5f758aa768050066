"""A circuit breaker for the LLM gateway (pure: time comes from an injected monotonic clock).

Closed: calls go through and consecutive failures (5xx, timeouts, connection errors) are
counted. ``failure_threshold`` in a row open it for ``open_seconds``: no call is made and
analyses are deterministic at once instead of each waiting out its own retries. Then it is
half-open: one probe call goes through; success closes it, failure opens it again. A
rejected key or an exhausted quota opens it straight away (``trip``) for longer, because
every further call would fail the same way until someone fixes the account.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, *, failure_threshold: int, open_seconds: float, monotonic: Callable[[], float]
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._monotonic = monotonic
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False
        self.reason = ""

    @property
    def state(self) -> BreakerState:
        if self._open_until is None:
            return BreakerState.CLOSED
        if self._monotonic() < self._open_until:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._open_until = None
        self._probing = False
        self.reason = ""

    def record_failure(self, reason: str) -> bool:
        """Count a failed attempt; True when this one opened the breaker."""
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            self.trip(self.open_seconds, reason)
            return True
        return False

    def trip(self, seconds: float, reason: str) -> None:
        """Open now for ``seconds`` (also from half-open, restarting the wait)."""
        self._open_until = self._monotonic() + seconds
        self._failures = 0
        self._probing = False
        self.reason = reason
