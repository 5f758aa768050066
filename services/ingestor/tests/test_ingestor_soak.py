"""Acceptance (issue 3): 20 accounts under forced disconnects, duplicated and reordered frames.

While orders are placed, amended, filled and cancelled across every account, some account is
disconnected every 10 s (half of them with frames lost beforehand), and frames are
duplicated and reordered; every disconnect comes with fills the stream cannot deliver (made
while the frames are lost, or while the socket is down). At the end the state a consumer
folds from Kafka must equal the simulator's ground truth for every account, symbol and
order; every fill the exchange made must be on Kafka under exactly one event id (the
resync's execution backfill recovers the ones the stream lost), and every order the exchange
closed, including those opened and closed while the stream was away, must be closed on Kafka
with the exchange's status (``Deactivated`` only if Bybit no longer lists it as closed).

``RISKWATCH_SOAK_SECONDS`` sets the length (default 20 s in the normal suite; the issue's run
is 180 s). Runs shorter than 40 s disconnect every quarter of the run instead of every 10 s,
so they still see several reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ingestor.state import CLOSED_BY_RESYNC
from riskwatch_common.contracts import DataOrigin
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import wait_until
from riskwatch_common.topics import ACCOUNT_EVENTS

pytestmark = pytest.mark.integration

StartSim = Any
RunIngestor = Any
H = Any

SOAK_S = float(os.environ.get("RISKWATCH_SOAK_SECONDS", "20"))
ACCOUNTS = int(os.environ.get("RISKWATCH_SOAK_ACCOUNTS", "20"))

SCENARIO = f"""
name: soak
tick_ms: 100
loop: true
duration_s: 600
symbols:
  - symbol: BTCUSDT
    tick_size: 0.1
    tiers:
      - {{id: 1, riskLimitValue: "1000000", maintenanceMargin: "0.005", initialMargin: "0.01", maxLeverage: "100.00", mmDeduction: "", isLowestRisk: 1}}
      - {{id: 2, riskLimitValue: "2600000", maintenanceMargin: "0.0056", initialMargin: "0.0111", maxLeverage: "90.00", mmDeduction: "600", isLowestRisk: 0}}
    price:
      start: 70000
      random_walk: {{seed: 7, drift: 0, volatility: 0.0003}}
  - symbol: ETHUSDT
    tick_size: 0.01
    tiers:
      - {{id: 1, riskLimitValue: "1000000", maintenanceMargin: "0.005", initialMargin: "0.01", maxLeverage: "100.00", mmDeduction: "", isLowestRisk: 1}}
    price:
      start: 3500
      random_walk: {{seed: 8, drift: 0, volatility: 0.0003}}
accounts:
  - name: main
    api_key: sim-main-key
    api_secret: sim-main-secret
    wallet_balance: 100000
    positions:
      - {{symbol: BTCUSDT, side: Buy, size: 1, entry_price: 69000, leverage: 5}}
many_accounts:
  count: {ACCOUNTS - 1}
  template:
    wallet_balance: 50000
    positions:
      - {{symbol: BTCUSDT, side: Buy, size: 0.05, entry_price: 69500, leverage: 10}}
