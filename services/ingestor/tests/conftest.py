"""Fixtures for ingestor tests: the Bybit simulator on a real local port, and accounts files.

The simulator runs in the test's event loop (aiohttp TestServer) on the system clock, since
the ingestor signs with real time. Test modules cannot import this file (importlib mode), so
helpers are handed out through fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from bybit_sim.scenario import Scenario, load_scenario, parse_scenario
from bybit_sim.server import SIM_KEY, SimOptions, Simulator, build_app
from ingestor.accounts import GroupConfig, load_group
from ingestor.app import Ingestor
from ingestor.settings import IngestorSettings
from riskwatch_common.contracts import (
    AccountStatusChanged,
    ExecutionReported,
    OrderUpdated,
    PositionUpdated,
    WalletUpdated,
)
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import read_topic
from riskwatch_common.topics import ACCOUNT_EVENTS

SCENARIOS = Path(__file__).resolve().parents[2] / "bybit_sim" / "scenarios"


@dataclass
class SimHandle:
    app: Any
    server: TestServer
    session: aiohttp.ClientSession
    scenario: Scenario

    @property
    def sim(self) -> Simulator:
        return self.app[SIM_KEY]

    @property
    def base(self) -> str:
        return str(self.server.make_url("/")).rstrip("/")

    @property
    def ws_base(self) -> str:
        return self.base.replace("http://", "ws://", 1)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.base + path, data=orjson.dumps(body)) as resp:
            doc = orjson.loads(await resp.read())
            assert resp.status == 200, doc
            return doc  # type: ignore[no-any-return]

    async def action(self, **body: Any) -> dict[str, Any]:
        return await self.post("/sim/action", body)

    async def fault(self, **body: Any) -> dict[str, Any]:
        return await self.post("/sim/fault", body)

    async def ground_truth(self) -> dict[str, Any]:
        async with self.session.get(self.base + "/sim/ground-truth") as resp:
            return orjson.loads(await resp.read())  # type: ignore[no-any-return]

    def private_connections(self, account: str) -> list[Any]:
        return [c for c in self.sim.connections if c.kind == "private" and c.account == account]

    def accounts_yaml(
        self,
        path: Path,
        names: list[str],
        *,
        group: str = "g",
        secrets: dict[str, str] | None = None,
    ) -> tuple[Path, dict[str, str]]:
        """An accounts file for ``names`` against this sim, and the env it reads keys from."""
        specs = {a.name: a for a in self.scenario.all_accounts()}
        env: dict[str, str] = {}
        lines = [
            "simulator:",
            f"  rest_url: {self.base}",
            f"  ws_private_url: {self.ws_base}/v5/private",
            f"  ws_public_url: {self.ws_base}/v5/public/linear",
            "accounts:",
        ]
        for i, name in enumerate(names):
            spec = specs[name]
            env[f"K{i}"] = spec.api_key
            env[f"S{i}"] = (secrets or {}).get(name, spec.api_secret.get_secret_value())
            lines += [
                f"  - name: {name}",
                f"    group: {group}",
                f"    account_type: {spec.account_type}",
                f"    position_mode: {spec.position_mode}",
                "    environment: simulator",
                f"    credentials: {{api_key_env: K{i}, api_secret_env: S{i}}}",
            ]
        path.write_text("\n".join(lines) + "\n")
        return path, env


StartSim = Callable[..., Awaitable[SimHandle]]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    handles: list[SimHandle] = []

    async def start(scenario: Scenario | str, **options: Any) -> SimHandle:
        if isinstance(scenario, str):
            scenario = (
                load_scenario(SCENARIOS / scenario)
                if scenario.endswith(".yaml")
                else parse_scenario(scenario)
            )
        options.setdefault("run_scenario", False)
        app = build_app(scenario, options=SimOptions(**options))
        server = TestServer(app)
        await server.start_server()
        handle = SimHandle(app, server, aiohttp.ClientSession(), scenario)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        await handle.session.close()
        await handle.server.close()


def fast_settings(kafka: KafkaSettings, accounts_file: Path, **over: Any) -> IngestorSettings:
    """Settings with short timers so faults show within a test's patience."""
    values: dict[str, Any] = {
        "accounts_file": accounts_file,
        "group": "g",
        "kafka": kafka,
        "http_port": 0,
        "ping_interval_s": 1.0,
        "pong_timeout_s": 3.0,
        "auth_timeout_s": 5.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "auth_retry_s": 300.0,
        "wallet_refresh_s": 1.0,
        "drift_check_s": 0,
        "mark_price_interval_ms": 200,
    }
    values.update(over)
    return IngestorSettings(**values)


@dataclass
class Running:
    app: Ingestor
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def stream(self, name: str) -> Any:
        return next(s for s in self.app.streams if s.name == name)


RunIngestor = Callable[..., Awaitable[Running]]


@pytest.fixture
async def run_ingestor() -> AsyncIterator[RunIngestor]:
    running: list[Running] = []

    async def start(settings: IngestorSettings, group: GroupConfig, **kw: Any) -> Running:
        app = Ingestor(settings, group=group, **kw)
        task = asyncio.create_task(app.run())
        r = Running(app, task)
        running.append(r)
        await asyncio.wait_for(app.started.wait(), 30)
        return r

    yield start
    for r in running:
        await r.stop()


