"""Hedge options of HIGH/CRITICAL alerts: each option's fees, margin, net, tier, liquidation."""

from __future__ import annotations

from decimal import Decimal

from processor_testkit import BRIEF_BTC_TIERS, T0, position, tier_table, wallet
from risk_processor import state
from risk_processor.config import parse_config
from risk_processor.engine.hedging import DEFAULT_TAKER_FEE_RATE, hedge_options
from risk_processor.evaluate import AccountState, evaluate_account
from risk_processor.outputs import Cause
from riskwatch_common.contracts import Side

D = Decimal
MARKS = {"BTCUSDT": D(70000), "ETHUSDT": D(3520)}
BTC = state.apply_tiers(None, tier_table("BTCUSDT", BRIEF_BTC_TIERS))


def _account(*events: object) -> AccountState:
    positions: dict[str, state.PositionEntry] = {}
    held = None
    for e in events:
        if e.event_type == "PositionUpdated":  # type: ignore[attr-defined]
            state.apply_position(positions, e)  # type: ignore[arg-type]
        else:
            held = state.apply_wallet(held, e)  # type: ignore[arg-type]
    return AccountState("risky", positions, state.OrderBook(), held)


RISKY = _account(
    wallet("risky", equity=20_000),
    position("risky", "BTCUSDT", Side.BUY, 20, 70000, 10),
    position("risky", "ETHUSDT", Side.BUY, 5, 3450, 5),
)


def _evaluate(acc: AccountState):  # type: ignore[no-untyped-def]
    assert BTC is not None
    return evaluate_account(
        acc,
        marks=MARKS,
        tiers={"BTCUSDT": BTC},
        config=parse_config({}),
        now=T0,
        cause=Cause("corr-1", T0, T0),
        source="risk-processor/test",
    )


def _options(**kw: object):  # type: ignore[no-untyped-def]
    assert BTC is not None
    assert RISKY.wallet is not None
    exposure = _evaluate(RISKY).exposure
    return {
        o.option_id: o
        for o in hedge_options(
            exposure,
            [],
            RISKY.wallet.wallet,
            {"BTCUSDT": BTC.table},
            MARKS,
            **kw,  # type: ignore[arg-type]
        )
    }


def test_reduce_halves_the_target_pays_taker_fees_frees_margin_and_drops_a_tier() -> None:
    reduce = _options(subject="BTCUSDT")["reduce"]
    # 20 BTC at 70,000 = 1.4 M (tier 2 of the brief's table); half of it is 10 BTC = 0.7 M
    assert (reduce.symbol, reduce.side, reduce.qty) == ("BTCUSDT", Side.SELL, D(10))
    assert reduce.notional == D(700_000)
    assert reduce.fee == D(700_000) * DEFAULT_TAKER_FEE_RATE == D(385)
    assert reduce.margin_needed == -D(700_000) / 10
    assert reduce.net_before == D(20 * 70000 + 5 * 3520)
    assert reduce.net_after == reduce.net_before - D(700_000)
    assert (reduce.tier_before, reduce.tier_after) == (2, 1)
    assert reduce.nearest_liq_before is not None
    assert reduce.nearest_liq_after is not None
    assert reduce.nearest_liq_after > reduce.nearest_liq_before


def test_rule_amounts_size_the_reduction_and_the_margin_transfer() -> None:
    options = _options(subject="BTCUSDT", amount_usd=D(140_000), margin_usd=D(5_000))
    assert options["reduce"].qty == D(2)
    assert options["reduce"].net_after == options["reduce"].net_before - D(140_000)
    assert options["offset"].notional <= D(140_000)
    add = options["add_margin"]
    assert add.margin_needed == D(5_000)
    assert add.fee == 0
    assert add.net_after == add.net_before
    assert add.tier_after == add.tier_before == 2
    assert add.nearest_liq_after is not None
    assert add.nearest_liq_before is not None
    assert add.nearest_liq_after > add.nearest_liq_before


def test_offset_in_one_way_mode_trades_the_other_symbol_against_the_target() -> None:
    offset = _options(subject="BTCUSDT")["offset"]
    assert (offset.symbol, offset.side) == ("ETHUSDT", Side.SELL)
    assert offset.qty is not None
    assert offset.notional == offset.qty * MARKS["ETHUSDT"]
    assert offset.fee == (offset.notional * DEFAULT_TAKER_FEE_RATE).quantize(D("0.01"))
    assert offset.net_after == offset.net_before - offset.notional


def test_high_alerts_carry_three_options_and_lower_severities_none() -> None:
    alerts = _evaluate(RISKY).alerts
    high = [a for a in alerts if a.severity.value in ("HIGH", "CRITICAL")]
    low = [a for a in alerts if a.severity.value not in ("HIGH", "CRITICAL")]
    assert high
    assert low
    for a in high:
        assert [o.option_id for o in a.hedge_options] == ["reduce", "offset", "add_margin"]
    assert all(a.hedge_options == () for a in low)
