"""Computed actions: one per rule kind, checked against the brief's worked examples and
against the rule's own math (doing what the action says clears the condition)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from risk_processor.engine import (
    DEFAULT_THRESHOLDS,
    AccountExposure,
    AccountProfile,
    AccountType,
    Action,
    ActionKind,
    AlertCandidate,
    Order,
    Position,
    Rule,
    Side,
    Thresholds,
    Wallet,
    account_action,
    account_exposure,
    account_margin,
    evaluate_account,
    evaluate_platform_change,
    evaluate_portfolio,
    load_tier_table,
    maintenance_margin_for_value,
    platform_change_alert,
    portfolio_action,
    portfolio_exposure,
    tier_moved_up,
)
from riskwatch_common.testkit import BRIEF_BTC_ROWS

D = Decimal
BUY, SELL = Side.BUY, Side.SELL
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)

BRIEF_ROWS = BRIEF_BTC_ROWS
TABLE = load_tier_table("BTCUSDT", BRIEF_ROWS).table
TABLES = {"BTCUSDT": TABLE}
QUIET = Thresholds(
    unrealized_loss_usd=D(-(10**12)),
    net_share_warning=D(10**6),
    net_share_high=D(10**6),
    min_positions_for_bias=10**6,
)


def pos(
    symbol: str,
    side: Side,
    size: str,
    entry: str,
    lev: str = "1",
    account: str = "main",
    **kw: object,
) -> Position:
    return Position(account, symbol, 0, side, D(size), D(entry), D(lev), **kw)  # type: ignore[arg-type]


def wallet(margin_balance: str) -> Wallet:
    b = D(margin_balance)
    return Wallet(b, b, b, D(0), D(0), D(0), D(0), D(0))


def expo(
    rows: list[Position],
    *,
    orders: list[Order] | None = None,
    wallet_: Wallet | None = None,
    marks: dict[str, Decimal] | None = None,
    account: str = "main",
) -> AccountExposure:
    return account_exposure(
        AccountProfile(account), rows, orders or [], wallet_, TABLES, marks or {}
    )


def candidate(e: AccountExposure, rule: str, t: Thresholds = QUIET) -> AlertCandidate:
    [c] = [c for c in evaluate_account(e, t) if c.rule == rule]
    return c


def action_of(
    e: AccountExposure,
    rule: str,
    t: Thresholds = QUIET,
    orders: list[Order] | None = None,
) -> Action:
    found = account_action(candidate(e, rule, t), e, t, orders or [])
    assert found is not None
    return found


# --------------------------------------------------------------------------- tiers and leverage


def test_bob_at_90x_third_1m_order_blocked_lower_to_80x_or_shrink_the_order() -> None:
    # docs/product.md: 1 M long at 90x and two more 1 M orders: 3 M > the 2.6 M 90x allows.
    rows = [pos("BTCUSDT", BUY, "20", "50000", "90")]
    orders = [Order(f"o{i}", "BTCUSDT", BUY, D(50000), D(20)) for i in range(2)]
    a = action_of(expo(rows, orders=orders), Rule.ORDER_BLOCKED, orders=orders)
    assert (a.kind, a.symbol, a.leverage) == (ActionKind.LOWER_LEVERAGE, "BTCUSDT", D(80))
    shrink, cut = a.alternatives
    # 0.4 M too much: shrink one 1 M order to 0.6 M (12 BTC), or cut the position by 8 BTC.
    assert (shrink.kind, shrink.order_id, shrink.side, shrink.qty) == (
        ActionKind.CANCEL_ORDER,
        "o0",
        BUY,
        D(12),
    )
    assert (cut.kind, cut.side, cut.qty, cut.amount_usd) == (
        ActionKind.REDUCE_POSITION,
        SELL,
        D(8),
        D(400_000),
    )


def test_bob_at_2m_of_the_90x_cap_is_told_the_leverage_that_allows_the_next_order() -> None:
    rows = [pos("BTCUSDT", BUY, "20", "50000", "90")]
    orders = [Order("o1", "BTCUSDT", BUY, D(50000), D(20))]
    a = action_of(expo(rows, orders=orders), Rule.TIER_CAP_PROXIMITY, orders=orders)
    assert (a.kind, a.symbol, a.leverage) == (ActionKind.LOWER_LEVERAGE, "BTCUSDT", D(80))


def test_near_the_top_tiers_cap_that_no_leverage_lifts_cuts_back_under_the_warning() -> None:
    # 80x allows 3.2 M, the top tier: no leverage allows more. 3.1 M is 96.9 %; the alert
    # clears under 80 % less 5 % of it (76 %): keep under 2,432,000, cut more than 668,000.
    a = action_of(expo([pos("BTCUSDT", BUY, "62", "50000", "80")]), Rule.TIER_CAP_PROXIMITY)
    assert (a.kind, a.side, a.qty, a.amount_usd) == (
        ActionKind.REDUCE_POSITION,
        SELL,
        D("13.361"),
        D("668050"),
    )


def test_near_a_tier_limit_that_only_raises_margin_says_watch() -> None:
    a = action_of(expo([pos("BTCUSDT", BUY, "17", "50000", "10")]), Rule.TIER_CAP_PROXIMITY)
    assert (a.kind, a.symbol) == (ActionKind.MONITOR, "BTCUSDT")


def test_tier_moved_up_adds_the_new_tiers_initial_margin_or_cuts_back_to_the_old_tier() -> None:
    e = expo([pos("BTCUSDT", BUY, "40", "50000", "50")])  # 2 M: tier 2
    c = tier_moved_up("main", "BTCUSDT", TABLE.tiers[0], TABLE.tiers[1], D(2_000_000))
    assert c is not None
    a = account_action(c, e, QUIET)
    assert a is not None
    assert (a.kind, a.amount_usd) == (ActionKind.ADD_MARGIN, D(2200))  # 2 M × (1.11 − 1 %)
    [back] = a.alternatives
    assert (back.kind, back.qty, back.amount_usd) == (
        ActionKind.REDUCE_POSITION,
        D(20),
        D(1_000_000),
    )


def test_grace_period_add_more_than_the_margin_or_cut_the_size_before_the_deadline() -> None:
    new = load_tier_table(
        "BTCUSDT",
        [
            {"id": 1, "riskLimitValue": "500000", "maintenanceMargin": "0.01",
             "initialMargin": "0.02", "maxLeverage": "50", "mmDeduction": ""},
            {"id": 2, "riskLimitValue": "1000000", "maintenanceMargin": "0.02",
             "initialMargin": "0.04", "maxLeverage": "25", "mmDeduction": ""},
            {"id": 3, "riskLimitValue": "2000000", "maintenanceMargin": "0.04",
             "initialMargin": "0.08", "maxLeverage": "12.5", "mmDeduction": ""},
        ],
    ).table  # fmt: skip
    big = pos("BTCUSDT", BUY, "24", "50000", "10", mark_price=D(50000))
    w = wallet("25000")
    impact = evaluate_platform_change(
        big, TABLE, new, account_type=AccountType.UNIFIED, now=NOW, wallet=w
    )
    alert = platform_change_alert(impact)
    assert alert is not None
    assert impact.grace_deadline is not None
    e = expo([big], wallet_=w)
    a = account_action(alert, e, QUIET, deadlines={"BTCUSDT": impact.grace_deadline})
    assert a is not None
    # MM 23,000 must be under 75 % of the balance: 23,000 / 0.75 − 25,000 = 5,666.67; add
    # more than that. Or cut 2.125 BTC (106,250 USD). Both before the 10-day deadline.
    assert (a.kind, a.amount_usd, a.deadline) == (
        ActionKind.ADD_MARGIN,
        D("5666.68"),
        NOW + timedelta(days=10),
    )
    [cut] = a.alternatives
    assert (cut.kind, cut.side, cut.qty, cut.amount_usd, cut.deadline) == (
        ActionKind.REDUCE_POSITION,
        SELL,
        D("2.125"),
        D(106_250),
        NOW + timedelta(days=10),
    )
    topped = account_margin(wallet(str(D(25000) + a.amount_usd)), [big], {"BTCUSDT": new}, {})
    assert topped.mm_rate is not None
    assert topped.mm_rate < D("0.75")


def test_new_table_below_a_flat_positions_leverage_says_lower_it_to_the_new_maximum() -> None:
    new = load_tier_table(
        "BTCUSDT",
        [{"id": 1, "riskLimitValue": "500000", "maintenanceMargin": "0.01",
          "initialMargin": "0.02", "maxLeverage": "50", "mmDeduction": ""}],
    ).table  # fmt: skip
    flat = Position("main", "BTCUSDT", 0, None, D(0), D(0), D(75))
    impact = evaluate_platform_change(flat, TABLE, new, account_type=AccountType.STANDARD, now=NOW)
    alert = platform_change_alert(impact)
    assert alert is not None
    a = account_action(alert, expo([flat]), QUIET)
    assert a is not None
    assert (a.kind, a.symbol, a.leverage) == (ActionKind.LOWER_LEVERAGE, "BTCUSDT", D(50))


# --------------------------------------------------------------------------- margin


def test_mm_rate_add_margin_or_cut_the_position_holding_the_most_maintenance_margin() -> None:
    # 10 BTC at 50k in tier 1: MM 2,500; balance 4,800: 52.1 %. The alert clears below
    # 47.5 % (50 % less the 5 % clear margin): add more than 2,500 / 0.475 − 4,800 =
    # 463.158, or keep MM under 0.475 × 4,800 = 2,280, i.e. under 456,000 of value: cut
    # more than 0.88 BTC (44,000 USD).
    e = expo([pos("BTCUSDT", BUY, "10", "50000")], wallet_=wallet("4800"))
    a = action_of(e, Rule.ACCOUNT_MM_RATE)
    assert (a.kind, a.account, a.amount_usd) == (ActionKind.ADD_MARGIN, "main", D("463.16"))
    [cut] = a.alternatives
    assert (cut.kind, cut.symbol, cut.side, cut.qty, cut.amount_usd) == (
        ActionKind.REDUCE_POSITION,
        "BTCUSDT",
        SELL,
        D("0.881"),
        D(44_050),
    )
    after = expo([pos("BTCUSDT", BUY, str(D(10) - cut.qty), "50000")], wallet_=wallet("4800"))
    assert after.margin is not None
    assert after.margin.mm_rate is not None
    assert D("0.4749") < after.margin.mm_rate < D("0.475")


def test_liquidation_distance_add_margin_to_move_the_price_or_cut_the_size() -> None:
    # 1 BTC long marked at 50,000, liquidation at 47,000: 6 % away; back to 10.5 % needs
    # the liquidation price below 44,750: more than 2,250 USD of margin, or a size under
    # 6/10.5 of it (the rule still fires at exactly 10.5 %).
    row = pos("BTCUSDT", BUY, "1", "50000", "10", liq_price=D(47000))
    a = action_of(expo([row], marks={"BTCUSDT": D(50000)}), Rule.LIQUIDATION_DISTANCE)
    assert (a.kind, a.amount_usd) == (ActionKind.ADD_MARGIN, D("2250.01"))
    [cut] = a.alternatives
    assert (cut.kind, cut.side, cut.qty, cut.amount_usd) == (
        ActionKind.REDUCE_POSITION,
        SELL,
        D("0.429"),  # 1 − 6/10.5 = 0.4286, rounded up
        D(21_450),
    )


# --------------------------------------------------------------------------- exposure


def test_net_share_cuts_net_exposure_back_under_the_clear_level_of_equity() -> None:
    t = replace(DEFAULT_THRESHOLDS, min_positions_for_bias=10**6)
    e = expo([pos("BTCUSDT", BUY, "0.6", "50000")], wallet_=wallet("100000"))  # 30 % of equity
    a = action_of(e, Rule.NET_EXPOSURE_SHARE, t)
    # clears under 19 % (20 % less 5 %): 30,000 − 19,000 = 11,000 USD to cut, on the long side
    assert (a.kind, a.side, a.amount_usd) == (ActionKind.REDUCE_EXPOSURE, SELL, D(11_000))


def test_opt_in_usd_net_limit_cuts_to_its_clear_level() -> None:
    t = replace(QUIET, net_exposure_usd=D(10_000))
    a = action_of(expo([pos("BTCUSDT", SELL, "0.3", "50000")]), Rule.NET_EXPOSURE_USD, t)
    assert (a.kind, a.side, a.amount_usd) == (ActionKind.REDUCE_EXPOSURE, BUY, D(5_500))


def test_unrealized_loss_cuts_the_worst_loser_by_the_share_over_the_limit() -> None:
    t = replace(QUIET, unrealized_loss_usd=D(-1000))
    rows = [pos("BTCUSDT", BUY, "1", "50000"), pos("ETHUSDT", BUY, "1", "3000")]
    e = expo(rows, marks={"BTCUSDT": D(48000), "ETHUSDT": D(2900)})  # −2,000 and −100
    a = action_of(e, Rule.UNREALIZED_LOSS, t)
    # −2,100 against a −950 clear level: 1,150 of BTC's 2,000 loss, 57.5 % of 1 BTC
    assert (a.kind, a.symbol, a.qty, a.amount_usd) == (
        ActionKind.REDUCE_POSITION,
        "BTCUSDT",
        D("0.575"),
        D(27_600),
    )


SAMPLE = [
    expo([pos("BTCUSDT", BUY, "0.5", "67500"), pos("ETHUSDT", BUY, "5", "3450")]),
    expo([pos("SOLUSDT", SELL, "100", "175", account="sub_trading")], account="sub_trading"),
    expo([pos("BNBUSDT", BUY, "20", "580", account="sub_hedge")], account="sub_hedge"),
]


def test_direction_bias_of_the_sample_portfolio_closes_the_two_smallest_longs() -> None:
    # docs/product.md's sample: 3 of 4 positions long (75 % > 70 %). Closing BNB leaves
    # 66.7 %, above the 66.5 % clear level; closing ETH too leaves 50 %.
    p = portfolio_exposure(SAMPLE)
    [c] = [c for c in evaluate_portfolio(p) if c.rule == Rule.DIRECTION_BIAS]
    a = portfolio_action(c, p, DEFAULT_THRESHOLDS)
    assert a is not None
    assert (a.kind, a.account, a.side, a.amount_usd) == (
        ActionKind.REDUCE_EXPOSURE,
        "portfolio",
        SELL,
        D(11_600) + D(17_250),
    )


def test_correlation_with_one_position_too_many_closes_the_smallest_on_that_side() -> None:
    p = portfolio_exposure(SAMPLE[:2])  # 2 long, 1 short: 66.7 % > 60 %
    [c] = [c for c in evaluate_portfolio(p) if c.rule == Rule.CORRELATION_RISK]
    a = portfolio_action(c, p, DEFAULT_THRESHOLDS)
    assert a is not None
    assert (a.kind, a.account, a.symbol, a.side, a.qty, a.amount_usd) == (
        ActionKind.REDUCE_POSITION,
        "main",
        "ETHUSDT",
        SELL,
        D(5),
        D(17_250),
    )


def test_bybit_reduce_only_says_reduce_the_symbol_and_system_adjustment_says_watch() -> None:
    flagged = pos("BTCUSDT", BUY, "1", "50000", is_reduce_only=True, mmr_sys_updated_at=NOW)
    e = expo([flagged])
    reduce = action_of(e, Rule.BYBIT_REDUCE_ONLY)
    assert (reduce.kind, reduce.symbol, reduce.side) == (
        ActionKind.REDUCE_POSITION,
        "BTCUSDT",
        SELL,
    )
    watch = action_of(e, Rule.BYBIT_SYSTEM_ADJUSTMENT)
    assert (watch.kind, watch.symbol) == (ActionKind.MONITOR, "BTCUSDT")


# --------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(
    size=st.decimals(min_value=D("0.01"), max_value=D(60), places=3),
    rate=st.decimals(min_value=D("0.5"), max_value=D("0.99"), places=4),
)
def test_doing_the_mm_rate_action_or_its_alternative_clears_the_alert(
    size: Decimal, rate: Decimal
) -> None:
    row = pos("BTCUSDT", BUY, str(size), "50000")
    mm = maintenance_margin_for_value(TABLE, size * 50000)
    balance = (mm / rate).quantize(D("0.01"))
    e = expo([row], wallet_=wallet(str(balance)))
    found = [c for c in evaluate_account(e, QUIET) if c.rule == Rule.ACCOUNT_MM_RATE]
    if not found:
        return  # rounding the balance put it just under 50 %
    a = account_action(found[0], e, QUIET)
    assert a is not None
    assert a.amount_usd is not None
    clear = QUIET.clear.mm_rate_warning
    topped = expo([row], wallet_=wallet(str(balance + a.amount_usd))).margin
    assert topped is not None
    assert topped.mm_rate is not None
    assert topped.mm_rate < clear
    for cut in a.alternatives:
        assert cut.qty is not None
        left = pos("BTCUSDT", BUY, str(size - cut.qty), "50000")
        after = expo([left], wallet_=wallet(str(balance))).margin
        assert after is not None
        assert after.mm_rate is not None
        assert after.mm_rate < clear


@settings(max_examples=150, deadline=None)
@given(
    held=st.integers(min_value=1, max_value=60),
    ordered=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=3),
    leverage=st.sampled_from(["90", "95", "100"]),
)
def test_each_way_out_of_a_blocked_order_fits_the_leverage_cap(
    held: int, ordered: list[int], leverage: str
) -> None:
    rows = [pos("BTCUSDT", BUY, str(held), "50000", leverage)]
    orders = [Order(f"o{i}", "BTCUSDT", BUY, D(50000), D(q)) for i, q in enumerate(ordered)]
    e = expo(rows, orders=orders)
    found = [c for c in evaluate_account(e, QUIET) if c.rule == Rule.ORDER_BLOCKED]
    if not found:
        return
    a = account_action(found[0], e, QUIET, orders)
    assert a is not None
    lone_cancel = a.kind == ActionKind.CANCEL_ORDER and not a.alternatives and a.qty == 0
    for way in (a, *a.alternatives):
        if way.kind == ActionKind.LOWER_LEVERAGE:
            assert way.leverage is not None
            after = expo(
                [pos("BTCUSDT", BUY, str(held), "50000", str(way.leverage))], orders=orders
            )
        elif way.kind == ActionKind.CANCEL_ORDER:
            assert way.qty is not None
            kept = [o if o.order_id != way.order_id else replace(o, qty=way.qty) for o in orders]
            after = expo(rows, orders=[o for o in kept if o.qty > 0])
        else:
            assert way.kind == ActionKind.REDUCE_POSITION
            assert way.qty is not None
            cut = pos("BTCUSDT", BUY, str(D(held) - way.qty), "50000", leverage)
            after = expo([cut], orders=orders)
        still = [c for c in evaluate_account(after, QUIET) if c.rule == Rule.ORDER_BLOCKED]
        if lone_cancel:  # no single step is enough: the first one takes the largest part
            assert after.positions[0].effective_value < e.positions[0].effective_value
        else:
            assert not still, way
