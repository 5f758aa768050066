"""Bybit v5 exchange simulator: a pure exchange core behind a real REST/WebSocket server.

Typical wiring (the service's __main__ builds settings and runs this):

    scenario = load_scenario("services/bybit_sim/scenarios/sample_portfolio.yaml")
    app = build_app(scenario, clock=SystemClock(), options=SimOptions(...))
    web.run_app(app, host=..., port=...)
"""

from bybit_sim.clock import Clock, ManualClock, SystemClock
from bybit_sim.exchange import Exchange, ExchangeError, PrivateFrame
from bybit_sim.runner import ScenarioDriver, StepResult, run_scenario
from bybit_sim.scenario import Scenario, load_scenario, parse_scenario
from bybit_sim.server import SIM_KEY, SimOptions, Simulator, build_app

__all__ = [
    "SIM_KEY",
    "Clock",
    "Exchange",
    "ExchangeError",
    "ManualClock",
    "PrivateFrame",
    "Scenario",
    "ScenarioDriver",
    "SimOptions",
    "Simulator",
    "StepResult",
    "SystemClock",
    "build_app",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
]
