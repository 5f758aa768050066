"""Context in the prompt, the hedging plan over our figures, and invented numbers refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from ai_analyst.analyst import NOTE_INVENTED, Analyst
from ai_analyst.context import ContextBook
from ai_analyst.testing import THREE_OPTIONS, FakeGateway, facts_of
from riskwatch_common.contracts import (
    AnalysisMode,
    ExposureScope,
    ExposureSnapshotted,
    PositionExposure,
    RiskLevel,
    Severity,
    Side,
)

D = Decimal


def _snapshot(scope: ExposureScope, account: str) -> ExposureSnapshotted:
    btc = PositionExposure(
        account="main",
        symbol="BTCUSDT",
        side=Side.BUY,
        size=D("0.5"),
        notional=D(35000),
        leverage=D(10),
        tier_id=2,
        maintenance_margin_rate=D("0.0056"),
        liquidation_distance_pct=D("4.12"),
    )
    at = datetime(2026, 3, 2, 11, 59, tzinfo=UTC)
    return ExposureSnapshotted(
        event_id=f"snap-{account}",
        occurred_at=at,
        produced_at=at,
        source="risk-processor/0",
        correlation_id="c",
        scope=scope,
        account=account,
        accounts=("main", "sub_trading") if scope is ExposureScope.PORTFOLIO else ("main",),
        total_long=D(52600),
        total_short=D(17650) if scope is ExposureScope.PORTFOLIO else D(0),
        net=D(34950) if scope is ExposureScope.PORTFOLIO else D(52600),
        gross=D(70250) if scope is ExposureScope.PORTFOLIO else D(52600),
        equity=D(101600),
        unrealised_pnl=D(1450),
        account_mm_rate=D("0.0026"),
        risk_level=RiskLevel.MEDIUM,
        riskiest_positions=(btc,),
    )


def _context() -> ContextBook:
    book = ContextBook()
    book.update(_snapshot(ExposureScope.ACCOUNT, "main"))
    book.update(_snapshot(ExposureScope.PORTFOLIO, "portfolio"))
    return book


async def test_prompt_carries_portfolio_and_account_exposure_with_tiers_and_mm_rates(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    await build(context=_context()).analyze(make_alert())
    facts = facts_of(holysheep.requests[0])
    assert facts["portfolio_exposure"]["net_usd"] == "34,950"
    assert facts["portfolio_exposure"]["accounts"] == ["main", "sub_trading"]
    assert facts["account_exposure"]["net_usd"] == "52,600"
    [top] = facts["account_exposure"]["top_positions"]
    assert top == {
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "Buy",
        "size": "0.5",
        "notional_usd": "35,000",
        "leverage": "10",
        "tier": 2,
        "mm_rate": "0.0056",
        "liquidation_distance_pct": "4.12",
    }
    [alert] = facts["alerts"]
    assert alert["suggested_action"] == "reduce net exposure on main by at least 2,500 USD"
    assert "hedge_options" not in facts  # routine: commentary only


async def test_high_alert_gets_a_three_option_plan_ranked_by_the_model_on_our_figures(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    answer = {
        "text_html": "<b>Add margin first</b>: liquidation moves to 9.45 % away.",
        "options": [
            {"option_id": i, "how": f"Do {i}.", "pros": "Fee 9.63 USD.", "cons": "None."}
            for i in ("reduce", "offset", "add_margin")
        ],
        "ranking": ["add_margin", "reduce", "offset"],
        "recommended": "add_margin",
    }
    holysheep.content(orjson.dumps(answer).decode(), model="gpt-4.1")
    alert = make_alert(severity=Severity.HIGH, hedge_options=THREE_OPTIONS)
    analysis = await build(context=_context()).analyze(alert)
    assert holysheep.models == ["gpt-4.1"]
    facts = facts_of(holysheep.requests[0])
    assert [o["option_id"] for o in facts["hedge_options"]] == ["reduce", "offset", "add_margin"]
    assert facts["hedge_options"][0]["fee_usd"] == "9.63"
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert [(p.rank, p.option_id) for p in analysis.plan] == [
        (1, "add_margin"),
        (2, "reduce"),
        (3, "offset"),
    ]
    by_id = {o.option_id: o for o in THREE_OPTIONS}
    for p in analysis.plan:
        assert p.figures == by_id[p.option_id]  # the figures are the engine's, untouched
        assert p.estimated_cost_usd == by_id[p.option_id].fee_usd
        assert p.how == f"Do {p.option_id}."
    assert analysis.hedging_ideas[0].startswith("1. transfer 1750 USDT into main: fee 0 USD")


async def test_an_invented_number_gets_one_repair_retry_naming_it(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.answer("<b>Reduce BTCUSDT</b> by 7,777 USD now.", ideas=[])
    holysheep.answer("<b>Reduce BTCUSDT</b> by 2,500 USD now.", ideas=[])
    analysis = await build().analyze(make_alert())
    assert len(holysheep.requests) == 2
    repair = holysheep.requests[1]["messages"]
    assert repair[-2]["role"] == "assistant"
    assert "7,777" in repair[-1]["content"]
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert analysis.text_html == "<b>Reduce BTCUSDT</b> by 2,500 USD now."


async def test_invented_numbers_twice_give_the_deterministic_analysis_marked_as_such(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    invented = {
        "text_html": "<b>Reduce now</b>",
        "options": [
            {"option_id": i, "how": "Sell 3.7 BTC.", "pros": "p", "cons": "c"}
            for i in ("reduce", "offset", "add_margin")
        ],
        "ranking": ["reduce", "offset", "add_margin"],
        "recommended": "reduce",
    }
    holysheep.content(orjson.dumps(invented).decode())
    holysheep.content(orjson.dumps(invented).decode())
    alert = make_alert(severity=Severity.CRITICAL, hedge_options=THREE_OPTIONS)
    analysis = await build().analyze(alert)
    assert len(holysheep.requests) == 2
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert analysis.note == NOTE_INVENTED
    assert "3.7" not in analysis.model_dump_json()
    # the deterministic plan: our ranking, our words, the engine's figures
    assert [p.option_id for p in analysis.plan] == ["reduce", "add_margin", "offset"]
    assert analysis.plan[0].figures == THREE_OPTIONS[0]
    assert analysis.cost_usd > 0  # both refused answers were billed


async def test_plan_that_drops_an_option_is_refused(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    partial = {
        "text_html": "<b>Reduce</b>",
        "options": [{"option_id": "reduce", "how": "h", "pros": "p", "cons": "c"}],
        "ranking": ["reduce"],
        "recommended": "reduce",
    }
    holysheep.content(orjson.dumps(partial).decode())
    holysheep.content(orjson.dumps(partial).decode())
    analysis = await build().analyze(
        make_alert(severity=Severity.HIGH, hedge_options=THREE_OPTIONS)
    )
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert len(analysis.plan) == 3
