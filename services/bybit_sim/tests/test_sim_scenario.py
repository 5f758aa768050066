"""Scenario files: they load, their tier tables are Bybit-consistent, and they tell the story
their comments promise when driven through the exchange core."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bybit_sim.exchange import Exchange, ExchangeError
from bybit_sim.margin import expected_deductions
from bybit_sim.runner import ScenarioDriver
from bybit_sim.scenario import PlaceOrder, Scenario, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
START = 1_750_000_000_000
SCENARIO_FILES = sorted(p.name for p in SCENARIOS.glob("*.yaml"))


def drive(scenario: Scenario, until_ms: int) -> tuple[Exchange, ScenarioDriver, list[str]]:
    now = [START]
    exchange = Exchange(scenario, now_ms=lambda: now[0], run_id="t")
    driver = ScenarioDriver(scenario, exchange, start_ms=START)
    errors: list[str] = []
    for t in range(0, until_ms + 1, scenario.tick_ms):
        now[0] = START + t
        errors += driver.advance_to(now[0]).errors
    return exchange, driver, errors


def test_scenario_directory_has_the_required_files() -> None:
    assert {"sample_portfolio.yaml", "drift_to_liquidation.yaml"} <= set(SCENARIO_FILES)


@pytest.mark.parametrize("name", SCENARIO_FILES)
def test_scenario_file_tiers_follow_deduction_formula_and_imr_times_leverage_is_one(
    name: str,
) -> None:
    scenario = load_scenario(SCENARIOS / name)

    for symbol in scenario.symbols:
        tiers = sorted(symbol.tiers, key=lambda t: t.risk_limit_value)
        formula = expected_deductions([(t.risk_limit_value, t.maintenance_margin) for t in tiers])
        for tier, deduction in zip(tiers, formula, strict=True):
            assert (tier.mm_deduction or D(0)) == deduction, (symbol.symbol, tier.id)
            assert abs(tier.initial_margin * tier.max_leverage - 1) <= D("0.01")
        assert tiers[0].is_lowest_risk == 1
        assert tiers[0].mm_deduction is None  # Bybit's "" on the lowest tier


@pytest.mark.parametrize("name", SCENARIO_FILES)
def test_scenario_file_runs_a_full_cycle_without_refused_actions(name: str) -> None:
    scenario = load_scenario(SCENARIOS / name)

    _, driver, errors = drive(scenario, int(scenario.cycle_s() * 1000) + 1000)

    assert errors == []
    assert driver.cycle == 1


def test_yaml_floats_load_as_exact_decimals(sample_scenario: Scenario) -> None:
    btc = next(s for s in sample_scenario.symbols if s.symbol == "BTCUSDT")

    assert btc.tiers[1].maintenance_margin == D("0.0056")
    assert btc.tiers[1].initial_margin == D("0.0111")
    assert btc.tick_size == D("0.1")


def test_sample_portfolio_unrealised_pnl_and_sizes_match_the_brief(
    sample_scenario: Scenario,
) -> None:
    exchange = Exchange(sample_scenario, now_ms=lambda: START, run_id="t")

    rows = {
        (name, r["symbol"]): r
        for name, account in exchange.accounts.items()
        for r in exchange.position_rows(account)
    }

    expected = {
        ("main", "BTCUSDT"): ("Buy", "0.5", "67500", "10", "1250"),
        ("main", "ETHUSDT"): ("Buy", "5", "3450", "5", "350"),
        ("sub_trading", "SOLUSDT"): ("Sell", "100", "175", "3", "-150"),
        ("sub_hedge", "BNBUSDT"): ("Buy", "20", "580", "8", "80"),
    }
    got = {
        k: (r["side"], r["size"], r["avgPrice"], r["leverage"], r["unrealisedPnl"])
        for k, r in rows.items()
    }
    assert got == expected


def test_drift_scenario_net_exposure_exceeds_10k_from_the_start(drift_scenario: Scenario) -> None:
    exchange = Exchange(drift_scenario, now_ms=lambda: START, run_id="t")

    net = D(0)
    for account in exchange.accounts.values():
        for row in exchange.position_rows(account):
            value = D(str(row["positionValue"]))
            net += value if row["side"] == "Buy" else -value

    assert net > 10_000


def test_drift_scenario_90x_second_long_order_moves_tier_from_1_to_2(
    drift_scenario: Scenario,
) -> None:
    exchange = Exchange(drift_scenario, now_ms=lambda: START, run_id="t")
    account = exchange.accounts["sub_90x"]
    assert exchange.position_rows(account)[0]["riskId"] == 1

    exchange, _, _ = drive(drift_scenario, 2000)

    account = exchange.accounts["sub_90x"]
    assert exchange.position_rows(account)[0]["riskId"] == 2
    assert exchange.risk_rows(account)[0]["effectiveValue"] == "2000000"
    assert exchange.risk_events == []


def test_drift_scenario_90x_third_order_is_open_and_recorded_as_past_the_leverage_cap(
    drift_scenario: Scenario,
) -> None:
    exchange, _, _ = drive(drift_scenario, 5000)

    account = exchange.accounts["sub_90x"]
    (risk,) = exchange.risk_rows(account)
    assert risk["effectiveValue"] == "3000000"
    assert risk["maxPositionValue"] == "2600000"
    assert risk["exceedsLeverageCap"] is True
    # Auto risk limit never moves past what 90x allows.
    assert risk["riskId"] == 2
    assert [o["orderLinkId"] for o in exchange.order_rows(account)] == ["w90-third", "w90-second"]
    (event,) = exchange.risk_events
    assert event["retCode"] == 110090
    assert event["orderLinkId"] == "w90-third"
    assert "80x" in str(event["retMsg"])


def test_reject_enforcement_refuses_the_third_90x_order_with_110090(
    drift_scenario: Scenario,
) -> None:
    scenario = drift_scenario.model_copy(update={"risk_limit_enforcement": "reject"})
    exchange, _, _ = drive(scenario, 2000)
    third = PlaceOrder(account="sub_90x", symbol="BTCUSDT", side="Buy", qty=D(16), price=D(62500))

    with pytest.raises(ExchangeError) as refused:
        exchange.place_order(third)

    assert refused.value.code == 110090
    assert len(exchange.accounts["sub_90x"].open_orders) == 1


def test_drift_scenario_sol_short_mm_rate_climbs_toward_but_stays_below_liquidation(
    drift_scenario: Scenario,
) -> None:
    rates = []
    for at_ms in (0, 30_000, 60_000):
        exchange, _, _ = drive(drift_scenario, at_ms)
        wallet = exchange.wallet_row(exchange.accounts["sub_trading"])
        rates.append(D(str(wallet["accountMMRate"])))

    assert rates[0] < D("0.1")
    assert rates[0] < rates[1] < rates[2]
    assert D("0.6") < rates[2] < 1


def test_drift_scenario_cycle_ends_with_the_starting_positions_and_no_open_orders(
    drift_scenario: Scenario,
) -> None:
    start = Exchange(drift_scenario, now_ms=lambda: START, run_id="t")

    exchange, _, _ = drive(drift_scenario, 119_000)

    for name, account in exchange.accounts.items():
        before = {
            k: (p.side, p.size, p.entry_price)
            for k, p in start.accounts[name].positions.items()
            if p.is_open
        }
        after = {
            k: (p.side, p.size, p.entry_price) for k, p in account.positions.items() if p.is_open
        }
        assert after == before, name
        assert account.open_orders == {}, name


def test_many_accounts_generates_named_accounts_with_unique_keys_and_uids() -> None:
    scenario = load_scenario(SCENARIOS / "many_accounts.yaml")

    accounts = scenario.all_accounts()

    assert len(accounts) == 51
    assert accounts[1].name == "bulk_001"
    assert accounts[1].api_key == "sim-bulk-001-key"
    assert len({a.uid for a in accounts}) == 51
    assert [a.is_master for a in accounts].count(True) == 1


def test_scenario_with_wrong_deduction_is_rejected_at_load() -> None:
    text = (
        (SCENARIOS / "sample_portfolio.yaml")
        .read_text()
        .replace('mmDeduction: "600"', 'mmDeduction: "1200"')
    )

    with pytest.raises(ValidationError, match="mmDeduction"):
        parse_scenario(text)


def test_scenario_with_unknown_timeline_account_is_rejected_at_load() -> None:
    text = (
        (SCENARIOS / "sample_portfolio.yaml")
        .read_text()
        .replace("at_s: 10, account: main", "at_s: 10, account: nobody")
    )

    with pytest.raises(ValidationError, match="unknown account"):
        parse_scenario(text)


def test_hedge_position_on_wrong_index_is_rejected_at_load() -> None:
    text = (
        (SCENARIOS / "drift_to_liquidation.yaml")
        .read_text()
        .replace(
            "entry_price: 590, leverage: 8, position_idx: 2",
            "entry_price: 590, leverage: 8, position_idx: 1",
        )
    )

    with pytest.raises(ValidationError, match="hedge"):
        parse_scenario(text)


def test_account_type_defaults_to_unified_and_accepts_only_unified_or_standard(
    kit: Any,
) -> None:
    standard = kit.scenario_yaml(
        accounts="""
  - name: classic
    api_key: k
    api_secret: s
    account_type: standard
    wallet_balance: 1
"""
    )

    with pytest.raises(ValidationError, match="account_type"):
        kit.scenario_yaml(
            accounts="""
  - name: spot
    api_key: k
    api_secret: s
    account_type: spot
    wallet_balance: 1
"""
        )
    assert [a.account_type for a in standard.all_accounts()] == ["unified", "standard"]
