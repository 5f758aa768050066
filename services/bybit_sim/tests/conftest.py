"""Fixtures for the simulator tests: a manual clock, scenarios, and a real local server with
a minimal Bybit-signing client (the ingestor has its own client; this one only serves tests).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from bybit_sim.clock import ManualClock
from bybit_sim.scenario import Scenario, load_scenario, parse_scenario
from bybit_sim.server import SIM_KEY, SimOptions, Simulator, build_app

START_MS = 1_750_000_000_000
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
WS_TIMEOUT_S = 5.0

MAIN_KEY, MAIN_SECRET = "sim-main-key", "sim-main-secret"


def hmac_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def rest_headers(
    key: str, secret: str, query: str, *, ts: int, recv: str = "5000"
) -> dict[str, str]:
    """Bybit v5 GET signing: timestamp + key + recvWindow + query string as sent."""
    return {
        "X-BAPI-API-KEY": key,
        "X-BAPI-TIMESTAMP": str(ts),
        "X-BAPI-RECV-WINDOW": recv,
        "X-BAPI-SIGN": hmac_hex(secret, f"{ts}{key}{recv}{query}"),
    }


def ws_auth(key: str, secret: str, expires: int, req_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "op": "auth",
        "args": [key, expires, hmac_hex(secret, f"GET/realtime{expires}")],
    }
    if req_id is not None:
        message["req_id"] = req_id
    return message


TIER_ROWS = """
      - {id: 1, riskLimitValue: "1000000", maintenanceMargin: "0.005", initialMargin: "0.01", maxLeverage: "100.00", mmDeduction: "", isLowestRisk: 1}
      - {id: 2, riskLimitValue: "2600000", maintenanceMargin: "0.0056", initialMargin: "0.0111", maxLeverage: "90.00", mmDeduction: "600", isLowestRisk: 0}
      - {id: 3, riskLimitValue: "3200000", maintenanceMargin: "0.0062", initialMargin: "0.0125", maxLeverage: "80.00", mmDeduction: "2160", isLowestRisk: 0}
"""  # noqa: E501 - one Bybit row per line reads like the API response


def symbol_yaml(symbol: str, start: str = "100", extra: str = "") -> str:
    return f"""
  - symbol: {symbol}
    tick_size: 0.1
    tiers:{TIER_ROWS}    price:
      start: {start}
{extra}"""


def scenario_yaml(
    *,
    symbols: str = symbol_yaml("BTCUSDT", "70000"),
    accounts: str = "",
    timeline: str = "",
    header: str = "",
) -> Scenario:
    text = f"""
name: inline
{header}
symbols:{symbols}
accounts:
  - name: main
    api_key: {MAIN_KEY}
    api_secret: {MAIN_SECRET}
    wallet_balance: 50000
    positions:
      - {{symbol: BTCUSDT, side: Buy, size: 1, entry_price: 60000, leverage: 10}}
{accounts}
timeline:
{timeline or "  []"}
"""
    return parse_scenario(text)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START_MS)


@pytest.fixture
def sample_scenario() -> Scenario:
    return load_scenario(SCENARIOS / "sample_portfolio.yaml")


@pytest.fixture
def drift_scenario() -> Scenario:
    return load_scenario(SCENARIOS / "drift_to_liquidation.yaml")


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class SimHandle:
    """A running simulator on a real local port and a client session talking to it."""

    app: web.Application
    server: TestServer
    session: aiohttp.ClientSession
    clock: ManualClock

    @property
    def sim(self) -> Simulator:
        return self.app[SIM_KEY]

    def url(self, path_and_query: str) -> URL:
        # encoded=True: send the query byte for byte as signed (no client re-encoding).
        return URL(str(self.server.make_url("/")).rstrip("/") + path_and_query, encoded=True)

    async def get(
        self, path: str, query: str = "", headers: dict[str, str] | None = None
    ) -> Response:
        target = self.url(f"{path}?{query}" if query else path)
        async with self.session.get(target, headers=headers) as resp:
            return Response(resp.status, orjson.loads(await resp.read()), dict(resp.headers))

    async def get_private(
        self,
        path: str,
        query: str,
        *,
        key: str = MAIN_KEY,
        secret: str = MAIN_SECRET,
        ts: int | None = None,
    ) -> Response:
        stamp = self.clock.now_ms() if ts is None else ts
        return await self.get(path, query, rest_headers(key, secret, query, ts=stamp))

    async def post(self, path: str, body: dict[str, Any]) -> Response:
        async with self.session.post(self.url(path), data=orjson.dumps(body)) as resp:
            return Response(resp.status, orjson.loads(await resp.read()), dict(resp.headers))

    async def ws(self, path: str) -> aiohttp.ClientWebSocketResponse:
        return await self.session.ws_connect(self.url(path), autoping=True)

    async def private_ws(
        self, key: str = MAIN_KEY, secret: str = MAIN_SECRET, topics: list[str] | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        ws = await self.ws("/v5/private")
        await ws.send_json(ws_auth(key, secret, self.clock.now_ms() + 10_000))
        ack = await ws.receive_json(timeout=WS_TIMEOUT_S)
        assert ack["success"] is True, ack
        if topics:
            await ws.send_json({"op": "subscribe", "args": topics})
            ack = await ws.receive_json(timeout=WS_TIMEOUT_S)
            assert ack["success"] is True, ack
        return ws


StartSim = Callable[..., Awaitable[SimHandle]]


class Kit:
    """Helpers for test modules; pytest's importlib mode does not let them import conftest."""

    MAIN_KEY = MAIN_KEY
    MAIN_SECRET = MAIN_SECRET
    START_MS = START_MS
    SCENARIOS = SCENARIOS
    rest_headers = staticmethod(rest_headers)
    ws_auth = staticmethod(ws_auth)
    hmac_hex = staticmethod(hmac_hex)
    scenario_yaml = staticmethod(scenario_yaml)
    symbol_yaml = staticmethod(symbol_yaml)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture
async def start_sim(clock: ManualClock) -> AsyncIterator[StartSim]:
    handles: list[SimHandle] = []

    async def start(scenario: Scenario, **options: Any) -> SimHandle:
        options.setdefault("run_scenario", False)
        app = build_app(scenario, clock=clock, options=SimOptions(**options), run_id="t")
        server = TestServer(app)
        await server.start_server()
        handle = SimHandle(app, server, aiohttp.ClientSession(), clock)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        await handle.session.close()
        await handle.server.close()
