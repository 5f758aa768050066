"""Scenario driving: price paths and the timeline, stepped by time.

`ScenarioDriver.advance_to(now_ms)` is pure given the exchange: it applies every price tick
and timeline action due up to `now_ms`, in time order (a tick before an action at the same
instant, so a fill sees that instant's mark), and returns the frames and faults produced.
`run_scenario` is the thin async loop that sleeps on the injected clock between due times.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from bybit_sim.clock import Clock
from bybit_sim.exchange import Exchange, ExchangeError, PrivateFrame
from bybit_sim.scenario import Action, Fault, PricePath, RandomWalk, Scenario

log = logging.getLogger(__name__)

_NEVER = 2**62
_MIN_PRICE = Decimal("0.00000001")


class _TimedPath:
    """Waypoints (0, start), (at_s, price)...; linear glide or steps, held after the last."""

    def __init__(self, path: PricePath, cycle_ms: int | None) -> None:
        self._points = [(0, path.start)] + [(int(m.at_s * 1000), m.price) for m in path.moves]
        self._linear = path.interpolate == "linear"
        self._cycle_ms = cycle_ms

    def next_price(self, elapsed_ms: int) -> Decimal:
        t = elapsed_ms % self._cycle_ms if self._cycle_ms else elapsed_ms
        before = self._points[0]
        for point in self._points:
            if point[0] > t:
                if not self._linear:
                    return before[1]
                (t0, p0), (t1, p1) = before, point
                return p0 + (p1 - p0) * Decimal(t - t0) / Decimal(t1 - t0)
            before = point
        return before[1]


class _RandomWalk:
    """Geometric random walk, one step per tick, reproducible from its seed."""

    def __init__(self, start: Decimal, walk: RandomWalk, tick_ms: int) -> None:
        self._rng = random.Random(walk.seed)
        dt = Decimal(tick_ms) / 1000
        self._drift = walk.drift * dt
        self._scale = walk.volatility * dt.sqrt()
        self._price = start

    def next_price(self, elapsed_ms: int) -> Decimal:
        # The normal variate is dimensionless; it is fixed to 9 decimals before it touches a
        # price, so all price arithmetic stays in Decimal and replays exactly.
        shock = Decimal(f"{self._rng.gauss(0.0, 1.0):.9f}")
        self._price = max(self._price * (1 + self._drift + self._scale * shock), _MIN_PRICE)
        return self._price


@dataclass
class StepResult:
    frames: list[PrivateFrame] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ticked: bool = False


class ScenarioDriver:
    def __init__(self, scenario: Scenario, exchange: Exchange, *, start_ms: int) -> None:
        self.exchange = exchange
        self._start = start_ms
        self._tick_ms = scenario.tick_ms
        self._loop = scenario.loop
        self._cycle_ms = int(scenario.cycle_s() * 1000)
        self._schedule: list[tuple[int, Action]] = [
            (int(a.at_s * 1000), a) for a in scenario.schedule()
        ]
        self._cursor = 0
        self._cycle_start = start_ms
        self.cycle = 0
        self._next_tick = start_ms + self._tick_ms
        cycle = self._cycle_ms if self._loop else None
        self._paths: dict[str, _TimedPath | _RandomWalk] = {
            s.symbol: (
                _RandomWalk(s.price.start, s.price.random_walk, self._tick_ms)
                if s.price.random_walk is not None
                else _TimedPath(s.price, cycle)
            )
            for s in scenario.symbols
        }

    def next_due_ms(self) -> int:
        return min(self._next_tick, self._next_action_ms())

    def _next_action_ms(self) -> int:
        if self._cursor < len(self._schedule):
            return self._cycle_start + self._schedule[self._cursor][0]
        if self._loop:
            return self._cycle_start + self._cycle_ms
        return _NEVER

    def advance_to(self, now_ms: int) -> StepResult:
        result = StepResult()
        while True:
            tick_due = self._next_tick
            action_due = self._next_action_ms()
            if min(tick_due, action_due) > now_ms:
                return result
            if tick_due <= action_due:
                self._tick(tick_due)
                self._next_tick += self._tick_ms
                result.ticked = True
            elif self._cursor < len(self._schedule):
                _, action = self._schedule[self._cursor]
                self._cursor += 1
                self._run(action, result)
            else:
                self._cycle_start += self._cycle_ms
                self._cursor = 0
                self.cycle += 1

    def _tick(self, at_ms: int) -> None:
        for symbol, path in self._paths.items():
            self.exchange.tick_mark_price(symbol, path.next_price(at_ms - self._start))

    def _run(self, action: Action, result: StepResult) -> None:
        if isinstance(action, Fault):
            result.faults.append(action)
            return
        try:
            result.frames.extend(self.exchange.apply(action).frames)
        except ExchangeError as exc:
            # A looping timeline can race its own state (e.g. a cancel after a full fill);
            # the run goes on and the error is reported like a refused request.
            result.errors.append(f"cycle {self.cycle} at_s {action.at_s} {action.action}: {exc}")


async def run_scenario(
    driver: ScenarioDriver,
    clock: Clock,
    on_step: Callable[[StepResult], Awaitable[None]],
) -> None:
    """Drive `driver` on `clock` forever, handing each step to `on_step`; cancel to stop."""
    while True:
        result = driver.advance_to(clock.now_ms())
        for error in result.errors:
            log.warning("scenario action refused: %s", error)
        await on_step(result)
        await clock.sleep_until(driver.next_due_ms())
