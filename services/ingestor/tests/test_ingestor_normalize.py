"""Normalization of the docs/bybit-v5.md example frames (tests/frames) to contract events."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestor import normalize as n
from riskwatch_common.contracts import (
    DataOrigin,
    ExecutionReported,
    OrderUpdated,
    PositionUpdated,
    Side,
    WalletUpdated,
    derived_event_id,
)
from riskwatch_common.topics import ACCOUNT_EVENTS, MARK_PRICES, encode

FRAMES = Path(__file__).parent / "frames"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SOURCE = "ingestor/test"


def frame(name: str) -> dict[str, Any]:
    doc = orjson.loads((FRAMES / name).read_bytes())
    assert isinstance(doc, dict)
    return doc


def normalize(doc: dict[str, Any]) -> n.PrivateFrame:
    return n.private_frame(doc, account="main", source=SOURCE, produced_at=NOW)


def test_position_frame_from_docs_gives_exact_decimals_and_flat_side() -> None:
    out = normalize(frame("ws_position.json"))

    assert out.kind == "position"
    assert not out.bad_rows
    (ev,) = out.events
    assert isinstance(ev, PositionUpdated)
    assert ev.symbol == "BTCUSDT"
    assert ev.position_idx == 2
    assert ev.side is None
    assert ev.size == D("0")
    assert ev.mark_price == D("28184.5")
    assert ev.cum_realised_pnl == D("-25.06579337")
    assert ev.leverage == D("10")
    assert ev.liq_price is None  # "0" on the WS means none
    assert ev.mmr_sys_updated_at is None
    assert ev.leverage_sys_updated_at is None
    assert ev.seq == 8327597863
    assert ev.risk_id == 1
    assert ev.is_reduce_only is False
    assert ev.updated_at == datetime(2023, 10, 19, 2, 25, 17, 38000, tzinfo=UTC)
    assert ev.occurred_at == ev.updated_at
    assert ev.produced_at == NOW
    assert ev.correlation_id == "1003076014fb7eedb-c7e6-45d6-a8c1-270f0169171a"
    assert ev.event_id == derived_event_id("main", "BTCUSDT", 2, 8327597863, "1697682317038")
    assert ev.origin is DataOrigin.STREAM
    assert ev.account == "main"
    assert ev.source == SOURCE


def test_rest_position_row_uses_avg_price_empty_liq_and_the_misspelt_mmr_field() -> None:
    row = frame("rest_position_inverse.json")["result"]["list"][0]
    row = {**row, "mmrSysUpdateTime": "1697673600999", "liqPrice": ""}
    meta = n.Meta("main", SOURCE, NOW, "rest-1", DataOrigin.SNAPSHOT)

    ev = n.position_event(row, meta)

    assert ev.entry_price == D("27464.50441675")
    assert ev.side is Side.SELL
    assert ev.size == D("300")
    assert ev.liq_price is None
    assert ev.position_im == D("0.00010923")
    assert ev.position_mm == D("0.0000015")
    assert ev.mmr_sys_updated_at == n.from_ms(1697673600999)
    assert ev.origin is DataOrigin.SNAPSHOT
    assert ev.correlation_id == "rest-1"


def test_position_with_size_but_no_side_is_a_bad_row() -> None:
    doc = frame("ws_position.json")
    doc["data"][0]["size"] = "1"

    out = normalize(doc)

    assert not out.events
    assert out.bad_rows
    assert "no side" in out.bad_rows[0][1]


def test_order_frame_of_another_category_is_skipped_and_linear_one_is_exact() -> None:
    doc = frame("ws_order_option.json")
    assert normalize(doc).skipped_rows == 1

    doc["data"][0]["category"] = "linear"
    out = normalize(doc)

    (ev,) = out.events
    assert isinstance(ev, OrderUpdated)
    assert ev.order_status == "Filled"
    assert ev.side is Side.SELL
    assert ev.price == D("72.5")
    assert ev.qty == D("1")
    assert ev.cum_exec_qty == D("1")
    assert ev.avg_price == D("75")
    assert ev.leaves_qty == D("0")
    assert ev.leaves_value is None
    assert ev.trigger_price is None
    assert ev.stop_order_type is None
    assert ev.time_in_force == "IOC"
    assert ev.updated_at == n.from_ms(1672364262457)
    assert ev.event_id == derived_event_id(
        "main", "5cf98598-39a7-459e-97bf-76ca765ee020", "Filled", 1672364262457, "1"
    )


def test_rest_order_row_from_docs() -> None:
    row = frame("rest_order_linear.json")
    meta = n.Meta("main", SOURCE, NOW, "rest-2", DataOrigin.SNAPSHOT)

    ev = n.order_event(row, meta)

    assert ev.order_link_id == "test-000005"
    assert ev.position_idx == 1
    assert ev.price == D("1600.00")
    assert ev.qty == D("0.10")
    assert ev.leaves_value == D("160")
    assert ev.cum_exec_qty == D("0.00")
    assert ev.trigger_price is None  # "0.00": no trigger
    assert ev.stop_order_type is None  # "UNKNOWN"
    assert ev.is_open
    # "0.00" and "0" are one identity, so REST and stream rows of one state share an id
    assert ev.event_id == n.order_event_id("main", ev.order_id, "New", 1684738540561, D("0"))


def test_wallet_frame_from_docs() -> None:
    out = normalize(frame("ws_wallet.json"))

    (ev,) = out.events
    assert isinstance(ev, WalletUpdated)
    assert ev.total_equity == D("10262.91335023")
    assert ev.total_wallet_balance == D("9684.46297164")
    assert ev.total_available_balance == D("9556.6056555")
    assert ev.account_mm_rate == D("0")
    assert ev.account_type == "UNIFIED"
    assert ev.occurred_at == n.from_ms(1700034722104)
    (coin,) = ev.coins
    assert coin.coin == "BTC"
    assert coin.equity == D("0.00102964")
    assert coin.usd_value == D("36.70759517")
    assert coin.total_position_im is None


def test_execution_frame_from_docs() -> None:
    out = normalize(frame("ws_execution.json"))

    (ev,) = out.events
    assert isinstance(ev, ExecutionReported)
    assert ev.exec_price == D("95900.1")
    assert ev.exec_qty == D("0.5")
    assert ev.exec_value == D("47950.05")
    assert ev.exec_fee == D("26.3725275")
    assert ev.closed_size == D("0.5")
    assert ev.side is Side.SELL
    assert not ev.is_maker
    assert ev.seq == 140612148849382
    assert ev.occurred_at == n.from_ms(1746270400353)
    assert ev.correlation_id == "386825804_BTCUSDT_140612148849382"
    assert ev.event_id == derived_event_id("main", "0ab1bdf7-4219-438b-b30a-32ec863018f7")


def test_rest_execution_row_without_category_normalizes_like_the_stream_row() -> None:
    # /v5/execution/list rows are the stream's execution rows without `category`
    (ws_row,) = frame("ws_execution.json")["data"]
    rest_row = {k: v for k, v in ws_row.items() if k != "category"}
    meta = n.Meta("main", SOURCE, NOW, "resync:1", DataOrigin.SNAPSHOT)

    events, bad = n.snapshot_events([rest_row], n.execution_event, meta)

    assert bad == []
    (ev,) = events
    assert isinstance(ev, ExecutionReported)
    assert ev.exec_qty == D("0.5")
    assert ev.occurred_at == n.from_ms(1746270400353)
    assert ev.origin is DataOrigin.SNAPSHOT
    # the same fill by stream and by REST has one event id
    assert ev.event_id == normalize(frame("ws_execution.json")).events[0].event_id


def test_rest_execution_row_missing_its_identity_is_a_bad_row() -> None:
    (ws_row,) = frame("ws_execution.json")["data"]
    rest_row = {k: v for k, v in ws_row.items() if k not in ("category", "execId")}
    meta = n.Meta("main", SOURCE, NOW, "resync:1", DataOrigin.SNAPSHOT)

    events, bad = n.snapshot_events([rest_row], n.execution_event, meta)

    assert events == []
    assert bad == [(0, "KeyError: 'execId'")]


def test_ticker_snapshot_from_docs_to_mark_price() -> None:
    tf = n.ticker_frame(frame("ws_tickers_btc.json"))

    ev = n.mark_price_event(
        tf.symbol, tf.data, ts_ms=tf.ts_ms, ticks=3, produced_at=NOW, source=SOURCE
    )

    assert tf.snapshot
    assert tf.cross_seq == 9532239429
    assert ev.symbol == "BTCUSDT"
    assert ev.mark_price == D("66666.60")
    assert ev.index_price == D("115418.19")
    assert ev.last_price == D("66666.60")
    assert ev.ticks_coalesced == 3
    assert ev.occurred_at == n.from_ms(1760325052630)
    assert MARK_PRICES.decode(encode(ev)) == ev


def test_events_survive_the_wire_with_decimals_intact() -> None:
    for name in ("ws_position.json", "ws_wallet.json", "ws_execution.json"):
        (ev,) = normalize(frame(name)).events
        assert ACCOUNT_EVENTS.decode(encode(ev)) == ev


def test_flat_position_without_a_side_round_trips_the_wire() -> None:
    (flat,) = normalize(frame("ws_position.json")).events
    assert flat.side is None
    assert ACCOUNT_EVENTS.decode(encode(flat)) == flat


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "malformed_frame"),
        (b"[1, 2]", "malformed_frame"),
    ],
)
def test_unparseable_frames_are_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(n.FrameError) as err:
        n.parse(raw)
    assert err.value.reason == reason


def test_unknown_topic_and_missing_data_are_rejected_with_reasons() -> None:
    with pytest.raises(n.FrameError) as unknown:
        normalize({"topic": "greeks", "data": []})
    with pytest.raises(n.FrameError) as no_data:
        normalize({"topic": "order.linear", "data": "x"})

    assert unknown.value.reason == "unknown_frame"
    assert no_data.value.reason == "malformed_frame"


def test_garbage_numbers_are_bad_rows_not_nan() -> None:
    doc = frame("ws_wallet.json")
    doc["data"][0]["totalEquity"] = "NaN"
    pos = frame("ws_position.json")
    pos["data"][0]["markPrice"] = "12,5"

    assert normalize(doc).bad_rows
    assert normalize(pos).bad_rows


def test_fast_event_id_equals_derived_event_id() -> None:
    parts = ("acct", "BTCUSDT", 0, 123, "1697682317038")
    assert n.event_id(*parts) == derived_event_id(*parts)


def test_categorised_topic_names_are_understood() -> None:
    doc = frame("ws_position.json")
    doc["topic"] = "position.linear"
    assert normalize(doc).kind == "position"


def test_parse_and_normalize_cost_is_measured() -> None:
    """Not a timing assertion (the machine is shared); it prints the figure for the report."""
    raw = (FRAMES / "ws_position.json").read_bytes()
    start = time.perf_counter()
    for _ in range(2000):
        normalize(n.parse(raw))
    per_frame_us = (time.perf_counter() - start) / 2000 * 1e6
    print(f"parse+normalize position frame: {per_frame_us:.1f} µs")
    assert per_frame_us > 0


@pytest.mark.parametrize("row", [1, "x", None, [], True])
def test_wallet_frame_whose_row_is_not_an_object_reports_a_bad_row(row: Any) -> None:
    frame = {"topic": "wallet", "id": "w1", "creationTime": 1700000000000, "data": [row]}

    out = n.private_frame(frame, account="a", source="s", produced_at=NOW)

    assert out.events == []
    assert out.bad_rows == [(0, f"TypeError: row is not an object: {type(row).__name__}")]


@pytest.mark.parametrize("rows", [[None], ["x"], [[1]], [1, {"category": "inverse"}]])
def test_rest_rows_that_are_not_objects_are_bad_rows_not_errors(rows: list[Any]) -> None:
    meta = n.Meta("a", "s", NOW, "c")

    events, bad = n.snapshot_events(rows, n.position_event, meta)

    assert events == []
    assert bad == [(0, "row is not an object")]


def test_wallet_coin_list_of_another_type_is_a_row_error() -> None:
    meta = n.Meta("a", "s", NOW, "c")
    with pytest.raises(n.ROW_ERRORS):
        n.wallet_event({"coin": "BTC", "totalEquity": "1"}, meta, time_ms=1, identity="i")
