"""The exchange core on its own: frames, field names, numbers as strings, seq rules."""

from __future__ import annotations

from collections import deque
from decimal import Decimal as D

import pytest

from bybit_sim.exchange import Exchange, ExchangeError, PrivateFrame
from bybit_sim.scenario import (
    AmendOrder,
    CancelOrder,
    FillOrder,
    PlaceOrder,
    Scenario,
    SetPosition,
    SetPrice,
)
from bybit_sim.state import CLOSED_ORDERS_LISTED

START = 1_750_000_000_000

# Field sets from docs/bybit-v5.md §3.6 (linear rows; order rows add createType).
POSITION_WS_FIELDS = {
    "positionIdx", "tradeMode", "riskId", "riskLimitValue", "symbol", "side", "size",
    "entryPrice", "leverage", "breakEvenPrice", "positionValue", "positionBalance", "markPrice",
    "positionIM", "positionIMByMp", "positionMM", "positionMMByMp", "takeProfit", "stopLoss",
    "trailingStop", "unrealisedPnl", "curRealisedPnl", "cumRealisedPnl", "sessionAvgPrice",
    "createdTime", "updatedTime", "tpslMode", "liqPrice", "bustPrice", "category",
    "positionStatus", "adlRankIndicator", "autoAddMargin", "leverageSysUpdatedTime",
    "mmrSysUpdatedTime", "seq", "isReduceOnly",
}  # fmt: skip
ORDER_WS_FIELDS = {
    "symbol", "orderId", "side", "orderType", "cancelType", "price", "qty", "orderIv",
    "timeInForce", "orderStatus", "orderLinkId", "lastPriceOnCreated", "reduceOnly", "leavesQty",
    "leavesValue", "cumExecQty", "cumExecValue", "avgPrice", "blockTradeId", "positionIdx",
    "cumExecFee", "closedPnl", "createdTime", "updatedTime", "rejectReason", "stopOrderType",
    "tpslMode", "triggerPrice", "takeProfit", "stopLoss", "tpTriggerBy", "slTriggerBy",
    "tpLimitPrice", "slLimitPrice", "triggerDirection", "triggerBy", "closeOnTrigger",
    "category", "placeType", "smpType", "smpGroup", "smpOrderId", "feeCurrency", "createType",
}  # fmt: skip
EXECUTION_FIELDS = {
    "category", "symbol", "closedSize", "execFee", "execId", "execPrice", "execQty", "execType",
    "execValue", "feeRate", "tradeIv", "markIv", "blockTradeId", "markPrice", "indexPrice",
    "underlyingPrice", "leavesQty", "orderId", "orderLinkId", "orderPrice", "orderQty",
    "orderType", "stopOrderType", "side", "execTime", "isLeverage", "isMaker", "seq",
    "marketUnit", "execPnl", "createType", "extraFees", "feeCurrency",
}  # fmt: skip
WALLET_FIELDS = {
    "accountIMRate", "accountIMRateByMp", "accountMMRate", "accountMMRateByMp", "totalEquity",
    "totalWalletBalance", "totalMarginBalance", "totalAvailableBalance", "totalPerpUPL",
    "totalInitialMargin", "totalInitialMarginByMp", "totalMaintenanceMargin",
    "totalMaintenanceMarginByMp", "coin", "accountLTV", "accountType",
}  # fmt: skip
NUMERIC_STRINGS = {
    "position": ["size", "entryPrice", "positionValue", "markPrice", "positionIM", "positionMM",
                 "unrealisedPnl", "cumRealisedPnl", "riskLimitValue", "leverage"],
    "order": ["price", "qty", "leavesQty", "cumExecQty", "cumExecValue", "avgPrice"],
    "execution": ["execPrice", "execQty", "execValue", "execFee", "feeRate"],
    "wallet": ["totalEquity", "totalWalletBalance", "totalPerpUPL", "accountMMRate"],
}  # fmt: skip


