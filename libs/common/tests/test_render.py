"""render: numbers rounded by kind, rule names, and actions in one phone-readable line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riskwatch_common.contracts import ActionKind, Side, SuggestedAction
from riskwatch_common.render import (
    base_coin,
    deadline,
    describe_action,
    figure,
    leverage,
    percent,
    price,
    rule_name,
    size,
    usd,
)

D = Decimal


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (D("1250.5"), "1,250.50 USD"),
        (D("0.017027"), "0.02 USD"),
        (D("-150"), "-150 USD"),
        (D("2499.999"), "2,500 USD"),
        (D("9999.994"), "9,999.99 USD"),
        (D("9999.996"), "10,000 USD"),
        (D("49586.4"), "49,586 USD"),
        (D("1410000.123"), "1,410,000 USD"),
        (D("-0.001"), "0 USD"),
    ],
)
def test_usd_is_cents_below_ten_thousand_and_whole_dollars_from_there(
    value: Decimal, expected: str
) -> None:
    assert usd(value) == expected


def test_usd_at_least_rounds_up_so_the_amount_is_enough() -> None:
    assert usd(D("21333.33"), "USDT", at_least=True) == "21,334 USDT"
    assert usd(D("12.301"), at_least=True) == "12.31 USD"
    assert usd(D("21333.33"), "USDT") == "21,333 USDT"


def test_price_uses_the_tick_when_known_and_the_magnitude_otherwise() -> None:
    assert price(D("67500.123456"), D("0.10")) == "67,500.1"
    assert price(D("67500.26"), D("0.5")) == "67,500.5"
    assert price(D("67500.123456")) == "67,500.12"
    assert price(D("3.123456789")) == "3.1235"
    assert price(D("0.000012345678")) == "0.0000123457"


def test_size_uses_the_lot_step_when_known_and_three_significant_digits_otherwise() -> None:
    assert size(D("5.71428571428571428571428571")) == "5.71"
    assert size(D("0.5")) == "0.5"
    assert size(D("12345.678")) == "12,346"
    assert size(D("0.0123456")) == "0.0123"
    assert size(D("5.71428571"), D("0.001")) == "5.714"
    assert size(D("5.71428571"), D("0.001"), at_least=True) == "5.715"
    assert size(D("100"), D("0.001")) == "100.000"


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (D("0.0476"), "4.8%"),
        (D("0.96153846"), "96.2%"),
        (D("0.80"), "80%"),
        (D("0.0045"), "0.45%"),
        (D("0"), "0%"),
        (D("-0.123"), "-12.3%"),
    ],
)
def test_percent_takes_a_fraction_and_shows_one_or_two_decimals(
    fraction: Decimal, expected: str
) -> None:
    assert percent(fraction) == expected


@given(st.decimals(min_value=-(10**12), max_value=10**12, allow_nan=False, places=28))
def test_no_rendered_number_has_more_than_eleven_decimals(value: Decimal) -> None:
    for text in (usd(value), price(value), size(value), percent(value), leverage(value)):
        digits = text.rstrip("%× USD").split(".")
        assert len(digits) <= 2
        if len(digits) == 2:
            assert len(digits[1]) <= 11, text


def test_leverage_rounds_down_because_it_is_a_maximum() -> None:
    assert leverage(D("80")) == "80×"
    assert leverage(D("80.000")) == "80×"
    assert leverage(D("12.519")) == "12.51×"


def test_deadline_is_written_in_the_readers_zone() -> None:
    at = datetime(2026, 12, 14, 9, 0, tzinfo=UTC)
    assert deadline(at) == "Mon 14 Dec 09:00"
    assert deadline(at, timezone(timedelta(hours=8))) == "Mon 14 Dec 17:00"


def test_rule_names_are_human_and_unknown_ids_are_made_readable() -> None:
    assert rule_name("order_blocked_by_leverage") == "Order blocked by leverage"
    assert rule_name("liquidation_distance") == "Close to liquidation"
    assert rule_name("some_new_rule") == "Some new rule"


def test_base_coin_of_linear_symbols() -> None:
    assert base_coin("BTCUSDT") == "BTC"
    assert base_coin("1000PEPEUSDT") == "1000PEPE"
    assert base_coin("ETHPERP") == "ETH"
    assert base_coin("USDT") is None


def test_describe_add_margin_or_cut_before_the_grace_deadline() -> None:
    action = SuggestedAction(
        kind=ActionKind.ADD_MARGIN,
        account="sub_90x",
        symbol="BTCUSDT",
        amount_usd=D("21333.3333333"),
        deadline=datetime(2026, 12, 14, 9, 0, tzinfo=UTC),
        alternatives=(
            SuggestedAction(
                kind=ActionKind.REDUCE_POSITION,
                account="sub_90x",
                symbol="BTCUSDT",
                side=Side.SELL,
                qty=D("5.71428571428571428571428571"),
                amount_usd=D("396000.0000001"),
            ),
        ),
    )
    assert describe_action(action) == (
        "add at least 21,334 USDT margin or cut BTCUSDT by 5.71 BTC (396,000 USD)"
        " before Mon 14 Dec 09:00"
    )


def test_describe_lower_leverage() -> None:
    action = SuggestedAction(
        kind=ActionKind.LOWER_LEVERAGE, account="bob", symbol="BTCUSDT", leverage=D("80")
    )
    assert describe_action(action) == "lower BTCUSDT leverage to 80× or less"


def test_describe_reduce_position_uses_the_lot_step_when_given() -> None:
    action = SuggestedAction(
        kind=ActionKind.REDUCE_POSITION,
        account="main",
        symbol="BTCUSDT",
        qty=D("0.5"),
        amount_usd=D("33750"),
    )
    assert describe_action(action) == "reduce BTCUSDT by 0.5 BTC (33,750 USD)"
    assert describe_action(action, lot_step=D("0.001")) == (
        "reduce BTCUSDT by 0.500 BTC (33,750 USD)"
    )


def test_describe_cancel_and_shrink_an_order() -> None:
    cancel = SuggestedAction(
        kind=ActionKind.CANCEL_ORDER,
        account="bob",
        symbol="BTCUSDT",
        side=Side.BUY,
        order_id="o-1",
        qty=D(0),
        amount_usd=D("1000000"),
    )
    assert describe_action(cancel) == "cancel the BTCUSDT buy order (1,000,000 USD)"
    shrink = cancel.model_copy(update={"qty": D("8.88888888"), "amount_usd": None})
    assert describe_action(shrink) == "shrink the BTCUSDT buy order to 8.89 BTC"


def test_describe_reduce_exposure_names_the_scope() -> None:
    portfolio = SuggestedAction(
        kind=ActionKind.REDUCE_EXPOSURE, account="portfolio", amount_usd=D("120000.4")
    )
    assert describe_action(portfolio) == (
        "reduce net exposure across all accounts by at least 120,001 USD"
    )
    account = portfolio.model_copy(update={"account": "main", "amount_usd": D("2.1679")})
    assert describe_action(account) == "reduce net exposure on main by at least 2.17 USD"


def test_describe_check_link_and_monitor() -> None:
    link = SuggestedAction(kind=ActionKind.CHECK_LINK, account="sub_hedge")
    assert describe_action(link) == "check sub_hedge's link to Bybit (API key, network)"
    expiring = link.model_copy(update={"deadline": datetime(2026, 12, 10, 9, 0, tzinfo=UTC)})
    assert describe_action(expiring) == "renew sub_hedge's API key on Bybit before Thu 10 Dec 09:00"
    watch = SuggestedAction(kind=ActionKind.MONITOR, account="main", symbol="ETHUSDT")
    assert describe_action(watch) == "no action needed now; keep watching ETHUSDT"


def test_an_action_on_another_account_than_the_alerts_names_it() -> None:
    cut = SuggestedAction(
        kind=ActionKind.REDUCE_POSITION,
        account="main",
        symbol="ETHUSDT",
        qty=D(5),
        amount_usd=D(17250),
    )
    assert describe_action(cut, alert_account="portfolio") == (
        "reduce ETHUSDT on main by 5 ETH (17,250 USD)"
    )
    assert describe_action(cut, alert_account="main") == "reduce ETHUSDT by 5 ETH (17,250 USD)"
    lower = SuggestedAction(
        kind=ActionKind.LOWER_LEVERAGE, account="bob", symbol="BTCUSDT", leverage=D(80)
    )
    assert describe_action(lower, alert_account="portfolio") == (
        "lower BTCUSDT leverage on bob to 80× or less"
    )
    margin = SuggestedAction(kind=ActionKind.ADD_MARGIN, account="bob", amount_usd=D(100))
    assert describe_action(margin, alert_account="portfolio") == (
        "add at least 100 USDT margin to bob"
    )


@pytest.mark.parametrize(
    ("key", "value", "rule", "expected"),
    [
        ("cap_utilization", D("0.96153846153846153846"), "", "96.2%"),
        ("account_mm_rate", D("0.517027"), "", "51.7%"),
        ("liq_distance_pct", D("4.7619047619"), "", "4.8%"),
        ("mark_price", D("67500.123456"), "", "67,500.12"),
        ("size", D("5.71428571428571428571428571"), "", "5.71"),
        ("max_leverage_allowing", D("80.0000"), "", "80×"),
        ("positions", D(4), "", "4"),
        ("net", D("49586.4123"), "", "49,586 USD"),
        ("leverage_cap", D(2600000), "", "2,600,000 USD"),
        ("value", D("0.5"), "account_mm_rate", "50%"),
        ("value", D("4.76"), "liquidation_distance", "4.8%"),
        ("threshold", D(10000), "net_exposure_usd", "10,000 USD"),
    ],
)
def test_alert_numbers_read_by_their_kind(
    key: str, value: Decimal, rule: str, expected: str
) -> None:
    assert figure(key, value, rule) == expected
