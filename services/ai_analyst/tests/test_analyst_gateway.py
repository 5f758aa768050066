"""The analyst through the OpenAI SDK against the fake gateway on loopback (real HTTP):
routing, errors, retries, the circuit breaker, and what reaches the event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from ai_analyst.analyst import NOTE_NO_KEY, Analyst
from ai_analyst.breaker import BreakerState
from ai_analyst.testing import API_KEY, FakeGateway, Sleeps, completion
from riskwatch_common.contracts import (
    AlertTransition,
    AnalysisMode,
    RiskLevel,
    Severity,
    derived_event_id,
)
from riskwatch_common.testkit import FakeClock, wait_until


async def test_routine_alert_uses_the_cheap_model_with_json_mode_and_bearer_key(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    alert = make_alert(severity=Severity.WARNING, risk_level=RiskLevel.MEDIUM)
    holysheep.answer()
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
    holysheep: FakeGateway,
    build: Callable[..., Analyst],
    make_alert: Any,
    severity: Severity,
    risk_level: RiskLevel | None,
) -> None:
    analysis = await build().analyze(make_alert(severity=severity, risk_level=risk_level))
    assert holysheep.models == ["gpt-4.1"]
    assert analysis is not None
    assert analysis.model == "gpt-4.1"


async def test_cost_is_measured_from_usage_at_the_users_flat_prices(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.answer(prompt_tokens=1000, completion_tokens=500)
    strong = await build().analyze(make_alert(severity=Severity.HIGH))
    holysheep.answer(prompt_tokens=1000, completion_tokens=500)
    cheap = await build().analyze(make_alert())
    assert strong is not None
    assert cheap is not None
    assert (strong.prompt_tokens, strong.completion_tokens) == (1000, 500)
    assert strong.cost_usd == strong.call_cost_usd == Decimal(1500) * 8 / 1_000_000
    assert cheap.cost_usd == Decimal(1500) * Decimal("0.42") / 1_000_000


async def test_missing_usage_is_tolerated_as_zero(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.answer(prompt_tokens=None, completion_tokens=None)
    analysis = await build().analyze(make_alert())
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert (analysis.prompt_tokens, analysis.cost_usd) == (0, Decimal(0))


async def test_without_a_key_the_summary_is_deterministic_and_says_so(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    analysis = await build(key=None).analyze(make_alert(rule="net<exposure"))
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert analysis.note == NOTE_NO_KEY
    assert "AI_ANALYST_API_KEY" in analysis.note
    assert analysis.model is None
    assert "Net&lt;exposure" in analysis.text_html
    assert "Action:" in analysis.text_html
    assert len(analysis.text_html) <= 300
    assert holysheep.requests == []


async def test_good_answer_arriving_slowly_within_the_timeout_is_used(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.default_delay = 0.2  # under the 0.3 s read timeout of the fixture
    analysis = await build().analyze(make_alert())
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert len(holysheep.requests) == 1


async def test_401_is_not_retried_falls_back_and_names_the_problem_not_the_key(
    holysheep: FakeGateway,
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
    assert "AI_ANALYST_API_KEY" in analysis.note
    assert second is not None
    assert second.mode == AnalysisMode.DETERMINISTIC
    assert "circuit breaker open after auth error (HTTP 401)" in second.note
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("circuit breaker open" in r.getMessage() for r in errors)
    assert API_KEY not in caplog.text
    assert API_KEY not in analysis.model_dump_json()


async def test_429_waits_retry_after_then_succeeds(
    holysheep: FakeGateway, build: Callable[..., Analyst], sleeps: Sleeps, make_alert: Any
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
    holysheep: FakeGateway, build: Callable[..., Analyst], sleeps: Sleeps, make_alert: Any
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
    holysheep: FakeGateway,
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
    holysheep: FakeGateway, build: Callable[..., Analyst], sleeps: Sleeps, make_alert: Any
) -> None:
    holysheep.fail(503)
    holysheep.hang()  # the read timeout of the fixture is 0.3 s
    holysheep.answer()
    analysis = await build().analyze(make_alert())
    assert len(holysheep.requests) == 3
    assert len(sleeps.delays) == 2
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM


async def test_a_500_storm_opens_the_breaker_and_later_alerts_make_no_request(
    holysheep: FakeGateway,
    build: Callable[..., Analyst],
    clock: FakeClock,
    make_alert: Any,
) -> None:
    for _ in range(6):
        holysheep.fail(500)
    analyst = build(max_attempts=3, breaker_failures=3)
    first = await analyst.analyze(make_alert())
    assert analyst.gateway is not None
    assert analyst.gateway.breaker.state is BreakerState.OPEN
    later = [await analyst.analyze(make_alert()) for _ in range(5)]
    assert len(holysheep.requests) == 3  # the storm cost one call's attempts, no more
    assert first is not None
    assert first.mode == AnalysisMode.DETERMINISTIC
    assert all(a is not None and "circuit breaker open" in a.note for a in later)
    # after the open period one probe goes out; it succeeds and closes the breaker
    holysheep.replies.clear()
    clock.advance(61)
    probe = await analyst.analyze(make_alert())
    assert probe is not None
    assert probe.mode == AnalysisMode.LLM
    assert analyst.gateway.breaker.state is BreakerState.CLOSED


async def test_repeated_timeouts_open_the_breaker(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.hang()
    holysheep.hang()
    analyst = build(max_attempts=2, breaker_failures=2)
    analysis = await analyst.analyze(make_alert())
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert analyst.gateway is not None
    assert analyst.gateway.breaker.state is BreakerState.OPEN
    again = await analyst.analyze(make_alert())
    assert again is not None
    assert "circuit breaker open after timeout" in again.note
    assert len(holysheep.requests) == 2


async def test_invalid_json_body_is_refused_then_the_repair_answer_is_used(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.raw('{"id": "chatcmpl-1", "choices": [')  # cut-off JSON with HTTP 200
    holysheep.answer("<b>Hedge</b> now")
    analysis = await build().analyze(make_alert())
    assert len(holysheep.requests) == 2
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert analysis.text_html == "<b>Hedge</b> now"


async def test_non_json_and_empty_content_twice_falls_back_with_a_note(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
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


async def test_null_content_is_asked_again(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.replies.append(completion(None))
    holysheep.answer("<b>Trim</b> the long")
    analysis = await build().analyze(make_alert())
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert len(holysheep.requests) == 2


async def test_overlong_llm_text_is_cut_to_300_chars(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.answer("<i>" + "reduce & hedge " * 60 + "</i>")
    analysis = await build().analyze(make_alert())
    assert analysis is not None
    assert analysis.mode == AnalysisMode.LLM
    assert len(analysis.text_html) <= 300
    assert analysis.text_html.endswith("…</i>")


async def test_redelivered_alert_yields_the_same_analysis_without_another_call(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
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
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    assert await build().analyze(make_alert(transition=AlertTransition.RESOLVED)) is None
    assert holysheep.requests == []


async def test_llm_calls_in_flight_are_bounded_by_max_concurrency(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    analyst = build(max_concurrency=2)
    holysheep.gate = asyncio.Event()
    calls = asyncio.gather(*(analyst.analyze(make_alert()) for _ in range(5)))
    await wait_until(lambda: holysheep.in_flight >= 2, message="calls held at the server")
    holysheep.gate.set()
    results = await calls
    assert all(r is not None and r.mode == AnalysisMode.LLM for r in results)
    assert len(holysheep.requests) == 5
    assert holysheep.max_in_flight == 2


async def test_calls_waiting_for_a_slot_do_not_hit_the_gateway_after_a_401(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    holysheep.fail(401, "invalid_api_key")
    analyst = build(max_concurrency=1)
    results = await asyncio.gather(*(analyst.analyze(make_alert()) for _ in range(4)))
    assert len(holysheep.requests) == 1
    assert all(r is not None and r.mode == AnalysisMode.DETERMINISTIC for r in results)
