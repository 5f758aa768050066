"""Client-side budgets for Bybit's limits: REST per IP, per UID, and WS connects per domain."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


class SlidingWindowLimiter:
    """At most ``limit`` acquisitions in any ``window_s``, shared by every caller.

    A sliding log rather than a token bucket: a bucket of rate r and burst b admits
    b + r·window in one window, so it can overshoot a hard "600 per 5 s" rule. Waiters are
    served in arrival order (one lock), so no account starves the others.
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
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    def block_for(self, seconds: float) -> None:
        """Refuse everyone for ``seconds`` (an IP ban announced by HTTP 403)."""
        self._blocked_until = max(self._blocked_until, self._mono() + seconds)

    def delay(self) -> float:
        """Seconds until the next acquisition would be allowed (0 when free now)."""
        now = self._mono()
        while self._stamps and self._stamps[0] <= now - self.window_s:
            self._stamps.popleft()
        wait = self._blocked_until - now
        if len(self._stamps) >= self.limit:
            wait = max(wait, self._stamps[0] + self.window_s - now)
        return max(wait, 0.0)

    async def acquire(self) -> float:
        """Take one slot, waiting as needed; returns the seconds waited."""
        waited = 0.0
        async with self._lock:
            while (wait := self.delay()) > 0:
                await self._sleep(wait)
                waited += wait
            self._stamps.append(self._mono())
        return waited