@pytest.fixture
def exchange(sample_scenario: Scenario) -> Exchange:
    return Exchange(sample_scenario, now_ms=lambda: START + 1000, run_id="run1")


def place(exchange: Exchange, **kw: object) -> tuple[str, list[PrivateFrame]]:
    spec = {
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "Buy",
        "qty": D("0.2"),
        "price": D(69000),
    }
    spec.update(kw)
    result = exchange.place_order(PlaceOrder.model_validate(spec))
    assert result.order_id is not None
    return result.order_id, result.frames


def test_fill_emits_execution_order_position_wallet_frames_with_bybit_fields(
    exchange: Exchange,
) -> None:
    account = exchange.accounts["main"]
    seq_before = account.positions[("BTCUSDT", 0)].seq
    order_id, _ = place(exchange)

    frames = exchange.fill_order(FillOrder(account="main", order_id=order_id)).frames

    assert [f.topic for f in frames] == ["execution", "order", "position", "wallet"]
    execution, order, position, wallet = (f.data[0] for f in frames)
    assert execution.keys() >= EXECUTION_FIELDS
    assert order.keys() >= ORDER_WS_FIELDS
    assert position.keys() >= POSITION_WS_FIELDS
    assert wallet.keys() >= WALLET_FIELDS
    assert order["orderStatus"] == "Filled"
    assert order["leavesQty"] == "0"
    assert position["size"] == "0.7"
    # (0.5 × 67,500 + 0.2 × 69,000) / 0.7
    assert position["entryPrice"] == "67928.57142857"
    assert position["seq"] == seq_before + 1
    assert execution["seq"] == position["seq"]
    assert execution["execQty"] == "0.2"
    assert execution["isMaker"] is True
    assert wallet["accountType"] == "UNIFIED"
    for frame in frames:
        row = frame.data[0]
        for name in NUMERIC_STRINGS[frame.topic]:
            assert isinstance(row[name], str), (frame.topic, name)
            D(str(row[name]))


def test_private_frame_message_has_bybit_envelope_and_categorised_topic(
    exchange: Exchange,
) -> None:
    _, frames = place(exchange)

    message = frames[0].message("order.linear")

    assert set(message) == {"id", "topic", "creationTime", "data"}
    assert message["topic"] == "order.linear"
    assert message["creationTime"] == START + 1000
    assert isinstance(message["data"], list)


def test_partial_fill_marks_order_partially_filled_and_keeps_it_open(exchange: Exchange) -> None:
    order_id, _ = place(exchange, qty=D("0.3"))

    frames = exchange.fill_order(FillOrder(account="main", order_id=order_id, qty=D("0.1"))).frames

    order = frames[1].data[0]
    assert order["orderStatus"] == "PartiallyFilled"
    assert order["cumExecQty"] == "0.1"
    assert order["leavesQty"] == "0.2"
    assert order_id in exchange.accounts["main"].open_orders


def test_place_order_pushes_order_and_position_with_unchanged_seq(exchange: Exchange) -> None:
    seq = exchange.accounts["main"].positions[("BTCUSDT", 0)].seq

    _, frames = place(exchange)

    assert [f.topic for f in frames] == ["order", "position"]
    assert frames[0].data[0]["orderStatus"] == "New"
    assert frames[1].data[0]["seq"] == seq
    assert frames[1].data[0]["size"] == "0.5"


def test_cancel_pushes_cancelled_order_and_position(exchange: Exchange) -> None:
    order_id, _ = place(exchange, order_link_id="c1")

    frames = exchange.cancel_order(CancelOrder(account="main", order_link_id="c1")).frames

    assert [f.topic for f in frames] == ["order", "position"]
    assert frames[0].data[0]["orderStatus"] == "Cancelled"
    assert frames[0].data[0]["cancelType"] == "CancelByUser"
    assert order_id not in exchange.accounts["main"].open_orders


