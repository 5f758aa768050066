"""Effective position value and order checks: docs/product.md's worked examples, properties."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk_processor.engine import (
    Order,
    Position,
    PositionMode,
    Side,
    TierTable,
    check_order,
    effective_value,
    effective_value_with_order,
    load_tier_table,
    max_leverage_for_value,
    tier_for_value,
)
from riskwatch_common.testkit import BRIEF_BTC_ROWS

D = Decimal
# Property tests check results, not speed; a busy shared machine must not fail them.
no_deadline = settings(deadline=None)
BUY, SELL = Side.BUY, Side.SELL
ONE_WAY, HEDGE = PositionMode.ONE_WAY, PositionMode.HEDGE

BRIEF_ROWS = BRIEF_BTC_ROWS


def brief_table() -> TierTable:
    return load_tier_table("BTCUSDT", BRIEF_ROWS).table


def pos(side: Side, size: str, entry: str, idx: int = 0, symbol: str = "BTCUSDT") -> Position:
    return Position("main", symbol, idx, side, D(size), D(entry), D(10))


_ids = itertools.count()


def order(side: Side, qty: str, price: str, idx: int = 0, **flags: bool) -> Order:
    return Order(f"o{next(_ids)}", "BTCUSDT", side, D(price), D(qty), idx, **flags)


# --------------------------------------------------------------------------- brief examples


def test_example_1_one_way_long_plus_buy_order_is_55000() -> None:
    ev = effective_value("BTCUSDT", [pos(BUY, "1", "40000")], [order(BUY, "0.5", "30000")], ONE_WAY)
    assert (ev.long_value, ev.short_value, ev.value) == (D(55000), D(0), D(55000))


def test_example_2_one_way_flip_counts_only_opening_part_on_short_side_100000() -> None:
    ev = effective_value(
        "BTCUSDT",
        [pos(BUY, "1", "40000")],
        [order(BUY, "0.5", "30000"), order(SELL, "3", "50000")],
        ONE_WAY,
    )
    assert (ev.long_value, ev.short_value, ev.value) == (D(55000), D(100000), D(100000))


def test_example_3_hedge_buy_to_close_empty_short_side_does_not_count_55000() -> None:
    ev = effective_value(
        "BTCUSDT",
        [pos(BUY, "1", "40000", idx=1)],
        [order(BUY, "0.5", "30000", idx=1), order(BUY, "1", "50000", idx=2)],
        HEDGE,
    )
    assert (ev.long_value, ev.short_value, ev.value) == (D(55000), D(0), D(55000))


def test_example_4_hedge_both_sides_with_orders_is_110000() -> None:
    ev = effective_value(
        "BTCUSDT",
        [pos(BUY, "1", "40000", idx=1), pos(SELL, "1", "50000", idx=2)],
        [order(BUY, "0.5", "30000", idx=1), order(SELL, "1", "60000", idx=2)],
        HEDGE,
    )
    assert (ev.long_value, ev.short_value, ev.value) == (D(55000), D(110000), D(110000))


def test_90x_example_second_1m_order_moves_tier_1_to_2() -> None:
    table = brief_table()
    position = [pos(BUY, "20", "50000")]  # 1M long
    check = check_order(table, position, [], ONE_WAY, D(90), order(BUY, "20", "50000"))
    assert check.tier_before.tier.id == 1
    assert check.tier_after.tier.id == 2
    assert not check.blocked


def test_90x_example_third_1m_order_is_blocked_and_80x_allows_it() -> None:
    table = brief_table()
    position = [pos(BUY, "20", "50000")]
    resting = [order(BUY, "20", "50000")]
    third = order(BUY, "20", "50000")
    at_90 = check_order(table, position, resting, ONE_WAY, D(90), third)
    assert at_90.after.value == D(3_000_000)
    assert at_90.leverage_cap == D(2_600_000)
    assert at_90.blocked
    assert at_90.max_leverage_allowing == D(80)
    at_80 = check_order(table, position, resting, ONE_WAY, D(80), third)
    assert at_80.leverage_cap == D(3_200_000)
    assert not at_80.blocked
    assert max_leverage_for_value(table, at_90.after.value) == D(80)


def test_check_order_that_only_closes_is_not_blocked_above_the_cap() -> None:
    table = brief_table()
    position = [pos(BUY, "60", "50000")]  # 3M, above the 2.6M a 90x leverage allows
    closing = order(SELL, "10", "50000")
    assert not check_order(table, position, [], ONE_WAY, D(90), closing).blocked


def test_check_order_with_leverage_above_every_tier_blocks_any_opening_order() -> None:
    check = check_order(brief_table(), [], [], ONE_WAY, D(125), order(BUY, "0.001", "50000"))
    assert check.leverage_cap is None
    assert check.blocked


# --------------------------------------------------------------------------- other rules


def test_reduce_only_close_on_trigger_and_untriggered_conditional_orders_never_count() -> None:
    orders = [
        order(BUY, "1", "30000", reduce_only=True),
        order(BUY, "1", "30000", close_on_trigger=True),
        order(BUY, "1", "30000", is_conditional_untriggered=True),
        order(SELL, "5", "30000", reduce_only=True),
    ]
    assert effective_value("BTCUSDT", [pos(BUY, "1", "40000")], orders, ONE_WAY).value == D(40000)


def test_one_way_opposite_order_smaller_than_position_does_not_count() -> None:
    ev = effective_value("BTCUSDT", [pos(BUY, "1", "40000")], [order(SELL, "1", "50000")], ONE_WAY)
    assert (ev.long_value, ev.short_value) == (D(40000), D(0))


def test_one_way_short_with_buy_order_flipping_counts_opening_part_on_long_side() -> None:
    ev = effective_value("BTCUSDT", [pos(SELL, "2", "50000")], [order(BUY, "5", "40000")], ONE_WAY)
    assert (ev.long_value, ev.short_value) == (D(120000), D(100000))


def test_one_way_several_sells_close_with_lowest_prices_and_open_at_highest() -> None:
    # Long 1: the 0.6 @ 50k and 0.4 of the 0.8 @ 55k close it; 0.4 @ 55k and 1 @ 60k open.
    orders = [order(SELL, "1", "60000"), order(SELL, "0.6", "50000"), order(SELL, "0.8", "55000")]
    ev = effective_value("BTCUSDT", [pos(BUY, "1", "40000")], orders, ONE_WAY)
    assert ev.short_value == D("0.4") * 55000 + D(1) * 60000


def test_flat_one_way_counts_every_order_on_its_side() -> None:
    orders = [order(BUY, "1", "40000"), order(SELL, "2", "41000")]
    ev = effective_value("BTCUSDT", [], orders, ONE_WAY)
    assert (ev.long_value, ev.short_value, ev.value) == (D(40000), D(82000), D(82000))


def test_rows_of_other_symbols_are_ignored() -> None:
    other = Position("main", "ETHUSDT", 0, BUY, D(100), D(3000), D(10))
    ev = effective_value("BTCUSDT", [pos(BUY, "1", "40000"), other], [], ONE_WAY)
    assert ev.value == D(40000)


def test_effective_value_with_order_adds_the_what_if_order() -> None:
    ev = effective_value_with_order(
        "BTCUSDT", [pos(BUY, "1", "40000")], [], ONE_WAY, order(BUY, "1", "45000")
    )
    assert ev.value == D(85000)


def test_position_idx_that_contradicts_the_mode_raises() -> None:
    with pytest.raises(ValueError, match="position_idx"):
        effective_value("BTCUSDT", [pos(BUY, "1", "40000", idx=1)], [], ONE_WAY)
    with pytest.raises(ValueError, match="position_idx"):
        effective_value("BTCUSDT", [pos(BUY, "1", "40000", idx=1)], [order(BUY, "1", "1")], HEDGE)


def test_tier_of_effective_value_after_flip_uses_short_side() -> None:
    # 20 BTC long at 50k (1M) and a 60 BTC sell at 50k: 40 open short = 2M, tier 2.
    ev = effective_value(
        "BTCUSDT", [pos(BUY, "20", "50000")], [order(SELL, "60", "50000")], ONE_WAY
    )
    assert tier_for_value(brief_table(), ev.value).tier.id == 2


# --------------------------------------------------------------------------- properties

qtys = st.decimals(min_value=D("0.001"), max_value=100, places=3)
prices = st.decimals(min_value=1, max_value=100_000, places=1)


def ref_counted_orders(
    position: Decimal, orders: list[tuple[Side, Decimal, Decimal]]
) -> tuple[Decimal, Decimal]:
    """Reference for one-way mode: fill opposite orders one by one, in every possible order.

    ``position`` is signed (long > 0). Orders on the position's side add in full. Opposite
    orders are filled in sequence against the position; what a fill opens beyond it counts
    on the other side. The rule is stated per order, not per sequence, so the engine's
    choice is the largest result over all sequences; this returns that maximum.
    """
    long_value = short_value = D(0)
    opposite = []
    for side, qty, price in orders:
        if side is BUY and position >= 0:
            long_value += qty * price
        elif side is SELL and position <= 0:
            short_value += qty * price
        else:
            opposite.append((side, qty, price))
    best = D(0)
    for sequence in itertools.permutations(opposite):
        remaining = abs(position)
        opened = D(0)
        for _, qty, price in sequence:
            closing = min(qty, remaining)
            remaining -= closing
            opened += (qty - closing) * price
        best = max(best, opened)
    if position > 0:
        short_value += best
    elif position < 0:
        long_value += best
    return long_value, short_value


@no_deadline
@given(
    st.sampled_from([BUY, SELL, None]),
    qtys,
    prices,
    st.lists(st.tuples(st.sampled_from([BUY, SELL]), qtys, prices), max_size=5),
)
def test_one_way_effective_value_matches_fill_simulation(
    side: Side | None, size: Decimal, entry: Decimal, raw: list[tuple[Side, Decimal, Decimal]]
) -> None:
    positions = [] if side is None else [Position("main", "BTCUSDT", 0, side, size, entry, D(1))]
    orders = [Order(f"o{i}", "BTCUSDT", s, p, q) for i, (s, q, p) in enumerate(raw)]
    signed = D(0) if side is None else (size if side is BUY else -size)
    long_ref, short_ref = ref_counted_orders(signed, raw)
    if side is BUY:
        long_ref += size * entry
    elif side is SELL:
        short_ref += size * entry
    ev = effective_value("BTCUSDT", positions, orders, ONE_WAY)
    assert (ev.long_value, ev.short_value) == (long_ref, short_ref)
    assert ev.value == max(long_ref, short_ref)


@no_deadline
@given(
    st.lists(st.tuples(st.sampled_from([BUY, SELL]), qtys, prices), max_size=6),
    st.randoms(),
)
def test_one_way_effective_value_does_not_depend_on_order_listing(
    raw: list[tuple[Side, Decimal, Decimal]], rnd: object
) -> None:
    orders = [Order(f"o{i}", "BTCUSDT", s, p, q) for i, (s, q, p) in enumerate(raw)]
    shuffled = list(orders)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    positions = [Position("main", "BTCUSDT", 0, BUY, D(1), D(40000), D(1))]
    assert effective_value("BTCUSDT", positions, orders, ONE_WAY) == effective_value(
        "BTCUSDT", positions, shuffled, ONE_WAY
    )


@no_deadline
@given(
    st.one_of(st.none(), st.tuples(qtys, prices)),
    st.one_of(st.none(), st.tuples(qtys, prices)),
    st.lists(st.tuples(st.sampled_from([1, 2]), st.sampled_from([BUY, SELL]), qtys, prices)),
)
def test_hedge_effective_value_counts_only_orders_opening_their_side(
    long_leg: tuple[Decimal, Decimal] | None,
    short_leg: tuple[Decimal, Decimal] | None,
    raw: list[tuple[int, Side, Decimal, Decimal]],
) -> None:
    positions = []
    long_ref = short_ref = D(0)
    if long_leg is not None:
        positions.append(Position("main", "BTCUSDT", 1, BUY, long_leg[0], long_leg[1], D(1)))
        long_ref += long_leg[0] * long_leg[1]
    if short_leg is not None:
        positions.append(Position("main", "BTCUSDT", 2, SELL, short_leg[0], short_leg[1], D(1)))
        short_ref += short_leg[0] * short_leg[1]
    orders = []
    for i, (idx, side, qty, price) in enumerate(raw):
        orders.append(Order(f"o{i}", "BTCUSDT", side, price, qty, idx))
        if idx == 1 and side is BUY:
            long_ref += qty * price
        elif idx == 2 and side is SELL:
            short_ref += qty * price
    ev = effective_value("BTCUSDT", positions, orders, HEDGE)
    assert (ev.long_value, ev.short_value, ev.value) == (
        long_ref,
        short_ref,
        max(long_ref, short_ref),
    )
