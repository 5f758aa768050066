"""Alert -> analysis: choose the model, guard the budget, call the LLM, fall back.

An analysis always comes out for a raised or escalated alert: from the LLM when a key is
set, the budget allows it and the answer validates, otherwise the deterministic summary
with a note saying why. Tokens and cost of every billed attempt are carried in the event
even when the final text is the deterministic one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import orjson

from ai_analyst import metrics
from ai_analyst.holysheep import AuthRejected, GatewayError, HolySheepClient, QuotaExhausted
from ai_analyst.pricing import ModelPrice, SpendLedger, cost_usd, estimate_prompt_tokens
from ai_analyst.prompt import Commentary, InvalidCommentary, build_messages, parse_commentary
from ai_analyst.summary import deterministic_summary
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import (
    AlertTransition,
    AnalysisCompleted,
    AnalysisMode,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    derived_event_id,
)

log = logging.getLogger(__name__)

NOTE_NO_KEY = "deterministic summary: no HOLYSHEEP_API_KEY configured"
NOTE_BUDGET = "deterministic summary: daily AI budget of {budget} USD reached"
NOTE_PAUSED = "deterministic summary: LLM paused after {why}"
NOTE_INVALID = "deterministic summary: the model's answer was invalid twice"
NOTE_FAILED = "deterministic summary: {error}"

ANALYSED = frozenset({AlertTransition.RAISED, AlertTransition.ESCALATED})
STRONG_SEVERITIES = frozenset({Severity.HIGH, Severity.CRITICAL})
CONTENT_ATTEMPTS = 2  # the first answer plus one retry on invalid or empty content


class _BudgetReached(Exception):
    """The day's remaining budget can't cover this call's worst case."""


@dataclass(frozen=True, slots=True)
class ModelChoice:
    name: str
    price: ModelPrice


@dataclass(frozen=True, slots=True)
class AnalystConfig:
    source: str
    cheap: ModelChoice
    strong: ModelChoice
    max_completion_tokens: int = 600
    max_concurrency: int = 4
    recent_alerts: int = 2048
    gateway_pause_seconds: float = 300.0


def needs_strong_model(alert: RiskAlertChanged) -> bool:
    """GPT-4.1 only when risk is HIGH: severity HIGH/CRITICAL or risk level HIGH."""
    return alert.severity in STRONG_SEVERITIES or alert.risk_level == RiskLevel.HIGH


@dataclass(slots=True)
class _Spend:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


