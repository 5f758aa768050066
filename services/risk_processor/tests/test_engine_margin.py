"""Margin, PnL, account MM rate and liquidation (docs/bybit-v5.md §4.1, §4.3, §4.4)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk_processor.engine import (
    Position,
    Side,
    Tier,
    TierTable,
    Wallet,
    account_margin,
    cross_liq_price_single,
    initial_margin,
    initial_margin_for_tier,
    isolated_liq_price,
    liq_distance_pct,
    load_tier_table,
    maintenance_margin,
    unrealized_pnl,
)
from riskwatch_common.testkit import BRIEF_BTC_ROWS

D = Decimal
# Property tests check results, not speed; a busy shared machine must not fail them.
no_deadline = settings(deadline=None)
BUY, SELL = Side.BUY, Side.SELL

BRIEF_ROWS = BRIEF_BTC_ROWS


def brief_table() -> TierTable:
    return load_tier_table("BTCUSDT", BRIEF_ROWS).table


def wallet(margin_balance: str, perp_upl: str = "0") -> Wallet:
    balance = D(margin_balance)
    return Wallet(
        total_equity=balance,
        total_wallet_balance=balance - D(perp_upl),
        total_margin_balance=balance,
        total_initial_margin=D(0),
        total_maintenance_margin=D(0),
        account_mm_rate=D(0),
        account_im_rate=D(0),
        total_perp_upl=D(perp_upl),
    )


def test_initial_margin_is_value_over_leverage() -> None:
    assert initial_margin(D(20000), D(50)) == D(400)


def test_initial_margin_with_non_positive_leverage_raises() -> None:
    with pytest.raises(ValueError, match="leverage"):
        initial_margin(D(20000), D(0))


def test_initial_margin_for_tier_uses_tier_imr() -> None:
    tier = brief_table().tiers[1]
    assert initial_margin_for_tier(D(2_000_000), tier) == D(22200)


def test_maintenance_margin_is_value_times_mmr_minus_deduction() -> None:
    tier = brief_table().tiers[2]
    assert maintenance_margin(D(3_000_000), tier) == D(3_000_000) * D("0.0062") - D(2160)


def test_maintenance_margin_of_tier_far_below_its_range_floors_at_zero() -> None:
    assert maintenance_margin(D(1000), brief_table().tiers[2]) == D(0)


def test_unrealized_pnl_long_and_short() -> None:
    assert unrealized_pnl(BUY, D("0.5"), D(67500), D(70000)) == D(1250)
    assert unrealized_pnl(SELL, D(100), D(175), D("176.5")) == D(-150)


def test_isolated_liq_price_doc_example_long_1_btc_20000_at_50x_is_19700() -> None:
    # IM 400, MM 100 (0.5 %), LP = 20,000 − (400 − 100) / 1.
    assert isolated_liq_price(BUY, D(1), D(20000), D(50), D("0.005")) == D(19700)


def test_isolated_liq_price_short_mirrors_long() -> None:
    assert isolated_liq_price(SELL, D(1), D(20000), D(50), D("0.005")) == D(20300)


def test_isolated_liq_price_extra_margin_moves_it_away_by_extra_over_size() -> None:
    lp = isolated_liq_price(BUY, D(2), D(20000), D(50), D("0.005"), extra_margin=D(1000))
    assert lp == D(19200)


def test_isolated_liq_price_deduction_reduces_maintenance_margin() -> None:
    # 60 BTC at 50k (3M, tier 3): MM = 3M × 0.62 % − 2,160 = 16,440; IM at 80x = 37,500.
    lp = isolated_liq_price(BUY, D(60), D(50000), D(80), D("0.0062"), D(2160))
    assert lp == D(50000) - (D(37500) - D(16440)) / D(60)


def test_isolated_liq_price_long_never_reached_is_none() -> None:
    assert isolated_liq_price(BUY, D(1), D(100), D(1), D(0), extra_margin=D(50)) is None


def test_liq_distance_pct_long_and_short() -> None:
    assert liq_distance_pct(BUY, D(20000), D(19000)) == D(5)
    assert liq_distance_pct(SELL, D(20000), D(21000)) == D(5)
    assert liq_distance_pct(BUY, D(20000), D(21000)) == D(-5)


def test_liq_distance_pct_without_liquidation_price_is_none() -> None:
    assert liq_distance_pct(BUY, D(20000), None) is None
    assert liq_distance_pct(BUY, D(20000), D(0)) is None


def test_cross_liq_price_single_solves_margin_balance_equal_to_maintenance_margin() -> None:
    size, entry, balance, mmr = D(1), D(20000), D(2000), D("0.005")
    for side in (BUY, SELL):
        price = cross_liq_price_single(side, size, entry, balance, mmr)
        assert price is not None
        upl = unrealized_pnl(side, size, entry, price)
        assert abs((balance + upl) - size * price * mmr) < D("1e-18")


def test_account_margin_recomputes_balance_and_rate_at_current_marks() -> None:
    table = brief_table()
    # 20 BTC long at 50k, mark 49k: UPL −20,000; MM at 980k (tier 1) = 4,900.
    position = Position("main", "BTCUSDT", 0, BUY, D(20), D(50000), D(10), D(50000))
    m = account_margin(wallet("30000"), [position], {"BTCUSDT": table}, {"BTCUSDT": D(49000)})
    assert m.margin_balance == D(10000)
    assert m.total_maintenance_margin == D(4900)
    assert m.mm_rate == D("0.49")
    assert not m.in_liquidation
    assert m.complete


def test_account_margin_replaces_the_wallets_perp_upl_with_upl_at_current_marks() -> None:
    # The wallet's 9,000 margin balance included +1,000 perp UPL; at entry the UPL is 0.
    position = Position("main", "BTCUSDT", 0, BUY, D(1), D(50000), D(10))
    w = Wallet(D(9000), D(9000), D(9000), D(0), D(0), None, None, D(1000))
    m = account_margin(w, [position], {"BTCUSDT": brief_table()}, {"BTCUSDT": D(50000)})
    assert m.margin_balance == D(8000)


def test_account_margin_with_non_positive_balance_is_liquidation_without_rate() -> None:
    position = Position("main", "BTCUSDT", 0, BUY, D(20), D(50000), D(10))
    m = account_margin(
        wallet("10000"), [position], {"BTCUSDT": brief_table()}, {"BTCUSDT": D(49000)}
    )
    assert m.margin_balance == D(-10000)
    assert m.mm_rate is None
    assert m.in_liquidation


def test_account_margin_without_table_uses_reported_position_mm_and_flags_incomplete() -> None:
    position = Position("main", "XUSDT", 0, BUY, D(1), D(100), D(10), position_mm=D(7))
    m = account_margin(wallet("100"), [position], {}, {})
    assert m.total_maintenance_margin == D(7)
    assert not m.complete


# --------------------------------------------------------------------------- properties


@no_deadline
@given(
    st.sampled_from([BUY, SELL]),
    st.decimals(min_value=D("0.001"), max_value=1000, places=3),
    st.decimals(min_value=1, max_value=100_000, places=2),
    st.integers(1, 100),
    st.sampled_from([D("0.005"), D("0.0056"), D("0.01")]),
)
def test_isolated_liq_price_leaves_exactly_maintenance_margin_at_liquidation(
    side: Side, size: Decimal, entry: Decimal, leverage: int, mmr: Decimal
) -> None:
    lev = D(leverage)
    price = isolated_liq_price(side, size, entry, lev, mmr)
    if price is None:
        assert side is BUY
        return
    # Equity left in the position at the liquidation price equals its maintenance margin.
    left = size * entry / lev + unrealized_pnl(side, size, entry, price)
    assert abs(left - size * entry * mmr) < D("1e-15")


def _tier(mmr: str, deduction: str) -> Tier:
    return Tier(1, D(10**9), D(mmr), D("0.01"), D(100), D(deduction))


@no_deadline
@given(st.decimals(min_value=0, max_value=10**8, places=2))
def test_maintenance_margin_is_never_negative(value: Decimal) -> None:
    assert maintenance_margin(value, _tier("0.0062", "2160")) >= 0