"""  # noqa: E501 - tier rows read like the API response


class Driver:
    """Random trading across accounts, plus the transport faults."""

    def __init__(self, sim: Any, names: list[str], seed: int = 11) -> None:
        self.sim = sim
        self.names = names
        self.rng = random.Random(seed)
        self.open: dict[str, list[str]] = {n: [] for n in names}
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    async def trade(self) -> None:
        rng = self.rng
        name = rng.choice(self.names)
        orders = self.open[name]
        roll = rng.random()
        if not orders or roll < 0.35:
            symbol = rng.choice(["BTCUSDT", "ETHUSDT"])
            base = 70000 if symbol == "BTCUSDT" else 3500
            side = rng.choice(["Buy", "Sell"])
            price = D(base) * D(rng.choice(["0.9", "0.95", "1.05", "1.1"]))
            res = await self.sim.action(
                action="place_order", account=name, symbol=symbol, side=side,
                qty=rng.choice(["0.01", "0.02", "0.05"]), price=str(price),
            )  # fmt: skip
            orders.append(res["orderId"])
            self._count("place")
            return
        oid = rng.choice(orders)
        if roll < 0.55:
            await self.sim.action(action="amend_order", account=name, order_id=oid,
                                  price=str(D(rng.randint(3000, 80000))))  # fmt: skip
            self._count("amend")
        elif roll < 0.75:
            res = await self.sim.action(action="fill_order", account=name, order_id=oid,
                                        qty="0.01")  # fmt: skip
            self._count("partial_fill")
            if not await self._still_open(name, oid):
                orders.remove(oid)
            del res
        elif roll < 0.88:
            await self.sim.action(action="fill_order", account=name, order_id=oid)
            orders.remove(oid)
            self._count("fill")
        else:
            await self.sim.action(action="cancel_order", account=name, order_id=oid)
            orders.remove(oid)
            self._count("cancel")

    async def _still_open(self, name: str, oid: str) -> bool:
        account = self.sim.sim.exchange.accounts[name]
        return oid in account.open_orders

    async def glitch(self) -> None:
        name = self.rng.choice(self.names)
        if self.rng.random() < 0.5:
            await self.sim.fault(kind="duplicate_next", account=name, count=self.rng.randint(2, 6))
            self._count("duplicate_fault")
        else:
            await self.sim.fault(kind="reorder_next", account=name, count=self.rng.randint(3, 8))
            self._count("reorder_fault")

    async def disconnect(self) -> None:
        name = self.rng.choice(self.names)
        if self.rng.random() < 0.5:
            # lose frames first (the link looks alive but delivers nothing), then drop it
            await self.sim.fault(kind="silence", account=name)
            for _ in range(3):
                await self.trade_on(name)
            await self.fill_while_away(name)
            await self.sim.fault(kind="disconnect", account=name, abrupt=True)
            await self.sim.fault(kind="clear", account=name)
            self._count("silence_then_abort")
        else:
            await self.sim.fault(kind="disconnect", account=name)
            # the ingestor waits at least reconnect_min_s before it reconnects
            await self.fill_while_away(name)
            self._count("disconnect")

    async def fill_while_away(self, name: str) -> None:
        """Fills no stream frame reaches the ingestor with: only the backfill can find them."""
        symbol = self.rng.choice(["BTCUSDT", "ETHUSDT"])
        price = "70000" if symbol == "BTCUSDT" else "3500"
        side = self.rng.choice(["Buy", "Sell"])
        res = await self.sim.action(
            action="place_order", account=name, symbol=symbol, side=side, qty="0.02", price=price,
        )  # fmt: skip
        await self.sim.action(action="fill_order", account=name, order_id=res["orderId"],
                              qty="0.01")  # fmt: skip
        await self.sim.action(action="fill_order", account=name, order_id=res["orderId"])
        self._count("fills_while_away")

    async def trade_on(self, name: str) -> None:
        saved = self.names
        self.names = [name]
        try:
            await self.trade()
        finally:
            self.names = saved


def memory_folded(app: Any, h: H) -> Any:
    """What the ingestor believes now, in the shape of a Kafka fold."""
    f = h.fold([])
    for st in app.streams:
        for (symbol, idx), p in st.state.positions.items():
            f.positions[(st.name, symbol, idx)] = p
        for oid, o in st.state.open_orders.items():
            f.orders[(st.name, oid)] = o
        if st.state.wallet is not None:
            f.wallets[st.name] = st.state.wallet
    return f


def closed_order_mismatches(truth: dict[str, Any], folded: Any) -> tuple[list[str], int]:
    """Orders the exchange closed that Kafka does not show closed the same way, and how many
    Kafka shows only as ``Deactivated``.

    A resync reads the recently closed orders (``openOnly=1``), so an order that closed, or
    opened and closed, while the stream was away reaches Kafka with its real status. Only an
    order that fell out of Bybit's 500 recent closed ones would be inferred ``Deactivated``
    from its absence; that is accepted and counted.
    """
    problems: list[str] = []
    inferred = 0
    for account in truth["accounts"]:
        name = account["account"]
        for want in account["closedOrders"]:
            ev = folded.orders.get((name, want["orderId"]))
            if ev is None:
                problems.append(f"{name} {want['orderId']}: closed on the exchange, not on Kafka")
                continue
            if ev.is_open:
                problems.append(f"{name} {want['orderId']}: {ev.order_status}, exchange closed it")
                continue
            if ev.order_status == CLOSED_BY_RESYNC and ev.origin is DataOrigin.SNAPSHOT:
                inferred += 1
                continue
            got = (ev.order_status, ev.cum_exec_qty)
            expected = (want["orderStatus"], D(want["cumExecQty"]))
            if got != expected:
                problems.append(f"{name} {want['orderId']}: {got} != {expected}")
    return problems, inferred


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_twenty_accounts_survive_disconnects_duplicates_and_reordering(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim(SCENARIO, run_scenario=True)
    names = [a.name for a in sim.scenario.all_accounts()]
    assert len(names) == ACCOUNTS
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", names)
    settings = h.fast_settings(kafka, path, wallet_refresh_s=2.0)
    running = await run_ingestor(settings, h.load(path, env))
    app = running.app
    await wait_until(lambda: app.health.ready, timeout=30, message="all accounts resynced")
    resyncs_before = metric("ingestor_resyncs_total", trigger="connect", outcome="ok")
    backfilled_before = metric("ingestor_executions_backfilled_total")

    driver = Driver(sim, names)
    disconnect_every = 10.0 if SOAK_S >= 40 else SOAK_S / 4
    start = time.monotonic()
    next_glitch = start + 1.0
    next_disconnect = start + disconnect_every
    while (now := time.monotonic()) - start < SOAK_S:
        await driver.trade()
        if now >= next_glitch:
            await driver.glitch()
            next_glitch = now + 1.0
        if now >= next_disconnect:
            await driver.disconnect()
            next_disconnect = now + disconnect_every
        await asyncio.sleep(0.05)
    await sim.fault(kind="clear")  # release frames still held back for reordering

    truth_names = names

    async def settled() -> bool:
        truth = await sim.ground_truth()
        return not h.mismatches(truth, memory_folded(app, h), truth_names)

    async def fills_known() -> bool:
        truth = await sim.ground_truth()
        streams = {st.name: st for st in app.streams}
        return all(
            streams[a["account"]].state.has_execution(e)
            for a in truth["accounts"]
            for e in a["executions"]
        )

    await wait_until(settled, timeout=60, interval=0.5, message="ingestor caught up")
    # The same resync recovers state and fills, so this is normally true at once; if it
    # is not, the assertion on Kafka below names the missing fills.
    with contextlib.suppress(AssertionError):
        await wait_until(fills_known, timeout=10, interval=0.5)
    assert await app.publisher.drain(10)
    published = app.publisher.published_by_topic[ACCOUNT_EVENTS.name]
    folded = await h.read_folded(kafka, min_records=published)
    truth = await sim.ground_truth()
    problems = h.mismatches(truth, folded, names)
    fill_problems = h.execution_mismatches(truth, folded, names)
    closed_problems, closed_inferred = closed_order_mismatches(truth, folded)

    reconnects = metric("ingestor_resyncs_total", trigger="connect", outcome="ok") - resyncs_before
    print(
        f"\nsoak {SOAK_S:.0f}s, {ACCOUNTS} accounts: actions {driver.counts}; "
        f"resyncs after start {reconnects:.0f}; events on Kafka {len(folded.event_ids)}; "
        f"duplicates dropped {metric('ingestor_rows_dropped_total', kind='order', reason='duplicate') + metric('ingestor_rows_dropped_total', kind='position', reason='duplicate'):.0f}; "  # noqa: E501
        f"stale dropped {metric('ingestor_rows_dropped_total', kind='order', reason='stale') + metric('ingestor_rows_dropped_total', kind='position', reason='stale'):.0f}; "  # noqa: E501
        f"open orders {sum(len(a['orders']) for a in truth['accounts'])}; "
        f"fills {sum(len(a['executions']) for a in truth['accounts'])}, backfilled "
        f"{metric('ingestor_executions_backfilled_total') - backfilled_before:.0f}; "
        f"closed orders {sum(len(a['closedOrders']) for a in truth['accounts'])}, "
        f"{closed_inferred} only inferred closed (Deactivated)"
    )
    assert problems == []
    assert fill_problems == []
    assert closed_problems == []
    assert metric("ingestor_executions_backfilled_total") > backfilled_before
    assert len(folded.event_ids) >= published  # later wallet polls may have landed too
    assert len(folded.event_ids) == len(set(folded.event_ids)), "an event id reached Kafka twice"
    assert reconnects >= 3
