"""Clocks: the exchange core reads time only through `now_ms`, the runner sleeps through here.

ManualClock lets tests move time by hand: sleepers wake exactly when the clock passes their
deadline, so a test drives price ticks and timeline actions without waiting in real time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_until(self, deadline_ms: int) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, deadline_ms: int) -> None:
        await asyncio.sleep(max(0, deadline_ms - self.now_ms()) / 1000)


class ManualClock:
    def __init__(self, start_ms: int) -> None:
        self._now = start_ms
        self._sleepers: list[tuple[int, asyncio.Future[None]]] = []

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self.set(self._now + ms)

    def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = now_ms
        waiting = []
        for deadline, future in self._sleepers:
            if deadline <= now_ms:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((deadline, future))
        self._sleepers = waiting

    async def sleep_until(self, deadline_ms: int) -> None:
        if deadline_ms <= self._now:
            # Still yield, so a runner that is behind lets sockets and tests run.
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((deadline_ms, future))
        await future