def test_amend_changes_price_and_pushes_order_and_position(exchange: Exchange) -> None:
    order_id, _ = place(exchange)

    frames = exchange.amend_order(AmendOrder(account="main", order_id=order_id, price=D(68000)))

    assert [f.topic for f in frames.frames] == ["order", "position"]
    assert frames.frames[0].data[0]["price"] == "68000"


def test_reducing_fill_realises_pnl_into_wallet_net_of_fee(exchange: Exchange) -> None:
    order_id, _ = place(exchange, side="Sell", qty=D("0.5"), price=D(70000), reduce_only=True)

    frames = exchange.fill_order(FillOrder(account="main", order_id=order_id)).frames

    execution, _, position, wallet = (f.data[0] for f in frames)
    assert execution["execPnl"] == "1250"
    assert execution["closedSize"] == "0.5"
    fee = D("0.5") * 70000 * D("0.0002")
    assert D(str(wallet["totalWalletBalance"])) == 20000 + 1250 - fee
    assert position["size"] == "0"
    assert position["side"] == ""
    assert D(str(position["cumRealisedPnl"])) == 1250 - fee


def test_one_way_fill_past_the_position_flips_to_the_other_side(exchange: Exchange) -> None:
    order_id, _ = place(exchange, side="Sell", qty=D("0.8"), price=D(70000))

    frames = exchange.fill_order(FillOrder(account="main", order_id=order_id)).frames

    position = frames[2].data[0]
    assert (position["side"], position["size"], position["entryPrice"]) == ("Sell", "0.3", "70000")


def test_reduce_only_order_without_position_is_refused_with_110017(exchange: Exchange) -> None:
    with pytest.raises(ExchangeError) as refused:
        place(exchange, symbol="SOLUSDT", side="Sell", reduce_only=True)

    assert refused.value.code == 110017


def test_mark_tick_changes_upl_without_private_frames(exchange: Exchange) -> None:
    account = exchange.accounts["main"]

    exchange.tick_mark_price("BTCUSDT", D("71000.04"))

    row = exchange.position_rows(account, symbol="BTCUSDT")[0]
    assert row["markPrice"] == "71000"  # quantised to the 0.1 tick
    assert row["unrealisedPnl"] == "1750"
    assert exchange.wallet_row(account)["totalPerpUPL"] == "2100"


def test_pinned_price_ignores_path_ticks_until_released(exchange: Exchange) -> None:
    exchange.apply(SetPrice(symbol="BTCUSDT", price=D(65000)))
    exchange.tick_mark_price("BTCUSDT", D(71000))
    assert exchange.markets["BTCUSDT"].mark_price == 65000

    exchange.apply(SetPrice(symbol="BTCUSDT", price=None))
    exchange.tick_mark_price("BTCUSDT", D(71000))

    assert exchange.markets["BTCUSDT"].mark_price == 71000


def test_set_position_flags_keep_seq_and_size_change_bumps_it(exchange: Exchange) -> None:
    seq = exchange.accounts["main"].positions[("BTCUSDT", 0)].seq

    flagged = (
        exchange.set_position(
            SetPosition(
                account="main", symbol="BTCUSDT", is_reduce_only=True, mmr_sys_updated_time="1"
            )
        )
        .frames[0]
        .data[0]
    )
    resized = exchange.set_position(SetPosition(account="main", symbol="BTCUSDT", size=D(2))).frames

    assert (flagged["isReduceOnly"], flagged["mmrSysUpdatedTime"], flagged["seq"]) == (
        True,
        "1",
        seq,
    )
    assert resized[0].data[0]["seq"] == seq + 1
    assert [f.topic for f in resized] == ["position", "wallet"]


def test_frame_ids_are_unique_and_carry_the_run_id(exchange: Exchange) -> None:
    frames = []
    for _ in range(5):
        order_id, placed = place(exchange)
        frames += placed + exchange.fill_order(FillOrder(account="main", order_id=order_id)).frames

    ids = [f.id for f in frames]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("run1-") for i in ids)