def load(path: Path, env: dict[str, str], group: str = "g") -> GroupConfig:
    return load_group(path, group, env=env)


# ----------------------------------------------------------------------- folding Kafka records


@dataclass
class Folded:
    """The state a consumer of ACCOUNT_EVENTS ends up with, in topic order."""

    positions: dict[tuple[str, str, int], PositionUpdated]
    orders: dict[tuple[str, str], OrderUpdated]
    wallets: dict[str, WalletUpdated]
    statuses: list[AccountStatusChanged]
    event_ids: list[str]
    # (account, execId) -> every event id it reached Kafka with
    executions: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def exec_ids(self, account: str) -> set[str]:
        return {e for a, e in self.executions if a == account}

    def open_positions(self, account: str) -> dict[tuple[str, int], PositionUpdated]:
        return {
            (s, i): p for (a, s, i), p in self.positions.items() if a == account and p.size != 0
        }

    def open_orders(self, account: str) -> dict[str, OrderUpdated]:
        return {o: e for (a, o), e in self.orders.items() if a == account and e.is_open}


def fold(records: list[tuple[bytes | None, bytes]]) -> Folded:
    f = Folded({}, {}, {}, [], [])
    for _, value in records:
        ev = ACCOUNT_EVENTS.decode(value)
        f.event_ids.append(ev.event_id)
        if isinstance(ev, PositionUpdated):
            f.positions[(ev.account, ev.symbol, ev.position_idx)] = ev
        elif isinstance(ev, OrderUpdated):
            f.orders[(ev.account, ev.order_id)] = ev
        elif isinstance(ev, WalletUpdated):
            f.wallets[ev.account] = ev
        elif isinstance(ev, AccountStatusChanged):
            f.statuses.append(ev)
        elif isinstance(ev, ExecutionReported):
            f.executions.setdefault((ev.account, ev.exec_id), set()).add(ev.event_id)
    return f


async def read_folded(kafka: KafkaSettings, min_records: int = 1) -> Folded:
    return fold(await read_topic(kafka, ACCOUNT_EVENTS, min_records=min_records, timeout=30))


def mismatches(truth: dict[str, Any], folded: Folded, accounts: list[str]) -> list[str]:
    """Differences between the sim's ground truth and what Kafka says, per account."""
    problems: list[str] = []
    by_name = {a["account"]: a for a in truth["accounts"]}
    for name in accounts:
        gt = by_name[name]
        want_pos = {
            (p["symbol"], int(p["positionIdx"])): p for p in gt["positions"] if Decimal(p["size"])
        }
        have_pos = folded.open_positions(name)
        if set(want_pos) != set(have_pos):
            problems.append(f"{name}: positions {sorted(have_pos)} != {sorted(want_pos)}")
        for key, p in want_pos.items():
            ev = have_pos.get(key)
            if ev is None:
                continue
            got = (ev.side.value if ev.side else "", ev.size, ev.entry_price, ev.seq)
            want = (p["side"], Decimal(p["size"]), Decimal(p["avgPrice"]), int(p["seq"]))
            if got != want:
                problems.append(f"{name} {key}: position {got} != {want}")
        want_orders = {o["orderId"]: o for o in gt["orders"]}
        have_orders = folded.open_orders(name)
        if set(want_orders) != set(have_orders):
            problems.append(f"{name}: open orders {sorted(have_orders)} != {sorted(want_orders)}")
        for oid, o in want_orders.items():
            ev2 = have_orders.get(oid)
            if ev2 is None:
                continue
            got2 = (ev2.order_status, ev2.qty, ev2.cum_exec_qty, ev2.price)
            want2 = (
                o["orderStatus"],
                Decimal(o["qty"]),
                Decimal(o["cumExecQty"]),
                Decimal(o["price"]),
            )
            if got2 != want2:
                problems.append(f"{name} {oid}: order {got2} != {want2}")
        wallet = folded.wallets.get(name)
        want_balance = Decimal(gt["wallet"]["totalWalletBalance"])
        if wallet is None or wallet.total_wallet_balance != want_balance:
            have = wallet.total_wallet_balance if wallet else None
            problems.append(f"{name}: wallet balance {have} != {want_balance}")
    return problems


def execution_mismatches(truth: dict[str, Any], folded: Folded, accounts: list[str]) -> list[str]:
    """Fills the exchange made that Kafka lacks (or has extra), and fills under two ids."""
    problems: list[str] = []
    by_name = {a["account"]: a for a in truth["accounts"]}
    for name in accounts:
        want = set(by_name[name]["executions"])
        have = folded.exec_ids(name)
        if missing := sorted(want - have):
            problems.append(f"{name}: {len(missing)} fills not on Kafka, e.g. {missing[:3]}")
        if extra := sorted(have - want):
            problems.append(f"{name}: {len(extra)} fills the exchange never made: {extra[:3]}")
    for (name, exec_id), ids in folded.executions.items():
        if name in accounts and len(ids) != 1:
            problems.append(f"{name}: fill {exec_id} under {len(ids)} event ids")
    return problems


class Helpers:
    fast_settings = staticmethod(fast_settings)
    load = staticmethod(load)
    fold = staticmethod(fold)
    read_folded = staticmethod(read_folded)
    mismatches = staticmethod(mismatches)
    execution_mismatches = staticmethod(execution_mismatches)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers
