"""Scenario driving: price paths, action timing, looping, and the runner inside the app."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from typing import Any

import pytest

from bybit_sim.clock import ManualClock
from bybit_sim.exchange import Exchange
from bybit_sim.runner import ScenarioDriver, run_scenario
from bybit_sim.scenario import Scenario

StartSim = Any
START = 1_750_000_000_000
TIMEOUT = 5.0


def driver_for(scenario: Scenario) -> tuple[Exchange, ScenarioDriver, list[int]]:
    now = [START]
    exchange = Exchange(scenario, now_ms=lambda: now[0], run_id="t")
    return exchange, ScenarioDriver(scenario, exchange, start_ms=START), now


def advance(driver: ScenarioDriver, now: list[int], to_ms: int) -> list[Any]:
    now[0] = START + to_ms
    return [driver.advance_to(now[0])]


def test_timed_path_glides_linearly_between_waypoints(sample_scenario: Scenario) -> None:
    exchange, driver, now = driver_for(sample_scenario)

    advance(driver, now, 15_000)

    # halfway from 70,000 (t=0) to 70,084 (t=30 s)
    assert exchange.markets["BTCUSDT"].mark_price == D("70042.0")


def test_looping_timed_path_returns_to_start_each_cycle(sample_scenario: Scenario) -> None:
    exchange, driver, now = driver_for(sample_scenario)

    advance(driver, now, 120_000 + 15_000)

    assert driver.cycle == 1
    assert exchange.markets["BTCUSDT"].mark_price == D("70042.0")


def test_random_walk_is_reproducible_from_its_seed(drift_scenario: Scenario) -> None:
    first, d1, n1 = driver_for(drift_scenario)
    second, d2, n2 = driver_for(drift_scenario)

    path1, path2 = [], []
    for t in range(100, 3000, 100):
        advance(d1, n1, t)
        advance(d2, n2, t)
        path1.append(first.markets["ETHUSDT"].mark_price)
        path2.append(second.markets["ETHUSDT"].mark_price)

    assert path1 == path2
    assert len(set(path1)) > 5
    assert all(p == p.quantize(D("0.01")) for p in path1)


def test_action_at_a_tick_instant_sees_that_ticks_price(kit: Any) -> None:
    scenario = kit.scenario_yaml(
        symbols=kit.symbol_yaml(
            "BTCUSDT",
            "70000",
            "      interpolate: step\n      moves: [{at_s: 1, price: 71000}]\n",
        ),
        timeline=(
            "  - {at_s: 0.5, account: main, action: place_order, symbol: BTCUSDT, side: Buy,"
            " qty: 1, order_type: Market, order_link_id: m}\n"
            "  - {at_s: 1, account: main, action: fill_order, order_link_id: m}\n"
        ),
    )
    _, driver, now = driver_for(scenario)

    (step,) = advance(driver, now, 1000)

    execution = next(f for f in step.frames if f.topic == "execution")
    assert execution.data[0]["execPrice"] == "71000"


def test_refused_timeline_action_is_reported_and_the_run_continues(kit: Any) -> None:
    scenario = kit.scenario_yaml(
        timeline="  - {at_s: 1, account: main, action: cancel_order, order_link_id: ghost}\n",
    )
    exchange, driver, now = driver_for(scenario)

    (step,) = advance(driver, now, 2000)

    assert len(step.errors) == 1
    assert "110001" in step.errors[0]
    assert exchange.markets["BTCUSDT"].mark_price == D(70000)


async def test_run_scenario_sleeps_on_the_clock_and_hands_steps_over(
    sample_scenario: Scenario,
) -> None:
    clock = ManualClock(START)
    exchange = Exchange(sample_scenario, now_ms=clock.now_ms, run_id="t")
    driver = ScenarioDriver(sample_scenario, exchange, start_ms=START)
    frames: list[str] = []
    seen = asyncio.Event()

    async def on_step(result: Any) -> None:
        frames.extend(f.topic for f in result.frames)
        if frames:
            seen.set()

    task = asyncio.create_task(run_scenario(driver, clock, on_step))
    clock.advance(10_000)
    await asyncio.wait_for(seen.wait(), TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert frames == ["order", "position"]  # sample-eth-bid placed at 10 s


async def test_app_runner_with_manual_clock_pushes_ticker_delta_and_timeline_frames(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario, run_scenario=True)
    public = await sim.ws("/v5/public/linear")
    await public.send_json({"op": "subscribe", "args": ["tickers.BTCUSDT"]})
    await public.receive_json(timeout=TIMEOUT)
    snapshot = await public.receive_json(timeout=TIMEOUT)
    private = await sim.private_ws(topics=["order"])

    sim.clock.advance(10_000)
    delta = await public.receive_json(timeout=TIMEOUT)
    order = await private.receive_json(timeout=TIMEOUT)
    health = await sim.get("/sim/healthz")

    assert snapshot["data"]["markPrice"] == "70000"
    assert (delta["type"], delta["data"]["markPrice"]) == ("delta", "70028")
    assert order["data"][0]["orderLinkId"] == "sample-eth-bid"
    assert (health.body["status"], health.body["cycle"]) == ("ok", 0)


async def test_scenario_fault_entry_disconnects_the_account_at_its_time(
    start_sim: StartSim, kit: Any
) -> None:
    scenario = kit.scenario_yaml(header="faults:\n  - {at_s: 1, kind: disconnect, account: main}\n")
    sim = await start_sim(scenario, run_scenario=True)
    ws = await sim.private_ws()

    sim.clock.advance(1000)
    closing = await ws.receive(timeout=TIMEOUT)

    assert closing.type.name in {"CLOSE", "CLOSED", "CLOSING"}
