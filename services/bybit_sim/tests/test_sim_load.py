"""The load scenario: its frame rate and its breaches, counted on the exchange core."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from bybit_sim.exchange import Exchange
from bybit_sim.load import LoadPlan, api_key, load_scenario_text
from bybit_sim.runner import ScenarioDriver
from bybit_sim.scenario import parse_scenario

START = 1_750_000_000_000


def _run(
    plan: LoadPlan, until_ms: int, step_ms: int = 10
) -> tuple[Exchange, Counter[str], list[str]]:
    scenario = parse_scenario(load_scenario_text(plan))
    now = [START]
    exchange = Exchange(scenario, now_ms=lambda: now[0], run_id="t")
    driver = ScenarioDriver(scenario, exchange, start_ms=START)
    topics: Counter[str] = Counter()
    errors: list[str] = []
    for t in range(step_ms, until_ms + 1, step_ms):
        now[0] = START + t
        result = driver.advance_to(now[0])
        topics.update(f.topic for f in result.frames)
        errors.extend(result.errors)
    return exchange, topics, errors


def test_load_scenario_sends_the_planned_private_frames_each_cycle() -> None:
    plan = LoadPlan()
    _, topics, errors = _run(plan, plan.cycle_s * 1000 - 1, step_ms=1)

    assert errors == []
    assert sum(topics.values()) == plan.private_frames_per_cycle
    # with the ticker deltas, the rate asked for (to the rounding of churn pairs)
    rate = plan.private_frames_per_cycle / plan.cycle_s + plan.ticker_frames_per_s
    assert abs(rate - plan.frames_per_s) <= 1
    # mostly order and position frames; each breach adds two fills
    assert topics["execution"] == topics["wallet"] == 2 * plan.accounts
    assert topics["order"] == topics["position"] > 0.9 * sum(topics.values()) / 2


def test_load_scenario_breach_takes_net_exposure_over_10000_usd_and_back() -> None:
    plan = LoadPlan(accounts=4, frames_per_s=200, cycle_s=4)
    exchange, _, errors = _run(plan, 1900)  # every account's breach open, none closed yet

    def net(account: str) -> Decimal:
        total = Decimal(0)
        for p in exchange.accounts[account].positions.values():
            value = p.size * exchange.markets[p.symbol].mark_price
            total += value if p.side == "Buy" else -value
        return total

    assert errors == []
    names = plan.account_names()
    assert all(net(a) > 10_000 for a in names)
    assert exchange.account_for_key(api_key(names[0])) is not None

    exchange, _, errors = _run(plan, 3995)  # every breach and churn order closed again
    assert errors == []
    assert all(abs(net(a)) < 1_000 for a in names)
    assert not any(exchange.accounts[a].open_orders for a in names)
