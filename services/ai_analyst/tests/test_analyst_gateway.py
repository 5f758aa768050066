"""The analyst against a fake HolySheep on loopback: routing, errors, retries, spend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from ai_analyst.analyst import NOTE_NO_KEY, Analyst, AnalystConfig, ModelChoice
from ai_analyst.holysheep import HolySheepClient
from ai_analyst.pricing import ModelPrice, SpendLedger
from riskwatch_common.contracts import (
    AlertTransition,
    AnalysisMode,
    RiskLevel,
    Severity,
    derived_event_id,
)
from riskwatch_common.testkit import wait_until

API_KEY = "hs-live-9f8e7d6c5b4a3210fedcba98"
CHEAP = ModelChoice("deepseek-v3.2", ModelPrice(Decimal("0.28"), Decimal("0.42")))
STRONG = ModelChoice("gpt-4.1", ModelPrice(Decimal("2.00"), Decimal("8.00")))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Sleeps:
    """Records the retry delays the client asks for instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5, sock_read=0.3)) as s:
        yield s


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def build(
    holysheep: Any, session: aiohttp.ClientSession, sleeps: Sleeps, clock: Clock
) -> Callable[..., Analyst]:
    def _build(
        *, budget: Decimal = Decimal(5), key: str | None = API_KEY, max_attempts: int = 3
    ) -> Analyst:
        client = (
            HolySheepClient(
                session,
                base_url=holysheep.base_url,
                api_key=key,
                max_attempts=max_attempts,
                retry_base_seconds=0.5,
                retry_max_seconds=4,
                sleep=sleeps,
            )
            if key
            else None
        )
        config = AnalystConfig(source="ai-analyst/test", cheap=CHEAP, strong=STRONG)
        return Analyst(config, client=client, ledger=SpendLedger(budget, clock), clock=clock)

    return _build


