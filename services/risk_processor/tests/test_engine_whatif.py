"""Pre-trade what-if (engine/whatif.py): Bob's 90x example of docs/product.md and the
figures after a fill, checked against the formulas written out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from risk_processor.engine import (
    AccountProfile,
    MarginMode,
    Order,
    Position,
    PositionMode,
    Side,
    TierTable,
    Wallet,
    load_tier_table,
)
from risk_processor.engine.whatif import WhatIfError, what_if
from riskwatch_common.testkit import BRIEF_BTC_ROWS

D = Decimal
BUY, SELL = Side.BUY, Side.SELL

BRIEF_ROWS = BRIEF_BTC_ROWS


def tables() -> dict[str, TierTable]:
    return {"BTCUSDT": load_tier_table("BTCUSDT", BRIEF_ROWS).table}


BOB = AccountProfile("bob")
MARKS = {"BTCUSDT": D(50000)}
WALLET = Wallet(
    total_equity=D(100000),
    total_wallet_balance=D(100000),
    total_margin_balance=D(100000),
    total_initial_margin=D(11111),
    total_maintenance_margin=D(5000),
    account_mm_rate=D("0.05"),
    account_im_rate=D("0.11"),
    total_perp_upl=D(0),
)
# Bob: a 1 M long at 90x and a resting 1 M buy (tier 2)
POSITION = Position("bob", "BTCUSDT", 0, BUY, D(20), D(50000), D(90))
RESTING = Order("resting", "BTCUSDT", BUY, D(50000), D(20))


def bob(**kw: object) -> object:
    args: dict[str, object] = {
        "symbol": "BTCUSDT",
        "side": BUY,
        "qty": D(20),
        "price": D(50000),
        "portfolio_net": D(1_250_000),
    }
    args.update(kw)
    return what_if(BOB, [POSITION], [RESTING], WALLET, tables(), MARKS, **args)  # type: ignore[arg-type]


def test_bob_third_1m_order_at_90x_is_rejected_and_80x_allows_3_2m() -> None:
    r = bob()
    assert r.leverage == D(90)
    assert r.leverage_source == "position"
    assert r.check.tier_before.tier.id == 2
    assert r.check.tier_after.tier.id == 3
    assert r.check.after.value == D(3_000_000)
    assert r.check.leverage_cap == D(2_600_000)
    assert r.rejected
    assert r.check.max_leverage_allowing == D(80)
    assert r.cap_at_max_leverage == D(3_200_000)


def test_bob_at_80x_is_accepted() -> None:
    r = bob(leverage=D(80))
    assert r.leverage_source == "request"
    assert r.check.leverage_cap == D(3_200_000)
    assert not r.rejected


def test_second_order_only_moves_the_tier_1_to_2() -> None:
    r = what_if(
        BOB, [POSITION], [], WALLET, tables(), MARKS,
        symbol="BTCUSDT", side=BUY, qty=D(20), price=D(50000),
    )  # fmt: skip
    assert (r.check.tier_before.tier.id, r.check.tier_after.tier.id) == (1, 2)
    assert not r.rejected


def test_figures_after_a_fill_follow_the_formulas() -> None:
    r = bob(leverage=D(80))
    # 40 BTC at 50,000 after the fill: 2 M, tier 2 by value
    assert r.position_value_after == D(2_000_000)
    assert r.initial_margin_after == D(2_000_000) / D(80)
    assert r.maintenance_margin_after == D(2_000_000) * D("0.0056") - D(600)
    # cross, one position: balance + size × (liq − entry) = size × liq × MMR − deduction,
    # in the tier of the effective value (40 BTC held + the 20 BTC resting buy: 3 M, tier 3)
    liq = (D(40) * D(50000) - D(100000) - D(2160)) / (D(40) * (1 - D("0.0062")))
    assert r.liq_price_after == pytest.approx(liq, rel=D("1e-20"))
    assert r.liq_distance_pct_after == pytest.approx((D(50000) - liq) / D(50000) * 100)
    assert r.account_net_before == D(1_000_000)
    assert r.account_net_after == D(2_000_000)
    assert r.portfolio_net_after == D(2_250_000)
    assert r.account_mm_rate_after is not None
    assert r.account_mm_rate_before is not None
    assert r.account_mm_rate_after > r.account_mm_rate_before


def test_a_closing_order_flattens_the_position() -> None:
    r = bob(side=SELL, qty=D(20), reduce_only=True)
    assert not r.rejected
    assert r.position_value_after == 0
    assert r.liq_price_after is None
    assert r.account_net_after == 0


def test_isolated_margin_uses_the_isolated_formula() -> None:
    profile = AccountProfile("bob", margin_mode=MarginMode.ISOLATED)
    r = what_if(
        profile, [POSITION], [], WALLET, tables(), MARKS,
        symbol="BTCUSDT", side=BUY, qty=D(20), price=D(50000),
    )  # fmt: skip
    # long: entry − (IM − MM) / size, at 90x, tier 2 by value
    im = D(2_000_000) / D(90)
    mm = D(2_000_000) * D("0.0056") - D(600)
    assert r.liq_price_after == pytest.approx(D(50000) - (im - mm) / D(40))


def test_hedge_mode_sell_opens_the_short_row() -> None:
    profile = AccountProfile("bob", position_mode=PositionMode.HEDGE)
    long_row = Position("bob", "BTCUSDT", 1, BUY, D(20), D(50000), D(90))
    r = what_if(
        profile, [long_row], [], WALLET, tables(), MARKS,
        symbol="BTCUSDT", side=SELL, qty=D(10), price=D(50000), leverage=D(50),
    )  # fmt: skip
    assert r.position_value_after == D(500_000)
    assert r.account_net_after == D(500_000)


def test_unknown_symbol_or_leverage_is_a_clear_error() -> None:
    with pytest.raises(WhatIfError, match="no risk-limit table for ETHUSDT"):
        bob(symbol="ETHUSDT")
    with pytest.raises(WhatIfError, match="no leverage known"):
        what_if(
            BOB, [], [], WALLET, tables(), MARKS,
            symbol="BTCUSDT", side=BUY, qty=D(1), price=D(50000),
        )  # fmt: skip
