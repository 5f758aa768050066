"""GET /v5/execution/list over a real local socket, and the execution/order ground truth."""

from __future__ import annotations

from typing import Any

import aiohttp

from bybit_sim.scenario import Scenario

# Fixture types live in conftest.py, which test modules cannot import (importlib mode).
StartSim = Any
TIMEOUT = 5.0
EXECUTIONS = "/v5/execution/list"
DAY_MS = 24 * 3600 * 1000
ABORTED = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.ERROR,
)
# docs/bybit-v5.md §3.6 execution row, minus `category` (REST names it beside the list).
REST_EXECUTION_FIELDS = {
    "symbol", "closedSize", "execFee", "execId", "execPrice", "execQty", "execType",
    "execValue", "feeRate", "tradeIv", "markIv", "blockTradeId", "markPrice", "indexPrice",
    "underlyingPrice", "leavesQty", "orderId", "orderLinkId", "orderPrice", "orderQty",
    "orderType", "stopOrderType", "side", "execTime", "isLeverage", "isMaker", "seq",
    "marketUnit", "execPnl", "createType", "extraFees", "feeCurrency",
}  # fmt: skip


async def place(sim: Any, **kw: Any) -> str:
    body = {"action": "place_order", "account": "main", "symbol": "BTCUSDT", "side": "Buy",
            "qty": "0.3", "price": "69000"}  # fmt: skip
    body.update(kw)
    resp = await sim.post("/sim/action", body)
    assert resp.body["ok"], resp.body
    return str(resp.body["orderId"])


async def fill(sim: Any, order_id: str, qty: str | None = None) -> None:
    body = {"action": "fill_order", "account": "main", "order_id": order_id}
    if qty is not None:
        body["qty"] = qty
    resp = await sim.post("/sim/action", body)
    assert resp.body["ok"], resp.body


async def executions(sim: Any, query: str) -> Any:
    return await sim.get_private(EXECUTIONS, f"category=linear&{query}".rstrip("&"))