async def test_routine_alert_uses_the_cheap_model_with_json_mode_and_bearer_key(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    alert = make_alert(severity=Severity.WARNING, risk_level=RiskLevel.MEDIUM)
    analysis = await build().analyze(alert)
    assert analysis is not None
    assert holysheep.models == ["deepseek-v3.2"]
    request = holysheep.requests[0]
    assert request["response_format"] == {"type": "json_object"}
    assert "json" in request["messages"][0]["content"]
    assert holysheep.auth_headers == [f"Bearer {API_KEY}"]
    assert analysis.mode == AnalysisMode.LLM
    assert analysis.model == "deepseek-v3.2"
    assert analysis.text_html == "<b>Reduce BTCUSDT</b> by 2,500 USD now."
    assert analysis.hedging_ideas == ("Short ETHUSDT perp",)
    assert analysis.event_id == derived_event_id("analysis", alert.event_id)
    assert analysis.alert_event_id == alert.event_id
    assert analysis.correlation_id == alert.correlation_id


@pytest.mark.parametrize(
    ("severity", "risk_level"),
    [
        (Severity.HIGH, RiskLevel.MEDIUM),
        (Severity.CRITICAL, None),
        (Severity.WARNING, RiskLevel.HIGH),
    ],
)
async def test_high_risk_alert_uses_the_strong_model(
    holysheep: Any,
    build: Callable[..., Analyst],
    make_alert: Any,
    severity: Severity,
    risk_level: RiskLevel | None,
) -> None:
    analysis = await build().analyze(make_alert(severity=severity, risk_level=risk_level))
    assert holysheep.models == ["gpt-4.1"]
    assert analysis is not None
    assert analysis.model == "gpt-4.1"


async def test_tokens_and_cost_are_measured_from_usage(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.answer(prompt_tokens=1000, completion_tokens=500)
    analysis = await build().analyze(make_alert(severity=Severity.HIGH))
    assert analysis is not None
    assert (analysis.prompt_tokens, analysis.completion_tokens) == (1000, 500)
    assert analysis.cost_usd == Decimal("0.006")  # 1000 × 2 / 1M + 500 × 8 / 1M


async def test_missing_usage_is_tolerated_as_zero(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.answer(prompt_tokens=None, completion_tokens=None)
    analysis = await build().analyze(make_alert())
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert (analysis.prompt_tokens, analysis.cost_usd) == (0, Decimal(0))


async def test_without_a_key_the_summary_is_deterministic_and_says_so(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    analysis = await build(key=None).analyze(make_alert(rule="net<exposure"))
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert analysis.note == NOTE_NO_KEY
    assert analysis.note == "deterministic summary: no HOLYSHEEP_API_KEY configured"
    assert analysis.model is None
    assert "net&lt;exposure" in analysis.text_html
    assert "Action:" in analysis.text_html
    assert len(analysis.text_html) <= 300
    assert holysheep.requests == []


async def test_401_is_not_retried_falls_back_and_names_the_problem_not_the_key(
    holysheep: Any,
    build: Callable[..., Analyst],
    sleeps: Sleeps,
    make_alert: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    holysheep.fail(401, "invalid_api_key")
    analyst = build()
    with caplog.at_level(logging.DEBUG):
        analysis = await analyst.analyze(make_alert())
        second = await analyst.analyze(make_alert())
    assert len(holysheep.requests) == 1  # no retry, and the next alert doesn't try again
    assert sleeps.delays == []
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert "401" in analysis.note
    assert "HOLYSHEEP_API_KEY" in analysis.note
    assert second is not None
    assert second.mode == AnalysisMode.DETERMINISTIC
    assert "paused" in second.note
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("rejected the API key" in r.getMessage() for r in errors)
    assert API_KEY not in caplog.text
    assert API_KEY not in analysis.model_dump_json()


async def test_429_waits_retry_after_then_succeeds(
    holysheep: Any, build: Callable[..., Analyst], sleeps: Sleeps, make_alert: Any
) -> None:
    holysheep.fail(429, "rate_limit_exceeded", {"retry-after-ms": "50"})
    holysheep.fail(429, "rate_limit_exceeded", {"retry-after": "2"})
    holysheep.answer()
    analysis = await build().analyze(make_alert())
    assert sleeps.delays == [0.05, 2.0]
    assert len(holysheep.requests) == 3
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM


async def test_429_without_retry_after_backs_off_exponentially_and_gives_up(
    holysheep: Any, build: Callable[..., Analyst], sleeps: Sleeps, make_alert: Any
) -> None:
    for _ in range(4):
        holysheep.fail(429)
    analysis = await build(max_attempts=4).analyze(make_alert())
    assert len(holysheep.requests) == 4
    assert len(sleeps.delays) == 3
    for n, delay in enumerate(sleeps.delays, start=1):
        assert 0.75 * 0.5 * 2 ** (n - 1) <= delay <= 0.5 * 2 ** (n - 1)
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert "after 4 attempts" in analysis.note


@pytest.mark.parametrize(("status", "code"), [(429, "insufficient_quota"), (402, "")])
async def test_quota_and_balance_errors_are_not_retried(
    holysheep: Any,
    build: Callable[..., Analyst],
    sleeps: Sleeps,
    make_alert: Any,
    status: int,
    code: str,
) -> None:
    holysheep.fail(status, code)
    analysis = await build().analyze(make_alert())
    assert len(holysheep.requests) == 1
    assert sleeps.delays == []
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert "quota exhausted" in analysis.note


async def test_server_errors_and_timeouts_are_retried_a_bounded_number_of_times(
    holysheep: Any, build: Callable[..., Analyst], sleeps: Sleeps, make_alert: Any
) -> None:
    holysheep.fail(503)
    holysheep.hang()  # the session's read timeout is 0.3 s
    holysheep.answer()
    analysis = await build().analyze(make_alert())
    assert len(holysheep.requests) == 3
    assert len(sleeps.delays) == 2
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM


async def test_invalid_json_is_retried_once_then_falls_back_with_a_note(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.content("Sure! Here is my analysis", prompt_tokens=100, completion_tokens=10)
    holysheep.content("   ", prompt_tokens=100, completion_tokens=1)
    analysis = await build().analyze(make_alert())
    assert len(holysheep.requests) == 2
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert analysis.note == "deterministic summary: the model's answer was invalid twice"
    # the two billed attempts are still accounted for
    assert (analysis.prompt_tokens, analysis.completion_tokens) == (200, 11)
    assert analysis.cost_usd > 0
    assert analysis.model == "deepseek-v3.2"


async def test_invalid_json_then_a_valid_answer_is_used(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.content('{"text_html": ')
    holysheep.answer("<b>Hedge</b> now")
    analysis = await build().analyze(make_alert())
    assert len(holysheep.requests) == 2
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert analysis.text_html == "<b>Hedge</b> now"


async def test_overlong_llm_text_is_cut_to_300_chars(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.answer("<i>" + "reduce & hedge " * 60 + "</i>")
    analysis = await build().analyze(make_alert())
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert len(analysis.text_html) <= 300
    assert analysis.text_html.endswith("…</i>")


async def test_spend_cap_stops_llm_calls_until_the_utc_day_rolls_over(
    holysheep: Any, build: Callable[..., Analyst], clock: Clock, make_alert: Any
) -> None:
    # each call bills 2000 prompt + 1000 completion tokens = 0.00098 USD on the cheap model
    for _ in range(3):
        holysheep.answer(prompt_tokens=2000, completion_tokens=1000)
    analyst = build(budget=Decimal("0.001"))
    first = await analyst.analyze(make_alert())
    second = await analyst.analyze(make_alert())
    assert first is not None
    assert first.mode == AnalysisMode.LLM
    assert first.cost_usd == Decimal("0.00098")
    assert second is not None
    assert second.mode == AnalysisMode.DETERMINISTIC
    assert second.note == "deterministic summary: daily AI budget of 0.001 USD reached"
    assert second.cost_usd == 0
    assert len(holysheep.requests) == 1
    clock.now += timedelta(days=1)
    third = await analyst.analyze(make_alert())
    assert third is not None
    assert third.mode == AnalysisMode.LLM
    assert len(holysheep.requests) == 2


async def test_redelivered_alert_yields_the_same_analysis_without_another_call(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    analyst = build()
    alert = make_alert()
    first = await analyst.analyze(alert)
    again = await analyst.analyze(alert.model_copy())
    assert len(holysheep.requests) == 1
    assert first is not None
    assert again is not None
    assert again.event_id == first.event_id == derived_event_id("analysis", alert.event_id)


async def test_resolved_alert_gets_no_analysis_and_no_call(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    assert await build().analyze(make_alert(transition=AlertTransition.RESOLVED)) is None
    assert holysheep.requests == []


async def test_escalated_alert_is_analysed(
    holysheep: Any, build: Callable[..., Analyst], make_alert: Any
) -> None:
    analysis = await build().analyze(make_alert(transition=AlertTransition.ESCALATED))
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM


async def test_llm_calls_in_flight_are_bounded_by_max_concurrency(
    holysheep: Any, session: aiohttp.ClientSession, clock: Clock, make_alert: Any
) -> None:
    client = HolySheepClient(session, base_url=holysheep.base_url, api_key=API_KEY)
    config = AnalystConfig(source="t", cheap=CHEAP, strong=STRONG, max_concurrency=2)
    analyst = Analyst(config, client=client, ledger=SpendLedger(Decimal(5), clock), clock=clock)
    holysheep.gate = asyncio.Event()
    calls = asyncio.gather(*(analyst.analyze(make_alert()) for _ in range(5)))
    await wait_until(lambda: holysheep.in_flight >= 2, message="calls held at the server")
    holysheep.gate.set()
    results = await calls
    assert all(r is not None and r.mode == AnalysisMode.LLM for r in results)
    assert len(holysheep.requests) == 5
    assert holysheep.max_in_flight == 2


async def test_calls_waiting_for_a_slot_do_not_hit_the_gateway_after_a_401(
    holysheep: Any, session: aiohttp.ClientSession, clock: Clock, make_alert: Any
) -> None:
    client = HolySheepClient(session, base_url=holysheep.base_url, api_key=API_KEY)
    config = AnalystConfig(source="t", cheap=CHEAP, strong=STRONG, max_concurrency=1)
    analyst = Analyst(config, client=client, ledger=SpendLedger(Decimal(5), clock), clock=clock)
    holysheep.fail(401, "invalid_api_key")
    results = await asyncio.gather(*(analyst.analyze(make_alert()) for _ in range(4)))
    assert len(holysheep.requests) == 1
    assert all(r is not None and r.mode == AnalysisMode.DETERMINISTIC for r in results)