def test_wallet_row_totals_for_sample_main_account(exchange: Exchange) -> None:
    wallet = exchange.wallet_row(exchange.accounts["main"])

    assert wallet["totalWalletBalance"] == "20000"
    assert wallet["totalPerpUPL"] == "1600"
    assert wallet["totalMarginBalance"] == "21600"
    assert wallet["totalInitialMargin"] == "6825"  # 33,750/10 + 17,250/5
    assert wallet["totalMaintenanceMargin"] == "255"  # (33,750 + 17,250) × 0.005
    assert wallet["accountMMRate"] == "0.0118"
    assert wallet["coin"][0]["coin"] == "USDT"


def test_rest_position_row_says_avgprice_and_ws_row_says_entryprice(exchange: Exchange) -> None:
    account = exchange.accounts["main"]

    rest = exchange.position_rows(account, symbol="BTCUSDT")[0]
    ws = exchange.position_rows(account, symbol="BTCUSDT", ws=True)[0]

    assert "avgPrice" in rest
    assert "entryPrice" not in rest
    assert "category" not in rest
    assert ws["entryPrice"] == "67500"
    assert ws["category"] == "linear"


def test_position_rows_for_untraded_symbol_return_a_flat_row_with_seq_minus_one(
    exchange: Exchange,
) -> None:
    (row,) = exchange.position_rows(exchange.accounts["main"], symbol="SOLUSDT")

    assert (row["size"], row["side"], row["seq"], row["liqPrice"]) == ("0", "", -1, "")


def test_ticker_row_numbers_are_strings(exchange: Exchange) -> None:
    row = exchange.ticker_row("BTCUSDT")

    assert row["markPrice"] == "70000"
    assert row["bid1Price"] == "69999.9"
    assert all(isinstance(v, str) for v in row.values())


def test_fill_keeps_the_execution_in_the_accounts_history_in_rest_form(
    exchange: Exchange,
) -> None:
    order_id, _ = place(exchange)

    frames = exchange.fill_order(FillOrder(account="main", order_id=order_id)).frames
    rows = exchange.execution_rows(
        exchange.accounts["main"], start_ms=START + 1000, end_ms=START + 1000
    )
    outside = exchange.execution_rows(exchange.accounts["main"], start_ms=0, end_ms=START + 999)

    pushed = frames[0].data[0]
    assert rows == [{k: v for k, v in pushed.items() if k != "category"}]
    assert outside == []
    # The history is a copy: the WS row keeps its category.
    assert pushed["category"] == "linear"


def test_execution_history_is_bounded_to_the_most_recent_fills(exchange: Exchange) -> None:
    account = exchange.accounts["main"]
    account.executions = deque(maxlen=2)
    order_id, _ = place(exchange, qty=D("0.3"))

    exec_ids = []
    for _ in range(3):
        result = exchange.fill_order(FillOrder(account="main", order_id=order_id, qty=D("0.1")))
        exec_ids.append(result.frames[0].data[0]["execId"])

    assert exchange.ground_truth(account)["executions"] == exec_ids[1:]


def test_closed_orders_list_the_newest_500_over_rest_while_ground_truth_keeps_more(
    exchange: Exchange,
) -> None:
    account = exchange.accounts["main"]
    for n in range(CLOSED_ORDERS_LISTED + 1):
        order_id, _ = place(exchange, order_link_id=f"c{n}")
        exchange.cancel_order(CancelOrder(account="main", order_id=order_id))

    listed = exchange.order_rows(account, open_only=False)
    truth = exchange.ground_truth(account)["closedOrders"]

    assert len(listed) == CLOSED_ORDERS_LISTED
    assert "c0" not in {r["orderLinkId"] for r in listed}
    assert len(truth) == CLOSED_ORDERS_LISTED + 1
    assert (truth[0]["orderLinkId"], truth[0]["orderStatus"]) == ("c0", "Cancelled")
