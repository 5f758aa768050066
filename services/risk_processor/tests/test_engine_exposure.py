"""Account and portfolio exposure, risk level, and incremental re-evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError, fields, replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk_processor.engine import (
    AccountExposure,
    AccountProfile,
    MarginMode,
    Order,
    Position,
    PositionMode,
    RiskLevel,
    RiskLevelPolicy,
    Side,
    TierTable,
    Wallet,
    account_exposure,
    load_tier_table,
    portfolio_exposure,
)
from risk_processor.engine.exposure import (
    PortfolioExposure,
    PositionExposure,
    _account_exposure,
    _portfolio_exposure,
    _position_exposure,
)
from risk_processor.engine.types import draft_class
from riskwatch_common.testkit import BRIEF_BTC_ROWS

D = Decimal
# Property tests check results, not speed; a busy shared machine must not fail them.
no_deadline = settings(deadline=None)
BUY, SELL = Side.BUY, Side.SELL

BRIEF_ROWS = BRIEF_BTC_ROWS


def table(symbol: str = "BTCUSDT") -> TierTable:
    return load_tier_table(symbol, BRIEF_ROWS).table


def wallet(equity: str, perp_upl: str = "0") -> Wallet:
    e = D(equity)
    return Wallet(e, e - D(perp_upl), e, D(0), D(0), D(0), D(0), D(perp_upl))


def position(
    account: str, symbol: str, side: Side, size: str, entry: str, lev: str, **kw: object
) -> Position:
    return Position(account, symbol, 0, side, D(size), D(entry), D(lev), **kw)  # type: ignore[arg-type]


# The sample portfolio of docs/product.md, with marks that reproduce the noted unrealized PnL.
MARKS = {"BTCUSDT": D(70000), "ETHUSDT": D(3520), "SOLUSDT": D("176.5"), "BNBUSDT": D(584)}
MAIN = [
    position("main", "BTCUSDT", BUY, "0.5", "67500", "10"),
    position("main", "ETHUSDT", BUY, "5", "3450", "5"),
]
SUB_TRADING = [position("sub_trading", "SOLUSDT", SELL, "100", "175", "3")]
SUB_HEDGE = [position("sub_hedge", "BNBUSDT", BUY, "20", "580", "8")]
TABLES = {s: table(s) for s in MARKS}


def exposure(name: str, rows: list[Position], equity: str = "100000") -> AccountExposure:
    """Exposure with a wallet fresh at these marks (its perp UPL is the current UPL)."""
    upl = sum(
        (p.size * (MARKS[p.symbol] - p.entry_price) * (1 if p.side is BUY else -1) for p in rows),
        D(0),
    )
    w = wallet(equity, str(upl))
    return account_exposure(AccountProfile(name), rows, [], w, TABLES, MARKS)


def test_sample_portfolio_unrealized_pnl_matches_the_users_notes() -> None:
    main = exposure("main", MAIN)
    assert [p.unrealized_pnl for p in main.positions] == [D(1250), D(350)]
    assert exposure("sub_trading", SUB_TRADING).unrealized_pnl == D(-150)
    assert exposure("sub_hedge", SUB_HEDGE).unrealized_pnl == D(80)


def test_sample_portfolio_totals_net_gross_and_top_three_by_notional_times_leverage() -> None:
    accounts = [
        exposure("main", MAIN),
        exposure("sub_trading", SUB_TRADING),
        exposure("sub_hedge", SUB_HEDGE),
    ]
    total = portfolio_exposure(accounts)
    assert total.total_long == D(35000) + D(17600) + D(11680)
    assert total.total_short == D(17650)
    assert total.net == D(46630)
    assert total.gross == D(81930)
    assert total.unrealized_pnl == D(1530)
    assert total.buy_share == D("0.75")
    assert total.equity == D(300000)
    assert total.net_share == D(46630) / D(300000)
    # BTC 35,000 × 10, BNB 11,680 × 8, ETH 17,600 × 5 (SOL 17,650 × 3 is fourth).
    assert [p.position.symbol for p in total.top_risks] == ["BTCUSDT", "BNBUSDT", "ETHUSDT"]
    assert total.top_risks[0].risk_score == D(350000)


def test_account_exposure_net_share_and_direction_bias() -> None:
    main = exposure("main", MAIN, equity="200000")
    assert main.net == D(52600)
    assert main.net_share == D(52600) / D(200000)
    assert main.buy_share == D(1)
    assert main.position_count == 2


def test_equity_and_margin_follow_upl_since_the_wallet_update() -> None:
    # The wallet was taken when UPL was +100; now it is +1,250 on BTC.
    rows = [MAIN[0]]
    e = account_exposure(AccountProfile("main"), rows, [], wallet("10000", "100"), TABLES, MARKS)
    assert e.equity == D(10000) - D(100) + D(1250)
    assert e.margin is not None
    assert e.margin.margin_balance == D(11150)
    assert e.margin.total_maintenance_margin == D(35000) * D("0.005")


def test_position_tier_headroom_and_leverage_cap_figures() -> None:
    rows = [position("main", "BTCUSDT", BUY, "20", "50000", "90")]
    orders = [Order("o1", "BTCUSDT", BUY, D(50000), D(20))]
    e = account_exposure(AccountProfile("main"), rows, orders, None, TABLES, {})
    pe = e.positions[0]
    assert pe.effective_value == D(2_000_000)
    assert pe.tier is not None
    assert pe.tier.id == 2
    assert pe.headroom_to_next_tier == D(600_000)
    assert pe.leverage_cap == D(2_600_000)
    assert pe.headroom_to_leverage_cap == D(600_000)
    assert pe.max_leverage_allowing == D(90)
    assert not pe.over_limit


def test_isolated_position_without_bybit_liq_price_gets_the_isolated_estimate() -> None:
    rows = [position("main", "BTCUSDT", BUY, "1", "20000", "50")]
    profile = AccountProfile("main", margin_mode=MarginMode.ISOLATED)
    e = account_exposure(profile, rows, [], None, TABLES, {"BTCUSDT": D(20000)})
    assert e.positions[0].liq_price == D(19700)
    assert e.positions[0].liq_distance_pct == D("1.5")
    assert e.margin is None


def test_bybit_liq_price_is_preferred_over_the_estimate() -> None:
    rows = [position("main", "BTCUSDT", BUY, "1", "20000", "50", liq_price=D(19750))]
    profile = AccountProfile("main", margin_mode=MarginMode.ISOLATED)
    e = account_exposure(profile, rows, [], None, TABLES, {"BTCUSDT": D(20000)})
    assert e.positions[0].liq_price == D(19750)


def test_portfolio_margin_uses_wallet_rate_and_has_no_tier_figures() -> None:
    w = replace(wallet("10000"), account_mm_rate=D("0.42"))
    profile = AccountProfile("main", margin_mode=MarginMode.PORTFOLIO)
    e = account_exposure(profile, MAIN, [], w, TABLES, MARKS)
    assert e.margin_ratio == D("0.42")
    assert all(p.tier is None for p in e.positions)


def test_flat_rows_are_skipped() -> None:
    flat = Position("main", "BTCUSDT", 0, None, D(0), D(0), D(10))
    e = account_exposure(AccountProfile("main"), [flat], [], None, TABLES, MARKS)
    assert e.positions == ()
    assert e.buy_share is None


def test_hedge_sides_share_the_symbols_effective_value() -> None:
    rows = [
        Position("main", "BTCUSDT", 1, BUY, D(1), D(40000), D(10)),
        Position("main", "BTCUSDT", 2, SELL, D(1), D(50000), D(10)),
    ]
    orders = [Order("o1", "BTCUSDT", SELL, D(60000), D(1), 2)]
    profile = AccountProfile("main", position_mode=PositionMode.HEDGE)
    e = account_exposure(profile, rows, orders, None, TABLES, {"BTCUSDT": D(45000)})
    assert [p.effective_value for p in e.positions] == [D(110000), D(110000)]
    assert e.net == D(0)


# --------------------------------------------------------------------------- risk level


def liq_exposure(distance_pct: str, equity: str = "1000000") -> AccountExposure:
    mark = D(10000)
    liq = mark * (1 - D(distance_pct) / 100)
    rows = [position("main", "BTCUSDT", BUY, "0.01", "10000", "10", liq_price=liq)]
    return account_exposure(
        AccountProfile("main"), rows, [], wallet(equity), TABLES, {"BTCUSDT": mark}
    )


def test_risk_level_low_when_far_from_every_threshold() -> None:
    assert liq_exposure("50").risk_level is RiskLevel.LOW


def test_risk_level_high_at_5_pct_liquidation_distance_and_medium_at_15() -> None:
    assert liq_exposure("5").risk_level is RiskLevel.HIGH
    assert liq_exposure("5.01").risk_level is RiskLevel.MEDIUM
    assert liq_exposure("15").risk_level is RiskLevel.MEDIUM
    assert liq_exposure("15.01").risk_level is RiskLevel.LOW


def test_risk_level_from_net_share_of_equity_20_and_50_pct() -> None:
    # Net 100 USD (0.01 BTC at 10,000).
    assert liq_exposure("90", equity="200").risk_level is RiskLevel.HIGH
    assert liq_exposure("90", equity="201").risk_level is RiskLevel.MEDIUM
    assert liq_exposure("90", equity="500").risk_level is RiskLevel.MEDIUM
    assert liq_exposure("90", equity="501").risk_level is RiskLevel.LOW


def test_risk_level_from_account_mm_rate_30_and_50_pct() -> None:
    # 10 BTC at 50k: MM 2,500 in tier 1.
    rows = [position("main", "BTCUSDT", BUY, "10", "50000", "1")]
    policy = RiskLevelPolicy(high_net_share=D(10**6), medium_net_share=D(10**6))

    def level(balance: str) -> RiskLevel:
        w = wallet(balance)
        return account_exposure(AccountProfile("main"), rows, [], w, TABLES, {}, policy).risk_level

    assert level("5000") is RiskLevel.HIGH
    assert level("5001") is RiskLevel.MEDIUM
    assert level("8333") is RiskLevel.MEDIUM
    assert level("8334") is RiskLevel.LOW


def test_risk_level_medium_within_10_pct_of_a_cap() -> None:
    rows = [position("main", "BTCUSDT", BUY, "18", "50000", "1")]  # 900k of the 1M tier 1
    assert account_exposure(AccountProfile("main"), rows, [], None, TABLES, {}).risk_level is (
        RiskLevel.MEDIUM
    )
    rows = [position("main", "BTCUSDT", BUY, "17.99", "50000", "1")]
    assert account_exposure(AccountProfile("main"), rows, [], None, TABLES, {}).risk_level is (
        RiskLevel.LOW
    )


def test_portfolio_risk_level_is_at_least_the_worst_account() -> None:
    calm, risky = liq_exposure("50"), liq_exposure("4")
    assert portfolio_exposure([calm, risky]).risk_level is RiskLevel.HIGH


# --------------------------------------------------------------------------- incremental

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
marks_st = st.fixed_dictionaries(
    {s: st.decimals(min_value=100, max_value=100_000, places=1) for s in SYMBOLS}
)


@no_deadline
@given(
    marks_st,
    marks_st,
    st.lists(st.booleans(), min_size=3, max_size=3),
    st.lists(st.sampled_from(SYMBOLS), max_size=3),
)
def test_incremental_exposure_equals_exposure_from_scratch(
    first: dict[str, Decimal],
    second: dict[str, Decimal],
    replaced: list[bool],
    order_symbols: list[str],
) -> None:
    profile = AccountProfile("main")
    tables = {s: table(s) for s in SYMBOLS}
    rows = [
        position("main", "BTCUSDT", BUY, "2", "50000", "20", liq_price=D(40000)),
        position("main", "ETHUSDT", SELL, "30", "3000", "10"),
        position("main", "SOLUSDT", BUY, "1000", "150", "5"),
    ]
    before = account_exposure(profile, rows, [], None, tables, first)
    # Some rows replaced by new objects (a position update), some orders placed, marks moved.
    rows2 = [
        replace(r, size=r.size + 1) if flip else r for r, flip in zip(rows, replaced, strict=True)
    ]
    orders = [Order(f"o{i}", s, BUY, D(100), D(1)) for i, s in enumerate(order_symbols)]
    incremental = account_exposure(profile, rows2, orders, None, tables, second, previous=before)
    scratch = account_exposure(profile, rows2, orders, None, tables, second)
    assert incremental == scratch
    assert [p.table for p in incremental.positions] == [p.table for p in scratch.positions]


def test_incremental_exposure_reuses_untouched_positions() -> None:
    profile = AccountProfile("main")
    tables = {s: table(s) for s in SYMBOLS}
    rows = [
        position("main", "BTCUSDT", BUY, "2", "50000", "20"),
        position("main", "ETHUSDT", SELL, "30", "3000", "10"),
    ]
    marks = {"BTCUSDT": D(50000), "ETHUSDT": D(3000)}
    before = account_exposure(profile, rows, [], None, tables, marks)
    after = account_exposure(
        profile, rows, [], None, tables, {**marks, "BTCUSDT": D(51000)}, previous=before
    )
    assert after.positions[0] is not before.positions[0]
    assert after.positions[1] is before.positions[1]


def test_incremental_exposure_recomputes_when_the_table_object_changes() -> None:
    profile = AccountProfile("main")
    rows = [position("main", "BTCUSDT", BUY, "2", "50000", "20")]
    before = account_exposure(profile, rows, [], None, {"BTCUSDT": table()}, {})
    after = account_exposure(profile, rows, [], None, {"BTCUSDT": table()}, {}, previous=before)
    assert after.positions[0] is not before.positions[0]
    assert after == before


# --------------------------------------------------------------------------- hot-path builders


def test_fast_builders_match_the_dataclass_constructors_field_by_field() -> None:
    builders: list[tuple[type, Callable[..., object]]] = [
        (PositionExposure, _position_exposure),
        (AccountExposure, _account_exposure),
        (PortfolioExposure, _portfolio_exposure),
    ]
    for cls, build in builders:
        # A distinct value per field, so a value written to the wrong slot shows up.
        values: dict[str, Any] = {f.name: D(i) for i, f in enumerate(fields(cls))}
        built = build(**values)
        assert all(getattr(built, name) == value for name, value in values.items())
        assert built == cls(**values)


def test_built_values_are_frozen_and_hash_like_constructed_ones() -> None:
    values: dict[str, Any] = {f.name: D(i) for i, f in enumerate(fields(PositionExposure))}
    built = _position_exposure(**values)
    assert type(built) is PositionExposure
    assert hash(built) == hash(PositionExposure(**values))
    with pytest.raises(FrozenInstanceError):
        built.notional = D(1)  # type: ignore[misc]


def test_draft_class_needs_a_slots_class() -> None:
    class Plain:
        pass

    with pytest.raises(TypeError):
        draft_class(Plain)


# --------------------------------------------------------------------------- incremental chains


def exact(x: object) -> object:
    """``x`` with every Decimal as its string, so ``Decimal('1.0')`` != ``Decimal('1.00')``."""
    if isinstance(x, Decimal):
        return ("D", str(x))
    if isinstance(x, tuple | list):
        return [exact(v) for v in x]
    if isinstance(x, dict):
        return [(k, exact(v)) for k, v in x.items()]
    if isinstance(x, PositionExposure | AccountExposure) or type(x).__name__ in (
        "AccountMargin",
        "AlertCandidate",
    ):
        return [
            (f.name, exact(getattr(x, f.name)))
            for f in fields(x)  # type: ignore[arg-type]
            if f.compare
        ]
    return x


CHAIN_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
step_st = st.one_of(
    # A mark moves, sometimes back to the entry. (Not to an equal value spelt differently:
    # an equal mark keeps the previous figures, spelling included, by design.)
    st.tuples(
        st.just("mark"),
        st.sampled_from(CHAIN_SYMBOLS),
        st.sampled_from(["50", "99.5", "100", "101", "150", "2000", "60000"]),
    ),
    st.tuples(st.just("row"), st.integers(0, 3), st.sampled_from(["1", "2", "0", "10"])),
    st.tuples(st.just("order"), st.sampled_from(CHAIN_SYMBOLS), st.sampled_from(["1", "5"])),
    st.tuples(st.just("cancel"), st.just(""), st.just("")),
    st.tuples(st.just("table"), st.sampled_from(CHAIN_SYMBOLS), st.just("")),
    st.tuples(st.just("policy"), st.just(""), st.just("")),
)


@no_deadline
@given(
    st.sampled_from(list(MarginMode)),
    st.lists(step_st, min_size=1, max_size=12),
)
def test_a_chain_of_incremental_evaluations_equals_each_from_scratch(
    margin: MarginMode, steps: list[tuple[str, str, str]]
) -> None:
    # Equal risk scores (size × mark × leverage) on purpose: the top three keep ties in
    # position order however the ranks are kept between evaluations.
    profile = AccountProfile("main", margin_mode=margin)
    tables = {s: table(s) for s in CHAIN_SYMBOLS[:3]}
    rows = [
        position("main", "BTCUSDT", BUY, "1", "100", "10", liq_price=D(90)),
        position("main", "ETHUSDT", SELL, "1", "100", "10"),
        position("main", "SOLUSDT", BUY, "2", "100", "5"),
        position("main", "XRPUSDT", SELL, "10", "100", "1", liq_price=D(150)),
    ]
    orders: list[Order] = []
    marks = {s: D(100) for s in CHAIN_SYMBOLS}
    w = wallet("100000", "0")
    policies = [RiskLevelPolicy(), RiskLevelPolicy(medium_cap_proximity=D("0.9999"))]
    policy = policies[0]
    last = account_exposure(profile, rows, orders, w, tables, marks, policy)
    for kind, a, b in steps:
        if kind == "mark":
            marks = {**marks, a: D(b)}
        elif kind == "row":
            i = int(a)
            rows = [*rows[:i], replace(rows[i], size=D(b)), *rows[i + 1 :]]
        elif kind == "order":
            orders = [*orders, Order(f"o{len(orders)}", a, BUY, D(100), D(b))]
        elif kind == "cancel":
            orders = orders[1:]
        elif kind == "table" and a in tables:
            tables = {**tables, a: table(a)}
        elif kind == "policy":
            policy = policies[1] if policy is policies[0] else policies[0]
        incremental = account_exposure(
            AccountProfile("main", margin_mode=margin), rows, orders, w, tables, marks, policy, last
        )
        scratch = account_exposure(profile, rows, orders, w, tables, marks, policy)
        assert exact(incremental) == exact(scratch)
        assert [id(p.position) for p in incremental.top_risks] == [
            id(p.position) for p in scratch.top_risks
        ]
        last = incremental


def test_account_exposure_compares_every_profile_field() -> None:
    # account_exposure compares the previous profile field by field (cheaper than the
    # dataclass's __eq__); a field added to AccountProfile must be added there too.
    assert [f.name for f in fields(AccountProfile)] == [
        "account",
        "account_type",
        "margin_mode",
        "position_mode",
        "group",
    ]


def test_a_previous_exposure_under_another_margin_mode_is_not_reused() -> None:
    rows = [position("main", "BTCUSDT", BUY, "1", "20000", "50")]
    marks = {"BTCUSDT": D(20000)}
    cross = account_exposure(AccountProfile("main"), rows, [], None, TABLES, marks)
    isolated = AccountProfile("main", margin_mode=MarginMode.ISOLATED)
    after = account_exposure(isolated, rows, [], None, TABLES, marks, previous=cross)
    assert exact(after) == exact(account_exposure(isolated, rows, [], None, TABLES, marks))
    assert after.positions[0].liq_price == D(19700)
