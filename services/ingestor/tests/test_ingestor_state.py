"""The pure merge rules: stale drop by seq/updatedTime, duplicates, resync merge, market data."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

from ingestor import normalize as n
from ingestor.state import (
    CLOSED_BY_RESYNC,
    EXECUTION_HISTORY_MS,
    AccountState,
    Coalescer,
    SnapshotEvents,
    Tick,
    TickerBook,
    Verdict,
)
from riskwatch_common.contracts import (
    DataOrigin,
    ExecutionReported,
    OrderUpdated,
    PositionUpdated,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STREAM = n.Meta("acc", "ingestor/t", NOW, "frame-1")
SNAP = n.Meta("acc", "ingestor/t", NOW, "resync-1", DataOrigin.SNAPSHOT)
T0 = 1_700_000_000_000


def pos(
    seq: int, t: int, size: str = "1", symbol: str = "BTCUSDT", idx: int = 0
) -> PositionUpdated:
    row: dict[str, Any] = {
        "symbol": symbol,
        "positionIdx": idx,
        "side": "Buy" if D(size) else "",
        "size": size,
        "entryPrice": "100",
        "seq": seq,
        "updatedTime": str(t),
    }
    return n.position_event(row, STREAM)


def order(
    oid: str, status: str, t: int, cum: str = "0", qty: str = "1", meta: n.Meta = STREAM
) -> OrderUpdated:
    row = {
        "orderId": oid,
        "symbol": "BTCUSDT",
        "side": "Buy",
        "orderType": "Limit",
        "orderStatus": status,
        "price": "100",
        "qty": qty,
        "cumExecQty": cum,
        "leavesQty": str(D(qty) - D(cum)),
        "updatedTime": str(t),
    }
    return n.order_event(row, meta)


# --------------------------------------------------------------------------- positions


def test_position_with_lower_seq_is_stale() -> None:
    st = AccountState("acc")
    assert st.apply_position(pos(10, T0)) is Verdict.ACCEPTED

    assert st.apply_position(pos(9, T0 + 5, size="2")) is Verdict.STALE
    assert st.positions[("BTCUSDT", 0)].size == D(1)


def test_position_with_same_seq_needs_newer_updated_time() -> None:
    st = AccountState("acc")
    st.apply_position(pos(10, T0))

    assert st.apply_position(pos(10, T0 - 1, size="3")) is Verdict.STALE
    assert st.apply_position(pos(10, T0)) is Verdict.DUPLICATE
    # a settings change carries the seq of the last trade with a newer time (docs/bybit-v5.md §3.8)
    assert st.apply_position(pos(10, T0 + 1, size="1")) is Verdict.ACCEPTED


def test_position_keys_are_per_symbol_and_position_idx() -> None:
    st = AccountState("acc")
    st.apply_position(pos(10, T0, idx=1))

    assert st.apply_position(pos(5, T0, idx=2)) is Verdict.ACCEPTED
    assert st.apply_position(pos(5, T0, symbol="ETHUSDT")) is Verdict.ACCEPTED


# --------------------------------------------------------------------------- orders


def test_order_older_update_is_stale_and_same_state_is_duplicate() -> None:
    st = AccountState("acc")
    assert st.apply_order(order("o1", "New", T0)) is Verdict.ACCEPTED
    assert st.apply_order(order("o1", "PartiallyFilled", T0 + 5, cum="0.5")) is Verdict.ACCEPTED

    assert st.apply_order(order("o1", "New", T0)) is Verdict.STALE
    assert st.apply_order(order("o1", "PartiallyFilled", T0 + 5, cum="0.5")) is Verdict.DUPLICATE


def test_second_filled_message_is_a_duplicate() -> None:
    """Bybit sends Filled twice when a cancel races a fill (§3.5), at a later updatedTime."""
    st = AccountState("acc")
    st.apply_order(order("o1", "New", T0))
    assert st.apply_order(order("o1", "Filled", T0 + 1, cum="1")) is Verdict.ACCEPTED

    assert st.apply_order(order("o1", "Filled", T0 + 2, cum="1")) is Verdict.DUPLICATE
    assert "o1" not in st.open_orders


def test_reordered_frames_at_the_same_millisecond_keep_the_more_advanced_state() -> None:
    st = AccountState("acc")
    assert st.apply_order(order("o1", "Filled", T0, cum="1")) is Verdict.ACCEPTED

    assert st.apply_order(order("o1", "New", T0)) is Verdict.STALE
    assert st.apply_order(order("o1", "PartiallyFilled", T0, cum="0.5")) is Verdict.STALE


def execution(exec_id: str, t: int, meta: n.Meta = STREAM) -> ExecutionReported:
    row = {
        "execId": exec_id,
        "orderId": "o1",
        "symbol": "BTCUSDT",
        "side": "Buy",
        "execPrice": "1",
        "execQty": "1",
        "execTime": str(t),
    }
    return n.execution_event(row, meta)


def test_executions_dedupe_on_exec_id() -> None:
    st = AccountState("acc")
    ev = execution("e1", T0)

    assert st.apply_execution(ev) is Verdict.ACCEPTED
    assert st.apply_execution(ev) is Verdict.DUPLICATE


# --------------------------------------------------------------------------- execution backfill


def test_no_backfill_before_the_watermark_is_known() -> None:
    assert AccountState("acc").begin_backfill(now_ms=T0, overlap_ms=5000) is None


def test_watermark_is_the_latest_accepted_exec_time_whatever_the_arrival_order() -> None:
    st = AccountState("acc")
    st.apply_execution(execution("e2", T0 + 50))
    st.apply_execution(execution("e1", T0 + 10))  # arrived late
    st.apply_execution(execution("e2", T0 + 999))  # a duplicate moves nothing

    assert st.execution_watermark_ms == T0 + 50


def test_backfill_starts_an_overlap_before_the_watermark() -> None:
    st = AccountState("acc")
    st.apply_execution(execution("e1", T0))

    window = st.begin_backfill(now_ms=T0 + 60_000, overlap_ms=5000)

    assert window is not None
    assert (window.start_ms, window.clamped) == (T0 - 5000, False)


def test_backfilled_fills_already_streamed_are_duplicates_and_new_ones_accepted() -> None:
    st = AccountState("acc")
    st.apply_execution(execution("e1", T0, STREAM))
    st.begin_backfill(now_ms=T0 + 60_000, overlap_ms=5000)

    verdicts = [st.apply_execution(execution(e, t, SNAP)) for e, t in (("e1", T0), ("e2", T0 + 9))]
    st.end_backfill(T0 + 60_000)

    assert verdicts == [Verdict.DUPLICATE, Verdict.ACCEPTED]
    assert st.execution_watermark_ms == T0 + 60_000  # the whole fetched range is known


def test_a_failed_backfill_is_reached_back_to_by_the_next_one() -> None:
    st = AccountState("acc")
    st.executions_known_until(T0)
    first = st.begin_backfill(now_ms=T0 + 60_000, overlap_ms=5000)
    # the resync failed; the buffered stream frames applied meanwhile moved the watermark
    st.apply_execution(execution("e9", T0 + 30_000))

    second = st.begin_backfill(now_ms=T0 + 90_000, overlap_ms=5000)

    assert first is not None
    assert second is not None
    assert second.start_ms == first.start_ms == T0 - 5000
    st.end_backfill(T0 + 90_000)
    third = st.begin_backfill(now_ms=T0 + 120_000, overlap_ms=5000)
    assert third is not None
    assert third.start_ms == T0 + 85_000


def test_backfill_older_than_bybits_seven_days_is_clamped() -> None:
    st = AccountState("acc")
    st.executions_known_until(T0)
    now = T0 + EXECUTION_HISTORY_MS + 3_600_000

    window = st.begin_backfill(now_ms=now, overlap_ms=5000)

    assert window is not None
    assert window.clamped
    assert window.wanted_ms == T0 - 5000
    assert now - EXECUTION_HISTORY_MS < window.start_ms <= now - EXECUTION_HISTORY_MS + 60_000


# --------------------------------------------------------------------------- resync merge


def snapshot(
    positions: list[PositionUpdated] = (),  # type: ignore[assignment]
    orders: list[OrderUpdated] = (),  # type: ignore[assignment]
) -> SnapshotEvents:
    return SnapshotEvents(list(positions), list(orders), None, 0)


def test_resync_ignores_rest_rows_older_than_the_stream() -> None:
    st = AccountState("acc")
    st.apply_position(pos(20, T0 + 100, size="2"))
    st.apply_order(order("o1", "PartiallyFilled", T0 + 100, cum="0.5"))

    out = st.apply_snapshot(
        snapshot([pos(19, T0, size="1")], [order("o1", "New", T0, meta=SNAP)]), SNAP
    )

    assert out == []
    assert st.positions[("BTCUSDT", 0)].size == D(2)
    assert st.open_orders["o1"].order_status == "PartiallyFilled"


def test_resync_publishes_what_changed_while_disconnected() -> None:
    st = AccountState("acc")
    st.apply_position(pos(10, T0, size="1"))
    newer = pos(11, T0 + 50, size="3")

    out = st.apply_snapshot(snapshot([newer]), SNAP)

    assert out == [newer]


def test_orders_missing_from_the_snapshot_are_closed_and_positions_go_flat() -> None:
    st = AccountState("acc")
    st.apply_position(pos(10, T0, size="1"))
    st.apply_position(pos(3, T0, size="2", symbol="ETHUSDT"))
    st.apply_order(order("gone", "New", T0))
    st.apply_order(order("kept", "New", T0))

    out = st.apply_snapshot(
        snapshot([pos(3, T0, size="2", symbol="ETHUSDT")], [order("kept", "New", T0)]), SNAP
    )

    flat = [e for e in out if isinstance(e, PositionUpdated)]
    closed = [e for e in out if isinstance(e, OrderUpdated)]
    assert [(p.symbol, p.size, p.side) for p in flat] == [("BTCUSDT", D(0), None)]
    assert [(o.order_id, o.order_status) for o in closed] == [("gone", CLOSED_BY_RESYNC)]
    assert closed[0].origin is DataOrigin.SNAPSHOT
    assert closed[0].leaves_qty == 0
    assert closed[0].correlation_id == "resync-1"
    assert set(st.open_orders) == {"kept"}
    assert st.symbols() == frozenset({"ETHUSDT", "BTCUSDT"})  # "kept" is a BTCUSDT order
    # synthetic records keep the last real identity, so an old replay stays stale...
    assert st.apply_order(order("gone", "New", T0)) is Verdict.STALE
    assert st.apply_position(pos(10, T0, size="1")) is Verdict.DUPLICATE
    # ...and the real story still wins when it arrives
    assert st.apply_order(order("gone", "Filled", T0 + 9, cum="1")) is Verdict.ACCEPTED
    assert st.order("gone") is not None
    assert st.order("gone").order_status == "Filled"


def test_recently_closed_orders_give_the_real_end_instead_of_deactivated() -> None:
    st = AccountState("acc")
    st.apply_order(order("filled_away", "New", T0))
    st.apply_order(order("vanished", "New", T0))
    closed = [
        order("filled_away", "Filled", T0 + 5, cum="1", meta=SNAP),
        order("placed_and_cancelled_away", "Cancelled", T0 + 7, meta=SNAP),
        order("ignored_not_closed", "New", T0 + 8, meta=SNAP),
    ]

    out = st.apply_snapshot(SnapshotEvents([], [], None, 0, closed), SNAP)

    got = [(o.order_id, o.order_status) for o in out if isinstance(o, OrderUpdated)]
    assert got == [
        ("filled_away", "Filled"),
        ("placed_and_cancelled_away", "Cancelled"),
        ("vanished", CLOSED_BY_RESYNC),  # not listed as closed: only inferred
    ]
    assert st.open_orders == {}
    assert st.order("ignored_not_closed") is None
    # a later resync listing the same closed orders publishes nothing again
    assert st.apply_snapshot(SnapshotEvents([], [], None, 0, closed[:2]), SNAP) == []


def test_buffered_stream_frames_applied_after_the_snapshot_win() -> None:
    """The resync order: snapshot first, then the frames buffered while it was fetched."""
    st = AccountState("acc")
    st.apply_order(order("o1", "New", T0))
    # While REST was in flight the order filled and a new one appeared; REST saw neither.
    buffered = [order("o1", "Filled", T0 + 10, cum="1"), order("o2", "New", T0 + 11)]

    out = st.apply_snapshot(snapshot([], []), SNAP)
    verdicts = [st.apply_order(o) for o in buffered]

    assert [o.order_status for o in out if isinstance(o, OrderUpdated)] == [CLOSED_BY_RESYNC]
    assert verdicts == [Verdict.ACCEPTED, Verdict.ACCEPTED]
    assert set(st.open_orders) == {"o2"}
    assert st.order("o1").order_status == "Filled"  # type: ignore[union-attr]


def test_positions_of_an_unrequested_settle_coin_are_not_flattened() -> None:
    st = AccountState("acc", settle_coins=("USDT",))
    st.apply_position(pos(1, T0, symbol="BTCPERP"))

    assert st.apply_snapshot(snapshot([], []), SNAP) == []


def test_wallet_older_is_stale_and_unchanged_is_not_republished() -> None:
    st = AccountState("acc")
    row = {"totalEquity": "1", "totalWalletBalance": "1", "totalMarginBalance": "1"}
    first = n.wallet_event(row, STREAM, time_ms=T0, identity="a")
    same = n.wallet_event(row, SNAP, time_ms=T0 + 5, identity="b")
    changed = n.wallet_event({**row, "totalEquity": "2"}, STREAM, time_ms=T0 + 1, identity="c")

    assert st.apply_wallet(first, T0) is Verdict.ACCEPTED
    assert st.apply_wallet(same, T0 + 5) is Verdict.DUPLICATE
    assert st.apply_wallet(changed, T0 + 1) is Verdict.STALE


# --------------------------------------------------------------------------- market data


def test_ticker_delta_merges_into_the_snapshot() -> None:
    book = TickerBook()
    book.apply(
        "BTCUSDT", {"markPrice": "100", "indexPrice": "99", "lastPrice": "100"}, snapshot=True
    )

    merged = book.apply("BTCUSDT", {"markPrice": "101"}, snapshot=False)

    assert merged == {"markPrice": "101", "indexPrice": "99", "lastPrice": "100"}
    assert book.apply("BTCUSDT", {"lastPrice": "102"}, snapshot=True) == {"lastPrice": "102"}


def test_coalescer_emits_first_tick_then_at_most_one_per_interval_latest_wins() -> None:
    c = Coalescer(interval_s=1.0)

    first = c.offer(Tick("BTC", {"markPrice": "1"}, 1), now=0.0)
    assert first is not None
    assert first.ticks == 1
    assert c.offer(Tick("BTC", {"markPrice": "2"}, 2), now=0.1) is None
    assert c.offer(Tick("BTC", {"markPrice": "3"}, 3), now=0.5) is None
    assert c.due(now=0.9) == []
    assert c.next_due() == 1.0

    (late,) = c.due(now=1.0)
    assert late.tick.ticker == {"markPrice": "3"}
    assert late.tick.ts_ms == 3
    assert late.ticks == 2  # two ticks folded into this record
    assert c.due(now=5.0) == []


def test_coalescer_never_drops_the_last_tick_on_drain() -> None:
    c = Coalescer(interval_s=10.0)
    c.offer(Tick("ETH", {"markPrice": "1"}, 1), now=0.0)
    c.offer(Tick("ETH", {"markPrice": "9"}, 2), now=0.1)

    (last,) = c.drain(now=0.2)

    assert last.tick.ticker["markPrice"] == "9"


def test_coalescer_copies_the_ticker_so_later_merges_do_not_leak_in() -> None:
    c = Coalescer(interval_s=1.0)
    c.offer(Tick("BTC", {"markPrice": "1"}, 1), now=0.0)
    live = {"markPrice": "2"}
    c.offer(Tick("BTC", live, 2), now=0.1)
    live["markPrice"] = "3"

    (out,) = c.due(now=1.0)
    assert out.tick.ticker["markPrice"] == "2"
