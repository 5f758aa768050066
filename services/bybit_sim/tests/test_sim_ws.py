"""WebSocket protocol over real local sockets: auth, subscribe, ping, pushes, tickers, faults."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import aiohttp

from bybit_sim.scenario import Scenario

# Fixture types live in conftest.py, which test modules cannot import (importlib mode).
StartSim = Any
TIMEOUT = 5.0
CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
ABORTED = (*CLOSED, aiohttp.WSMsgType.ERROR)


def place_body(**kw: Any) -> dict[str, Any]:
    body = {"action": "place_order", "account": "main", "symbol": "BTCUSDT", "side": "Buy",
            "qty": "0.1", "price": "69000"}  # fmt: skip
    body.update(kw)
    return body


async def test_private_auth_with_valid_signature_is_acked_with_req_id(
    start_sim: StartSim, sample_scenario: Scenario, kit: Any
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.ws("/v5/private")

    await ws.send_json(
        kit.ws_auth(kit.MAIN_KEY, kit.MAIN_SECRET, sim.clock.now_ms() + 1000, "10001")
    )
    ack = await ws.receive_json(timeout=TIMEOUT)

    assert ack == {
        "success": True,
        "ret_msg": "",
        "op": "auth",
        "conn_id": ack["conn_id"],
        "req_id": "10001",
    }
    assert ack["conn_id"]


async def test_private_auth_with_bad_signature_fails_then_server_closes(
    start_sim: StartSim, sample_scenario: Scenario, kit: Any
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.ws("/v5/private")

    await ws.send_json(kit.ws_auth(kit.MAIN_KEY, "wrong", sim.clock.now_ms() + 1000))
    ack = await ws.receive_json(timeout=TIMEOUT)
    closing = await ws.receive(timeout=TIMEOUT)

    assert (ack["success"], ack["op"]) == (False, "auth")
    assert ack["ret_msg"]
    assert closing.type in CLOSED


async def test_private_auth_with_past_expiry_or_unknown_key_fails(
    start_sim: StartSim, sample_scenario: Scenario, kit: Any
) -> None:
    sim = await start_sim(sample_scenario)
    expired = await sim.ws("/v5/private")
    unknown = await sim.ws("/v5/private")

    await expired.send_json(kit.ws_auth(kit.MAIN_KEY, kit.MAIN_SECRET, sim.clock.now_ms() - 1))
    await unknown.send_json(kit.ws_auth("nope", "x", sim.clock.now_ms() + 1000))

    assert (await expired.receive_json(timeout=TIMEOUT))["success"] is False
    assert (await unknown.receive_json(timeout=TIMEOUT))["ret_msg"] == "Invalid apikey"


async def test_private_subscribe_after_auth_is_acked_and_before_auth_is_refused(
    start_sim: StartSim, sample_scenario: Scenario, kit: Any
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.ws("/v5/private")

    await ws.send_json({"op": "subscribe", "args": ["position"]})
    early = await ws.receive_json(timeout=TIMEOUT)
    await ws.send_json(kit.ws_auth(kit.MAIN_KEY, kit.MAIN_SECRET, sim.clock.now_ms() + 1000))
    await ws.receive_json(timeout=TIMEOUT)
    await ws.send_json(
        {
            "op": "subscribe",
            "args": ["position.linear", "order.linear", "execution.linear", "wallet"],
        }
    )
    ack = await ws.receive_json(timeout=TIMEOUT)

    assert (early["success"], early["ret_msg"]) == (False, "Request not authorized")
    assert ack == {"success": True, "ret_msg": "", "op": "subscribe", "conn_id": ack["conn_id"]}


async def test_private_subscribe_mixing_all_in_one_and_categorised_topics_is_refused(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws()

    await ws.send_json({"op": "subscribe", "args": ["position", "order.linear"]})
    mixed = await ws.receive_json(timeout=TIMEOUT)
    await ws.send_json({"op": "subscribe", "args": ["greeks.linear"]})
    unknown = await ws.receive_json(timeout=TIMEOUT)

    assert mixed["success"] is False
    assert unknown["ret_msg"] == "error:handler not found,topic:greeks.linear"


async def test_private_ping_gets_pong_with_req_id_args_and_conn_id(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws()

    await ws.send_json({"req_id": "p1", "op": "ping"})
    pong = await ws.receive_json(timeout=TIMEOUT)

    assert pong == {
        "req_id": "p1",
        "op": "pong",
        "args": [str(sim.clock.now_ms())],
        "conn_id": pong["conn_id"],
    }


async def test_public_ping_gets_success_pong_with_op_ping(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.ws("/v5/public/linear")

    await ws.send_json({"op": "ping"})
    pong = await ws.receive_json(timeout=TIMEOUT)

    assert pong == {
        "success": True,
        "ret_msg": "pong",
        "conn_id": pong["conn_id"],
        "req_id": "",
        "op": "ping",
    }


async def test_fill_pushes_execution_order_position_wallet_on_categorised_topics(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(
        topics=["position.linear", "order.linear", "execution.linear", "wallet"]
    )
    other = await sim.private_ws("sim-sub-hedge-key", "sim-sub-hedge-secret", ["position", "order"])

    placed = await sim.post("/sim/action", place_body())
    filled = await sim.post(
        "/sim/action",
        {"action": "fill_order", "account": "main", "order_id": placed.body["orderId"]},
    )
    messages = [await ws.receive_json(timeout=TIMEOUT) for _ in range(6)]
    await other.send_json({"req_id": "still-quiet", "op": "ping"})

    assert [m["topic"] for m in messages] == [
        "order.linear", "position.linear",
        "execution.linear", "order.linear", "position.linear", "wallet",
    ]  # fmt: skip
    assert [m["id"] for m in messages] == placed.body["frames"] + filled.body["frames"]
    assert all(set(m) == {"id", "topic", "creationTime", "data"} for m in messages)
    execution, order, position, wallet = (m["data"][0] for m in messages[2:])
    assert execution["execQty"] == "0.1"
    assert order["orderStatus"] == "Filled"
    assert position["seq"] == messages[1]["data"][0]["seq"] + 1
    assert position["size"] == "0.6"
    assert wallet["accountType"] == "UNIFIED"
    # Another account's socket sees none of it.
    assert (await other.receive_json(timeout=TIMEOUT))["req_id"] == "still-quiet"


async def test_all_in_one_subscription_receives_bare_topic_names(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(topics=["order", "position"])

    await sim.post("/sim/action", place_body())

    assert [(await ws.receive_json(timeout=TIMEOUT))["topic"] for _ in range(2)] == [
        "order",
        "position",
    ]


async def test_ticker_subscription_sends_snapshot_then_delta_without_unchanged_fields(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.ws("/v5/public/linear")

    await ws.send_json({"req_id": "t1", "op": "subscribe", "args": ["tickers.BTCUSDT"]})
    ack = await ws.receive_json(timeout=TIMEOUT)
    snapshot = await ws.receive_json(timeout=TIMEOUT)
    sim.sim.exchange.tick_mark_price("BTCUSDT", D("70010"))
    sim.sim.publish_tickers()
    delta = await ws.receive_json(timeout=TIMEOUT)

    assert ack == {
        "success": True,
        "ret_msg": "",
        "conn_id": ack["conn_id"],
        "req_id": "t1",
        "op": "subscribe",
    }
    assert (snapshot["topic"], snapshot["type"]) == ("tickers.BTCUSDT", "snapshot")
    assert {"markPrice", "fundingRate", "openInterest", "volume24h", "nextFundingTime"} <= snapshot[
        "data"
    ].keys()
    assert snapshot["data"]["markPrice"] == "70000"
    assert set(delta) == {"topic", "type", "data", "cs", "ts"}
    assert delta["type"] == "delta"
    assert delta["cs"] > snapshot["cs"]
    data = delta["data"]
    assert (data["symbol"], data["markPrice"], data["lastPrice"], data["tickDirection"]) == (
        "BTCUSDT", "70010", "70010", "PlusTick",
    )  # fmt: skip
    assert (
        not {"fundingRate", "openInterest", "volume24h", "prevPrice24h", "lowPrice24h"}
        & data.keys()
    )


async def test_ticker_subscription_for_unknown_symbol_is_refused(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.ws("/v5/public/linear")

    await ws.send_json({"op": "subscribe", "args": ["tickers.NOPEUSDT"]})
    ack = await ws.receive_json(timeout=TIMEOUT)

    assert (ack["success"], ack["ret_msg"]) == (
        False,
        "error:handler not found,topic:tickers.NOPEUSDT",
    )


async def test_ticker_unsubscribe_stops_deltas(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.ws("/v5/public/linear")
    await ws.send_json({"op": "subscribe", "args": ["tickers.BTCUSDT"]})
    await ws.receive_json(timeout=TIMEOUT)
    await ws.receive_json(timeout=TIMEOUT)

    await ws.send_json({"op": "unsubscribe", "args": ["tickers.BTCUSDT"]})
    ack = await ws.receive_json(timeout=TIMEOUT)
    sim.sim.exchange.tick_mark_price("BTCUSDT", D("70010"))
    sim.sim.publish_tickers()
    await ws.send_json({"req_id": "after", "op": "ping"})

    assert (ack["op"], ack["success"]) == ("unsubscribe", True)
    assert (await ws.receive_json(timeout=TIMEOUT))["req_id"] == "after"


async def test_connection_without_ping_is_closed_after_idle_timeout(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario, idle_timeout_s=0.2)
    ws = await sim.private_ws()

    closing = await ws.receive(timeout=TIMEOUT)

    assert closing.type in CLOSED


async def test_disconnect_fault_closes_only_that_accounts_socket(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    main = await sim.private_ws()
    other = await sim.private_ws("sim-sub-hedge-key", "sim-sub-hedge-secret")

    await sim.post("/sim/fault", {"kind": "disconnect", "account": "main"})
    closing = await main.receive(timeout=TIMEOUT)
    await other.send_json({"req_id": "alive", "op": "ping"})

    assert closing.type in CLOSED
    assert (await other.receive_json(timeout=TIMEOUT))["req_id"] == "alive"


async def test_abrupt_disconnect_fault_drops_the_socket_without_close_frame(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws()

    await sim.post("/sim/fault", {"kind": "disconnect", "account": "main", "abrupt": True})
    dropped = await ws.receive(timeout=TIMEOUT)

    assert dropped.type in ABORTED
    assert ws.close_code != 1000


async def test_silence_fault_drops_pongs_and_frames_until_cleared(
    start_sim: StartSim, sample_scenario: Scenario, kit: Any
) -> None:
    sim = await start_sim(sample_scenario)
    # autoping off: protocol pongs arrive as messages, so their absence is observable.
    ws = await sim.session.ws_connect(sim.url("/v5/private"), autoping=False)
    await ws.send_json(kit.ws_auth(kit.MAIN_KEY, kit.MAIN_SECRET, sim.clock.now_ms() + 1000))
    await ws.receive_json(timeout=TIMEOUT)
    await ws.send_json({"op": "subscribe", "args": ["order", "position"]})
    await ws.receive_json(timeout=TIMEOUT)

    await sim.post("/sim/fault", {"kind": "silence", "account": "main"})
    await ws.send_json({"req_id": "lost", "op": "ping"})
    await ws.ping(b"lost")
    await sim.post("/sim/action", place_body())
    await sim.post("/sim/fault", {"kind": "clear", "account": "main"})
    await ws.ping(b"heard")
    protocol_pong = await ws.receive(timeout=TIMEOUT)
    await ws.send_json({"req_id": "heard", "op": "ping"})
    json_pong = await ws.receive_json(timeout=TIMEOUT)
    log = await sim.get("/sim/frames", "account=main")

    assert (protocol_pong.type, protocol_pong.data) == (aiohttp.WSMsgType.PONG, b"heard")
    assert json_pong["req_id"] == "heard"
    assert [f["fault"] for f in log.body["frames"]] == ["silenced", "silenced"]


async def test_duplicate_next_fault_sends_the_next_frame_twice(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(topics=["order", "position"])

    await sim.post("/sim/fault", {"kind": "duplicate_next", "account": "main", "count": 1})
    await sim.post("/sim/action", place_body())
    received = [await ws.receive_json(timeout=TIMEOUT) for _ in range(3)]

    assert [m["topic"] for m in received] == ["order", "order", "position"]
    assert received[0] == received[1]


async def test_reorder_next_fault_delivers_the_next_frames_reversed(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(topics=["order", "position"])

    await sim.post("/sim/fault", {"kind": "reorder_next", "account": "main", "count": 2})
    placed = await sim.post("/sim/action", place_body())
    received = [await ws.receive_json(timeout=TIMEOUT) for _ in range(2)]

    assert [m["id"] for m in received] == list(reversed(placed.body["frames"]))


async def test_auth_fail_fault_rejects_only_the_next_auth(
    start_sim: StartSim, sample_scenario: Scenario, kit: Any
) -> None:
    sim = await start_sim(sample_scenario)
    await sim.post("/sim/fault", {"kind": "auth_fail", "account": "main"})
    first = await sim.ws("/v5/private")

    await first.send_json(kit.ws_auth(kit.MAIN_KEY, kit.MAIN_SECRET, sim.clock.now_ms() + 1000))
    refused = await first.receive_json(timeout=TIMEOUT)
    second = await sim.private_ws()

    assert refused["success"] is False
    assert not second.closed


async def test_frames_log_counts_subscribed_connections(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(topics=["order"])

    await sim.post("/sim/action", place_body())
    log = await sim.get("/sim/frames", "account=main&full=1")

    order, position = log.body["frames"]
    assert (order["topic"], order["subscribers"]) == ("order", 1)
    assert (position["topic"], position["subscribers"]) == ("position", 0)
    assert order["frame"]["data"][0]["orderStatus"] == "New"
    assert (await ws.receive_json(timeout=TIMEOUT))["topic"] == "order"
