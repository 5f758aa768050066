"""State values: ordering keys drop stale updates; changelog forms round-trip exactly."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from processor_testkit import (
    BRIEF_BTC_TIERS,
    T0,
    mark,
    order,
    position,
    tier_table,
    wallet,
)
from risk_processor import codec, state
from risk_processor.engine import AlertState, Severity
from risk_processor.faust_codecs import JsonValue, Utf8Key
from riskwatch_common.contracts import Side

D = Decimal


def test_position_update_at_or_below_the_held_seq_is_dropped() -> None:
    book: dict[str, state.PositionEntry] = {}
    assert state.apply_position(book, position("a", "BTCUSDT", Side.BUY, 1, 100, 5, seq=5))
    assert not state.apply_position(book, position("a", "BTCUSDT", Side.BUY, 2, 100, 5, seq=5))
    assert not state.apply_position(book, position("a", "BTCUSDT", Side.BUY, 3, 100, 5, seq=4))
    assert book["BTCUSDT|0"].position.size == 1
    assert state.apply_position(book, position("a", "BTCUSDT", Side.BUY, 4, 100, 5, seq=6))
    assert book["BTCUSDT|0"].position.size == 4


def test_flat_position_is_kept_for_its_leverage() -> None:
    book: dict[str, state.PositionEntry] = {}
    state.apply_position(book, position("a", "BTCUSDT", Side.BUY, 1, 100, 5, seq=1))
    state.apply_position(book, position("a", "BTCUSDT", None, 0, 0, 25, seq=2))
    kept = book["BTCUSDT|0"].position
    assert kept.side is None
    assert kept.leverage == 25


def test_inconsistent_position_row_raises_for_the_dead_letter_topic() -> None:
    with pytest.raises(ValueError, match="hedge-mode Buy side"):
        state.apply_position({}, position("a", "BTCUSDT", Side.SELL, 1, 100, 5, idx=1))


def test_closed_order_is_not_reopened_by_an_older_update() -> None:
    book = state.OrderBook()
    assert state.apply_order(book, order("a", "BTCUSDT", "o1", Side.BUY, 1, 100, at=T0))
    later = T0 + timedelta(seconds=1)
    assert state.apply_order(
        book, order("a", "BTCUSDT", "o1", Side.BUY, 1, 100, status="Filled", at=later)
    )
    assert "o1" not in book.open
    # A replayed "New" from before the fill, and the fill again: both ignored.
    assert not state.apply_order(book, order("a", "BTCUSDT", "o1", Side.BUY, 1, 100, at=T0))
    assert not state.apply_order(
        book, order("a", "BTCUSDT", "o1", Side.BUY, 1, 100, status="Filled", at=later)
    )
    assert "o1" not in book.open


def test_closed_orders_remembered_are_bounded() -> None:
    book = state.OrderBook()
    for i in range(state.CLOSED_ORDERS_KEPT + 10):
        state.apply_order(
            book,
            order(
                "a", "X", f"o{i}", Side.BUY, 1, 1, status="Cancelled", at=T0 + timedelta(seconds=i)
            ),
        )
    assert len(book.closed) == state.CLOSED_ORDERS_KEPT
    assert "o0" not in book.closed  # the oldest closes are forgotten first


def test_order_without_a_price_or_reduce_only_is_kept_as_the_engine_needs() -> None:
    book = state.OrderBook()
    state.apply_order(book, order("a", "X", "o1", Side.SELL, 2, 50, reduce_only=True))
    assert book.open["o1"].order.reduce_only
    assert not book.open["o1"].order.can_open


def test_older_wallet_is_dropped() -> None:
    held = state.apply_wallet(None, wallet("a", equity=100, at=T0 + timedelta(seconds=5)))
    assert held is not None
    assert state.apply_wallet(held, wallet("a", equity=50, at=T0)) is None


def test_same_mark_price_is_not_a_move() -> None:
    entry = state.apply_mark(None, mark("BTCUSDT", 70000))
    assert entry is not None
    assert state.apply_mark(entry, mark("BTCUSDT", "70000.0")) is None
    moved = state.apply_mark(entry, mark("BTCUSDT", 70001))
    assert moved is not None
    assert moved.price == 70001


def test_republished_tier_table_is_no_change_and_a_new_one_keeps_the_old_as_history() -> None:
    first = state.apply_tiers(None, tier_table("BTCUSDT", BRIEF_BTC_TIERS))
    assert first is not None
    assert state.apply_tiers(first, tier_table("BTCUSDT", BRIEF_BTC_TIERS)) is None
    tighter = [(1, 500_000, "0.01", "0.02", 50, 0)]
    second = state.apply_tiers(first, tier_table("BTCUSDT", tighter))
    assert second is not None
    assert second.version != first.version
    assert second.history[first.version] == first.table


def _roundtrip(to_json, from_json, value):  # type: ignore[no-untyped-def]
    c = JsonValue(to_json, from_json)
    return c.loads(c.dumps(value))


def test_changelog_forms_round_trip_exactly() -> None:
    positions: dict[str, state.PositionEntry] = {}
    state.apply_position(
        positions, position("a", "BTCUSDT", Side.BUY, "0.5", "67500.5", 10, seq=3, liq="61000")
    )
    state.apply_position(
        positions, position("a", "ETHUSDT", Side.SELL, 5, 3450, None, seq=9, idx=2)
    )
    assert _roundtrip(state.positions_to_json, state.positions_from_json, positions) == positions

    orders = state.OrderBook()
    state.apply_order(orders, order("a", "BTCUSDT", "o1", Side.BUY, "0.2", 65000))
    state.apply_order(orders, order("a", "BTCUSDT", "o2", Side.BUY, 1, 1, status="Cancelled"))
    assert _roundtrip(state.orders_to_json, state.orders_from_json, orders) == orders

    w = state.apply_wallet(None, wallet("a", equity="60000.5", maintenance_margin=600))
    assert _roundtrip(state.wallet_to_json, state.wallet_from_json, w) == w

    t = state.apply_tiers(None, tier_table("BTCUSDT", BRIEF_BTC_TIERS))
    assert t is not None
    assert _roundtrip(state.tiers_to_json, state.tiers_from_json, t) == t

    alert = AlertState(
        "id1", "a", "net_exposure_usd", "account", Severity.WARNING, Severity.WARNING,
        T0, T0, 0, 0, D(20000), D(10000), "why", {"net": D(20000)},
    )  # fmt: skip
    book = state.RiskBook(
        alerts={"id1": alert},
        seqs={"id1": 2, "gone": 3},
        tiers_seen={"BTCUSDT": t.version},
        tiers_held={"BTCUSDT": t.table.tiers[1]},
        pending={"BTCUSDT": state.PendingChange(t.table, "v2", T0, T0 + timedelta(days=10))},
        outbox={"e1": b'{"event_id":"e1"}'},
    )
    assert _roundtrip(state.risk_to_json, state.risk_from_json, book) == book


def test_table_keys_hash_to_the_partition_of_the_input_records() -> None:
    # A changelog record keyed like the input lands in the same partition number, so one
    # worker owns an account's records and its table entries.
    partitioner = DefaultPartitioner()
    partitions = list(range(4))
    for account in ("main", "sub_trading", "sub_hedge", "portfolio"):
        assert partitioner(Utf8Key().dumps(account), partitions, partitions) == partitioner(
            account.encode(), partitions, partitions
        )


def test_exposure_wire_form_is_lossless() -> None:
    from risk_processor import engine

    profile = engine.AccountProfile("a")
    p = state.to_position(position("a", "BTCUSDT", Side.BUY, "0.5", 67500, 10))
    table = state.to_tier_table(tier_table("BTCUSDT", BRIEF_BTC_TIERS))
    e = engine.account_exposure(profile, [p], [], None, {"BTCUSDT": table}, {"BTCUSDT": D(70000)})
    back = codec.exposure_from_json(orjson.loads(orjson.dumps(codec.exposure_to_json(e))))
    assert back == e
