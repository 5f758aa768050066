"""The portfolio warm-up as the shell wires it: which accounts are known and resynced, the
flag that keeps the portfolio due while it waits, and the summary's wire and changelog
forms."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import orjson

from processor_testkit import T0, position
from risk_processor import codec, state
from risk_processor.agents.portfolio import decode_summary, warmup_sets
from risk_processor.config import parse_config
from risk_processor.evaluate import AccountState, evaluate_account, evaluate_portfolio
from risk_processor.outputs import Cause
from riskwatch_common.contracts import Side

CAUSE = Cause("corr-w", T0, T0)
CONFIG = parse_config(
    {"thresholds": {"net_exposure_usd": 1000}, "portfolio_warmup": {"timeout_s": 30}}
)


def _summary(name: str, resynced: bool | None) -> state.AccountSummary:
    positions: dict[str, state.PositionEntry] = {}
    state.apply_position(positions, position(name, "BTCUSDT", Side.BUY, "0.1", 70000, 5))
    exposure = evaluate_account(
        AccountState(name, positions),
        marks={"BTCUSDT": Decimal(70000)},
        tiers={},
        config=CONFIG,
        now=T0,
        cause=CAUSE,
        source="rp",
    ).exposure
    return state.AccountSummary(exposure, 0, "c", 0, None, resynced)


def test_known_and_resynced_sets_from_the_summaries() -> None:
    accounts = {
        "done": _summary("done", True),
        "pending": _summary("pending", False),
        "silent": _summary("silent", None),  # never reported a link status
    }
    resynced, known = warmup_sets(accounts)
    assert known == {"done", "pending"}
    assert resynced == {"done", "silent"}


def test_the_portfolio_waits_for_a_known_account_then_times_out_and_says_so() -> None:
    accounts = {"done": _summary("done", True), "pending": _summary("pending", False)}
    resynced, known = warmup_sets(accounts)

    def run(risk: state.RiskBook, seconds: int):  # type: ignore[no-untyped-def]
        return evaluate_portfolio(
            accounts,
            risk,
            config=CONFIG,
            now=T0 + timedelta(seconds=seconds),
            cause=CAUSE,
            source="rp",
            resynced=resynced,
            known=known,
        )

    first = run(state.EMPTY_RISK, 0)
    assert first.waiting
    assert first.alerts == ()
    still = run(first.risk, 29)
    assert still.waiting
    late = run(first.risk, 30)
    assert not late.waiting
    [net] = [a for a in late.alerts if a.rule == "net_exposure_usd"]
    assert "1 account(s) not loaded yet: pending" in net.reason


def test_resynced_travels_on_the_wire_and_through_the_changelog() -> None:
    base = {
        "account": "a",
        "at": 1,
        "corr": "c",
        "produced": 1,
        "e": codec.exposure_to_json(_summary("a", False).exposure),
    }
    account, decoded = decode_summary(orjson.dumps({**base, "resynced": True}))
    assert account == "a"
    assert decoded.resynced is True
    old_wire = orjson.dumps(base)
    assert decode_summary(old_wire)[1].resynced is None
    for value in (True, False, None):
        stored = orjson.loads(orjson.dumps(state.summary_to_json(_summary("a", value))))
        assert state.summary_from_json(stored).resynced is value
