"""malformed_next: corrupted private frames over a real socket, each followed by the real one;
plus the pure fault bookkeeping and corruption."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import orjson
import pytest

from bybit_sim.faults import UNKNOWN_TOPIC, FaultState, corrupt
from bybit_sim.scenario import Fault, Scenario

# Fixture types live in conftest.py, which test modules cannot import (importlib mode).
StartSim = Any
TIMEOUT = 5.0


def place_body(**kw: Any) -> dict[str, Any]:
    body = {"action": "place_order", "account": "main", "symbol": "BTCUSDT", "side": "Buy",
            "qty": "0.1", "price": "69000"}  # fmt: skip
    body.update(kw)
    return body


async def test_malformed_next_sends_each_corruption_variant_then_the_real_frame(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(topics=["order", "position", "execution", "wallet"])

    armed = await sim.post("/sim/fault", {"kind": "malformed_next", "account": "main", "count": 3})
    placed = await sim.post("/sim/action", place_body())
    filled = await sim.post(
        "/sim/action",
        {"action": "fill_order", "account": "main", "order_id": placed.body["orderId"]},
    )
    texts = [await ws.receive_str(timeout=TIMEOUT) for _ in range(9)]
    log = await sim.get("/sim/frames", "account=main")

    assert armed.body["faults"]["malformed_next"] == {"main": 3}
    truncated = texts[0]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(truncated)
    unknown, missing = orjson.loads(texts[2]), orjson.loads(texts[4])
    real = [orjson.loads(t) for t in (texts[1], *texts[3:4], *texts[5:])]
    ids = placed.body["frames"] + filled.body["frames"]
    # Every real frame still arrives, in order, after its corrupted copy.
    assert [m["id"] for m in real] == ids
    assert [m["topic"] for m in real] == [
        "order", "position", "execution", "order", "position", "wallet",
    ]  # fmt: skip
    assert truncated.startswith('{"id":')
    assert (unknown["topic"], unknown["id"]) == (UNKNOWN_TOPIC, f"{ids[1]}-malformed")
    assert unknown["data"] == real[1]["data"]
    assert (missing["topic"], missing["id"]) == ("execution", f"{ids[2]}-malformed")
    assert not {"execId", "execQty"} & missing["data"][0].keys()
    assert missing["data"][0]["orderId"] == placed.body["orderId"]
    assert [f["fault"] for f in log.body["frames"]] == [
        "malformed_truncated", "malformed_unknown_topic", "malformed_missing_field",
        None, None, None,
    ]  # fmt: skip
    assert (await sim.get("/sim/faults")).body["malformed_next"] == {}


async def test_malformed_next_on_categorised_topics_keeps_the_categorised_name(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(topics=["order.linear", "position.linear"])
    # Two corruptions: the second (unknown topic) lands on the position frame; skip the first.
    await sim.post("/sim/fault", {"kind": "malformed_next", "account": "main", "count": 2})

    await sim.post("/sim/action", place_body())
    texts = [await ws.receive_str(timeout=TIMEOUT) for _ in range(4)]

    assert [orjson.loads(t)["topic"] for t in texts[1:]] == [
        "order.linear",
        UNKNOWN_TOPIC,
        "position.linear",
    ]


async def test_malformed_next_for_another_account_leaves_this_stream_clean(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    ws = await sim.private_ws(topics=["order", "position"])

    await sim.post("/sim/fault", {"kind": "malformed_next", "account": "sub_hedge", "count": 5})
    placed = await sim.post("/sim/action", place_body())
    received = [await ws.receive_json(timeout=TIMEOUT) for _ in range(2)]

    assert [m["id"] for m in received] == placed.body["frames"]


def test_fault_state_cycles_malformed_variants_and_clear_stops_them() -> None:
    state = FaultState()
    state.arm(Fault(kind="malformed_next", account="a", count=4), now_ms=0)

    taken = [state.take_malformed("a") for _ in range(4)]
    after = state.take_malformed("a")
    state.arm(Fault(kind="malformed_next", count=2), now_ms=0)
    other = state.take_malformed("b")
    state.arm(Fault(kind="clear"), now_ms=0)

    assert taken == ["truncated", "unknown_topic", "missing_field", "truncated"]
    assert after is None
    assert other == "truncated"
    assert state.take_malformed("b") is None


def test_fault_state_ip_ban_defaults_to_600_s_and_expires() -> None:
    state = FaultState()
    state.arm(Fault(kind="ip_ban"), now_ms=1000)
    state_short = FaultState()
    state_short.arm(Fault(kind="ip_ban", duration_s=D("1.5")), now_ms=1000)

    assert state.ip_ban_until(600_999) == 601_000
    assert state.ip_ban_until(601_000) is None
    assert state_short.ip_ban_until(2_499) == 2_500
    assert state_short.ip_ban_until(2_500) is None


@pytest.mark.parametrize(
    ("topic", "row", "dropped"),
    [
        ("position", {"symbol": "BTCUSDT", "size": "1", "seq": 1}, {"symbol", "size"}),
        ("order", {"orderId": "o", "orderStatus": "New", "qty": "1"}, {"orderId", "orderStatus"}),
        ("execution", {"execId": "e", "execQty": "1", "orderId": "o"}, {"execId", "execQty"}),
        (
            "wallet",
            {"totalWalletBalance": "1", "accountMMRate": "0", "totalEquity": "1"},
            {"totalWalletBalance", "accountMMRate"},
        ),
    ],
)
def test_corrupt_missing_field_drops_the_rows_identity_of_each_topic(
    topic: str, row: dict[str, object], dropped: set[str]
) -> None:
    message = {"id": "f1", "topic": f"{topic}.x", "creationTime": 1, "data": [row]}

    bad = orjson.loads(corrupt(message, topic, "missing_field"))

    assert bad["topic"] == f"{topic}.x"
    assert bad["data"] == [{k: v for k, v in row.items() if k not in dropped}]
    assert bad["id"] == "f1-malformed"
    # The real message is untouched, so it can still be sent afterwards.
    assert message["data"] == [row]
