"""What every ``bench`` command shares: a pacer, a percentile, GC pauses.

Benchmarks print figures and never assert times; they live in the services, this module
only keeps them measuring the same way (the same arrival pattern for a pipeline and for the
bare-client baseline it is compared with).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paced(rate: float, seconds: float, send: Callable[[int], Awaitable[object]]) -> int:
    """Call ``send(i)`` ``rate`` times a second for ``seconds``; returns the calls made.

    Arrivals are spread evenly (not in bursts) and a stall is caught up at once, as frames
    queued in a socket would be; every caller compared with another uses the same pattern.
    """
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)
    return total


class GcPauses:
    """Garbage-collector pauses while active (``with GcPauses() as gc_pauses:``).

    A full collection can stop the event loop for many milliseconds; a latency tail that a
    collection explains should say so instead of being blamed on the broker.
    """

    def __init__(self) -> None:
        self.pauses_ms: list[tuple[int, float]] = []  # (generation, ms)
        self._started = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            elapsed_ms = (time.perf_counter() - self._started) * 1000
            self.pauses_ms.append((info["generation"], elapsed_ms))

    def summary(self) -> str:
        if not self.pauses_ms:
            return "no collections"
        full = sum(1 for gen, _ in self.pauses_ms if gen == 2)
        longest = max(ms for _, ms in self.pauses_ms)
        return f"{len(self.pauses_ms)} collections ({full} full), longest {longest:.1f} ms"