class Analyst:
    """Turns alerts into ``AnalysisCompleted``; safe to call concurrently."""

    def __init__(
        self,
        config: AnalystConfig,
        *,
        client: HolySheepClient | None,
        ledger: SpendLedger,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.client = client
        self.ledger = ledger
        self._clock = clock
        self._monotonic = monotonic
        self._recent: OrderedDict[str, AnalysisCompleted] = OrderedDict()
        self._in_progress: dict[str, asyncio.Future[AnalysisCompleted | None]] = {}
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._paused_until = 0.0
        self._pause_reason = ""
        metrics.BUDGET.set(float(ledger.budget_usd))

    @property
    def llm_enabled(self) -> bool:
        return self.client is not None

    async def analyze(self, alert: RiskAlertChanged) -> AnalysisCompleted | None:
        """The analysis of ``alert``; the same alert event always yields the same event id.

        A redelivered alert returns the remembered analysis without another LLM call.
        """
        if alert.transition not in ANALYSED:
            metrics.ALERTS_SKIPPED.labels("resolved").inc()
            return None
        known = self._recent.get(alert.event_id)
        if known is not None:
            self._recent.move_to_end(alert.event_id)
            metrics.ALERTS_SKIPPED.labels("duplicate").inc()
            return known
        running = self._in_progress.get(alert.event_id)
        if running is not None:
            metrics.ALERTS_SKIPPED.labels("duplicate").inc()
            return await asyncio.shield(running)
        future: asyncio.Future[AnalysisCompleted | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._in_progress[alert.event_id] = future
        try:
            analysis = await self._analyze(alert)
            future.set_result(analysis)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: duplicates waiting on it re-raise it themselves
            raise
        finally:
            del self._in_progress[alert.event_id]
        self._remember(alert.event_id, analysis)
        return analysis

    def _remember(self, event_id: str, analysis: AnalysisCompleted) -> None:
        self._recent[event_id] = analysis
        while len(self._recent) > self.config.recent_alerts:
            self._recent.popitem(last=False)

    async def _analyze(self, alert: RiskAlertChanged) -> AnalysisCompleted:
        choice = self.config.strong if needs_strong_model(alert) else self.config.cheap
        spend = _Spend()
        if self.client is None:
            return self._deterministic(alert, NOTE_NO_KEY, "no_key", None, spend)

        messages = build_messages(alert)
        error: GatewayError | None = None
        async with self._slots:
            # checked after waiting for a slot: a call that failed meanwhile may have paused us
            if self._monotonic() < self._paused_until:
                note = NOTE_PAUSED.format(why=self._pause_reason)
                return self._deterministic(alert, note, "paused", None, spend)
            metrics.IN_FLIGHT.inc()
            try:
                for _ in range(CONTENT_ATTEMPTS):
                    try:
                        commentary = await self._call(self.client, choice, messages, spend)
                    except InvalidCommentary as exc:
                        log.warning(
                            "llm answer invalid",
                            extra={
                                "model": choice.name,
                                "problem": str(exc),
                                "alert": alert.alert_id,
                            },
                        )
                        continue
                    except _BudgetReached:
                        note = NOTE_BUDGET.format(budget=self.ledger.budget_usd)
                        return self._deterministic(alert, note, "budget", choice, spend)
                    except GatewayError as exc:
                        error = exc
                        break
                    return self._llm(alert, choice, commentary, spend)
            finally:
                metrics.IN_FLIGHT.dec()
        if error is None:
            return self._deterministic(alert, NOTE_INVALID, "invalid", choice, spend)
        self._on_gateway_error(error, choice)
        return self._deterministic(
            alert, NOTE_FAILED.format(error=str(error)), error.reason, choice, spend
        )

    async def _call(
        self,
        client: HolySheepClient,
        choice: ModelChoice,
        messages: list[dict[str, str]],
        spend: _Spend,
    ) -> Commentary:
        prompt_chars = len(orjson.dumps(messages))
        worst = cost_usd(
            estimate_prompt_tokens(prompt_chars), self.config.max_completion_tokens, choice.price
        )
        reservation = self.ledger.try_reserve(worst)
        if reservation is None:
            raise _BudgetReached
        actual = Decimal(0)
        try:
            completion = await client.complete(
                model=choice.name, messages=messages, max_tokens=self.config.max_completion_tokens
            )
            actual = cost_usd(completion.prompt_tokens, completion.completion_tokens, choice.price)
            spend.prompt_tokens += completion.prompt_tokens
            spend.completion_tokens += completion.completion_tokens
            spend.cost_usd += actual
            metrics.LLM_TOKENS.labels(choice.name, "prompt").inc(completion.prompt_tokens)
            metrics.LLM_TOKENS.labels(choice.name, "completion").inc(completion.completion_tokens)
            metrics.LLM_COST.labels(choice.name).inc(float(actual))
            if completion.served_model and completion.served_model != choice.name:
                # HolySheep fails over between upstreams; cost stays at the requested model's price
                log.info(
                    "gateway served another model",
                    extra={"requested": choice.name, "served": completion.served_model},
                )
            if completion.finish_reason == "length":
                raise InvalidCommentary("answer cut at max_tokens")
            return parse_commentary(completion.content)
        finally:
            self.ledger.settle(reservation, actual)
            metrics.SPEND_TODAY.set(float(self.ledger.spent_today))

    def _on_gateway_error(self, error: GatewayError, choice: ModelChoice) -> None:
        if isinstance(error, AuthRejected):
            metrics.LLM_AUTH_FAILURES.inc()
        if isinstance(error, AuthRejected | QuotaExhausted):
            # every further call would fail the same way until someone fixes the account
            self._paused_until = self._monotonic() + self.config.gateway_pause_seconds
            self._pause_reason = f"{error.reason} error (HTTP {error.status})"
            log.error(
                str(error),
                extra={
                    "model": choice.name,
                    "status": error.status,
                    "paused_s": self.config.gateway_pause_seconds,
                },
            )
        else:
            log.warning(str(error), extra={"model": choice.name, "status": error.status})

    def _event(
        self,
        alert: RiskAlertChanged,
        *,
        mode: AnalysisMode,
        model: str | None,
        text_html: str,
        hedging_ideas: tuple[str, ...],
        spend: _Spend,
        note: str,
    ) -> AnalysisCompleted:
        now = self._clock()
        return AnalysisCompleted(
            event_id=derived_event_id("analysis", alert.event_id),
            occurred_at=now,
            produced_at=now,
            source=self.config.source,
            correlation_id=alert.correlation_id,
            alert_id=alert.alert_id,
            alert_event_id=alert.event_id,
            account=alert.account,
            rule=alert.rule,
            subject=alert.subject,
            transition=alert.transition,
            severity=alert.severity,
            mode=mode,
            model=model,
            text_html=text_html,
            hedging_ideas=hedging_ideas,
            prompt_tokens=spend.prompt_tokens,
            completion_tokens=spend.completion_tokens,
            cost_usd=spend.cost_usd,
            note=note,
        )

    def _llm(
        self, alert: RiskAlertChanged, choice: ModelChoice, commentary: Commentary, spend: _Spend
    ) -> AnalysisCompleted:
        metrics.ANALYSES.labels(AnalysisMode.LLM.value, "ok").inc()
        return self._event(
            alert,
            mode=AnalysisMode.LLM,
            model=choice.name,
            text_html=commentary.text_html,
            hedging_ideas=commentary.hedging_ideas,
            spend=spend,
            note="",
        )

    def _deterministic(
        self,
        alert: RiskAlertChanged,
        note: str,
        reason: str,
        choice: ModelChoice | None,
        spend: _Spend,
    ) -> AnalysisCompleted:
        metrics.ANALYSES.labels(AnalysisMode.DETERMINISTIC.value, reason).inc()
        return self._event(
            alert,
            mode=AnalysisMode.DETERMINISTIC,
            # the model is named only when it was billed for this analysis
            model=choice.name
            if choice is not None and spend.prompt_tokens + spend.completion_tokens > 0
            else None,
            text_html=deterministic_summary(alert),
            hedging_ideas=(),
            spend=spend,
            note=note,
        )