async def test_execution_list_row_is_the_ws_execution_row_without_category(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(topics=["execution"])
    order_id = await place(sim)

    await fill(sim, order_id, "0.1")
    pushed = (await ws.receive_json(timeout=TIMEOUT))["data"][0]
    resp = await executions(sim, "")

    assert resp.body["retCode"] == 0
    result = resp.body["result"]
    assert (result["category"], result["nextPageCursor"]) == ("linear", "")
    (row,) = result["list"]
    assert set(row) == REST_EXECUTION_FIELDS
    assert row == {k: v for k, v in pushed.items() if k != "category"}
    assert (row["orderId"], row["execQty"], row["execType"]) == (order_id, "0.1", "Trade")
    # Signed and counted per UID and endpoint like every private call.
    assert (resp.headers["X-Bapi-Limit"], resp.headers["X-Bapi-Limit-Status"]) == ("50", "49")


async def test_execution_list_pages_newest_first_through_the_cursor(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    order_id = await place(sim)
    for _ in range(3):
        sim.clock.advance(10)
        await fill(sim, order_id, "0.1")

    first = await executions(sim, "limit=2")
    cursor = first.body["result"]["nextPageCursor"]
    second = await executions(sim, f"cursor={cursor}&limit=2")

    times = [r["execTime"] for r in first.body["result"]["list"]]
    times += [r["execTime"] for r in second.body["result"]["list"]]
    start = sim.clock.now_ms()
    assert times == [str(start), str(start - 10), str(start - 20)]
    assert "%3D" in cursor
    assert second.body["result"]["nextPageCursor"] == ""


async def test_execution_list_orders_fills_at_the_same_ms_by_exec_id_descending(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    order_id = await place(sim)
    for _ in range(3):
        await fill(sim, order_id, "0.1")

    resp = await executions(sim, "")

    ids = [r["execId"] for r in resp.body["result"]["list"]]
    assert len(ids) == 3
    assert ids == sorted(ids, reverse=True)


async def test_execution_list_filters_by_symbol_order_id_and_exec_type(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    btc = await place(sim)
    eth = await place(sim, symbol="ETHUSDT", qty="1", price="3000")
    await fill(sim, btc)
    await fill(sim, eth)

    by_symbol = await executions(sim, "symbol=ETHUSDT")
    by_order = await executions(sim, f"orderId={btc}")
    by_type = await executions(sim, "execType=Funding")
    unknown_symbol = await executions(sim, "symbol=NOPEUSDT")

    assert [r["orderId"] for r in by_symbol.body["result"]["list"]] == [eth]
    assert [r["symbol"] for r in by_order.body["result"]["list"]] == ["BTCUSDT"]
    assert by_type.body["result"]["list"] == []
    assert unknown_symbol.body["retCode"] == 10001


async def test_execution_list_time_window_defaults_to_the_last_7_days(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    order_id = await place(sim)
    old_ms = sim.clock.now_ms()
    await fill(sim, order_id, "0.1")
    sim.clock.advance(8 * DAY_MS)
    await fill(sim, order_id, "0.1")

    default = await executions(sim, "")
    from_start = await executions(sim, f"startTime={old_ms}")
    up_to_end = await executions(sim, f"endTime={old_ms}")
    both = await executions(sim, f"endTime={sim.clock.now_ms()}&startTime={old_ms + DAY_MS}")

    def times(resp: Any) -> list[str]:
        return [r["execTime"] for r in resp.body["result"]["list"]]

    assert times(default) == [str(sim.clock.now_ms())]
    assert times(from_start) == [str(old_ms)]
    assert times(up_to_end) == [str(old_ms)]
    assert times(both) == [str(sim.clock.now_ms())]


async def test_execution_list_refuses_bad_parameters_with_10001(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    now = sim.clock.now_ms()

    too_wide = await executions(sim, f"endTime={now}&startTime={now - 7 * DAY_MS - 1}")
    exactly_7_days = await executions(sim, f"endTime={now}&startTime={now - 7 * DAY_MS}")
    reversed_window = await executions(sim, f"endTime={now - 1}&startTime={now}")
    no_category = await sim.get_private(EXECUTIONS, "")
    limits = [await executions(sim, f"limit={n}") for n in (0, 1, 100, 101)]

    assert too_wide.body["retCode"] == 10001
    assert exactly_7_days.body["retCode"] == 0
    assert reversed_window.body["retCode"] == 10001
    assert no_category.body["retCode"] == 10001
    assert [r.body["retCode"] for r in limits] == [10001, 0, 0, 10001]


async def test_execution_list_is_private(start_sim: StartSim, sample_scenario: Scenario) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get(EXECUTIONS, "category=linear")

    assert resp.status == 401


async def test_ground_truth_lists_every_execution_including_those_made_while_disconnected(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(topics=["execution"])
    order_id = await place(sim)
    await fill(sim, order_id, "0.1")
    seen = (await ws.receive_json(timeout=TIMEOUT))["data"][0]["execId"]

    await sim.post("/sim/fault", {"kind": "disconnect", "account": "main", "abrupt": True})
    assert (await ws.receive(timeout=TIMEOUT)).type in ABORTED
    sim.clock.advance(10)
    await fill(sim, order_id, "0.1")
    sim.clock.advance(10)
    await fill(sim, order_id)
    truth = await sim.get("/sim/ground-truth", "account=main")
    listed = await executions(sim, "")

    (account,) = truth.body["accounts"]
    assert account["executions"][0] == seen
    assert len(account["executions"]) == 3
    # In the order made; the REST list is newest first.
    assert account["executions"] == [r["execId"] for r in listed.body["result"]["list"]][::-1]
    assert len(set(account["executions"])) == 3


async def test_ground_truth_reports_final_states_of_closed_orders(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    filled = await place(sim, order_link_id="f")
    cancelled = await place(sim, order_link_id="c")
    still_open = await place(sim, order_link_id="o")
    await fill(sim, filled, "0.1")
    await fill(sim, filled)
    await fill(sim, cancelled, "0.1")
    await sim.post(
        "/sim/action", {"action": "cancel_order", "account": "main", "order_id": cancelled}
    )

    truth = await sim.get("/sim/ground-truth", "account=main")

    (account,) = truth.body["accounts"]
    closed = {o["orderId"]: o for o in account["closedOrders"]}
    assert [o["orderId"] for o in account["closedOrders"]] == [filled, cancelled]
    assert (closed[filled]["orderStatus"], closed[filled]["cumExecQty"]) == ("Filled", "0.3")
    assert (closed[cancelled]["orderStatus"], closed[cancelled]["cumExecQty"]) == (
        "Cancelled",
        "0.1",
    )
    assert closed[filled]["orderLinkId"] == "f"
    assert [o["orderId"] for o in account["orders"]] == [still_open]
    # The keys the ground truth had before stay as they were.
    assert {"positions", "orders", "wallet", "risk", "riskEvents", "accountType"} <= set(account)
