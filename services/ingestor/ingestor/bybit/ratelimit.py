"""Client-side budgets for Bybit's limits: REST per IP, per UID, and WS connects per domain."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]

# What one egress IP may spend, with headroom under Bybit's limits (600 REST requests per 5 s,
# a breach bans the IP for 10 minutes; 500 new WebSocket connections per 5 minutes).
REST_REQUESTS_PER_IP_5S = 500
WS_CONNECTS_PER_IP_5MIN = 450


def ip_share(budget: int, peers: int) -> int:
    """One process's part of a per-IP ``budget`` shared by ``peers`` processes."""
    return max(1, budget // max(1, peers))


# How often a waiter looks again when only requests still in flight fill the window.
_IN_FLIGHT_POLL_S = 0.02


class SlidingWindowLimiter:
    """At most ``limit`` acquisitions in any ``window_s``, shared by every caller.

    A sliding log rather than a token bucket: a bucket of rate r and burst b admits
    b + r·window in one window, so it can overshoot a hard "600 per 5 s" rule. Waiters are
    served in arrival order (one lock), so no account starves the others.

    ``hold`` is for requests counted where they arrive (Bybit's per-IP window): the slot
    counts from the moment it is taken until a full window after the response, since the
    request reached the exchange somewhere in between. Stamping only at send time let a
    burst queued in the connection pool land within one exchange window with the next
    burst, and the simulator banned the IP at 50 sends per 5 s against a limit of 60.
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._mono = monotonic
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._in_flight = 0
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    def block_for(self, seconds: float) -> None:
        """Refuse everyone for ``seconds`` (an IP ban announced by HTTP 403)."""
        self._blocked_until = max(self._blocked_until, self._mono() + seconds)

    def blocked_for(self) -> float:
        """Seconds left of a ``block_for`` (0 when none is in force)."""
        return max(0.0, self._blocked_until - self._mono())

    def delay(self) -> float:
        """Seconds until the next acquisition would be allowed (0 when free now)."""
        now = self._mono()
        while self._stamps and self._stamps[0] <= now - self.window_s:
            self._stamps.popleft()
        wait = self._blocked_until - now
        if len(self._stamps) + self._in_flight >= self.limit:
            expiry = self._stamps[0] + self.window_s - now if self._stamps else _IN_FLIGHT_POLL_S
            if self._in_flight:
                expiry = min(expiry, _IN_FLIGHT_POLL_S)
            wait = max(wait, expiry)
        return max(wait, 0.0)

    async def acquire(self) -> float:
        """Take one slot, waiting as needed; returns the seconds waited."""
        waited = await self._wait_turn()
        self._stamps.append(self._mono())
        return waited

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[float]:
        """One slot for a request, counted from now to a window after it ends; yields the
        seconds waited for it."""
        waited = await self._wait_turn(reserve=True)
        try:
            yield waited
        finally:
            self._in_flight -= 1
            self._stamps.append(self._mono())

    async def _wait_turn(self, *, reserve: bool = False) -> float:
        waited = 0.0
        async with self._lock:
            while (wait := self.delay()) > 0:
                await self._sleep(wait)
                waited += wait
            if reserve:
                self._in_flight += 1
        return waited
