"""Alerts -> analyses: coalesce, choose the model, guard the budget, call, check, fall back.

Every raised or escalated alert gets exactly one analysis: from the LLM when a key is set,
the gateway is healthy, the budget allows it and the answer validates with only our
numbers in it, otherwise the deterministic one with a note saying why. Alerts of one
account (or the portfolio) within a window share one call; an identical input is answered
from the cache. The day's spend is persisted after every billed call and restored at
start, and the first refusal for budget publishes one budget alert for the day.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import orjson

from ai_analyst import metrics
from ai_analyst.budget_store import BudgetStore
from ai_analyst.coalesce import AnswerCache, Window, Windows
from ai_analyst.context import ContextBook
from ai_analyst.gateway import Completion, GatewayError, LlmGateway
from ai_analyst.pricing import ModelPrice, SpendLedger, cost_usd, estimate_prompt_tokens
from ai_analyst.prompt import (
    STRONG_SEVERITIES,
    Commentary,
    InvalidCommentary,
    InventedNumbers,
    build_messages,
    group_facts,
    parse_answer,
    plan_alert,
    repair_messages,
)
from ai_analyst.summary import deterministic_plan, deterministic_summary, plan_lines
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import (
    PORTFOLIO_KEY,
    AiSpendRecorded,
    AlertTransition,
    AnalysisCompleted,
    AnalysisMode,
    PlanOption,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    derived_event_id,
)

log = logging.getLogger(__name__)

NOTE_NO_KEY = "deterministic summary: no AI_ANALYST_API_KEY configured"
NOTE_BUDGET = "deterministic summary: daily AI budget of {budget} USD reached"
NOTE_INVALID = "deterministic summary: the model's answer was invalid twice"
NOTE_INVENTED = "deterministic summary: the model's answer used numbers we did not compute"
NOTE_FAILED = "deterministic summary: {error}"

BUDGET_RULE = "ai_budget_spent"
ANALYSED = frozenset({AlertTransition.RAISED, AlertTransition.ESCALATED})
CONTENT_ATTEMPTS = 2  # the first answer plus one repair retry
_USD_PLACES = Decimal("0.000000001")


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
    max_completion_tokens: int = 900
    max_concurrency: int = 4
    recent_alerts: int = 2048
    coalesce_window_seconds: float = 3.0
    coalesce_max_alerts: int = 50
    cache_ttl_seconds: float = 600.0
    cache_entries: int = 512
    budget_key: str = "ai-analyst/0"


def needs_strong_model(alert: RiskAlertChanged) -> bool:
    """GPT-4.1 only when risk is HIGH: severity HIGH/CRITICAL or risk level HIGH."""
    return alert.severity in STRONG_SEVERITIES or alert.risk_level == RiskLevel.HIGH


def fingerprint(model: str, messages: list[dict[str, str]]) -> str:
    return hashlib.blake2b(orjson.dumps([model, messages]), digest_size=16).hexdigest()


def split(total: Decimal, n: int) -> list[Decimal]:
    """``n`` shares of ``total`` that sum to it exactly (the remainder on the first)."""
    share = (total / n).quantize(_USD_PLACES, rounding=ROUND_DOWN)
    return [total - share * (n - 1), *([share] * (n - 1))]


def _split_int(total: int, n: int) -> list[int]:
    share = total // n
    return [total - share * (n - 1), *([share] * (n - 1))]


@dataclass(slots=True)
class _Spend:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


@dataclass(slots=True)
class _Item:
    alert: RiskAlertChanged
    arrived: float
    future: asyncio.Future[AnalysisCompleted | None]


@dataclass(slots=True)
class _Outcome:
    commentary: Commentary | None
    note: str
    reason: str
    spend: _Spend = field(default_factory=_Spend)
    cached: bool = False


BudgetAlert = Callable[[RiskAlertChanged], Awaitable[None]]


class Analyst:
    """Turns alerts into ``AnalysisCompleted``; safe to call concurrently."""

    def __init__(
        self,
        config: AnalystConfig,
        *,
        gateway: LlmGateway | None,
        ledger: SpendLedger,
        store: BudgetStore,
        context: ContextBook | None = None,
        on_budget_spent: BudgetAlert | None = None,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.ledger = ledger
        self.store = store
        self.context = context or ContextBook()
        self._on_budget_spent = on_budget_spent
        self._clock = clock
        self._monotonic = monotonic
        self._recent: OrderedDict[str, AnalysisCompleted] = OrderedDict()
        self._in_progress: dict[str, asyncio.Future[AnalysisCompleted | None]] = {}
        self._windows: Windows[_Item] = Windows(
            config.coalesce_window_seconds, config.coalesce_max_alerts
        )
        self._cache: AnswerCache[Commentary] = AnswerCache(
            config.cache_ttl_seconds, config.cache_entries
        )
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.BUDGET.set(float(ledger.budget_usd))

    @property
    def llm_enabled(self) -> bool:
        return self.gateway is not None

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    async def restore(self) -> None:
        """Take over today's persisted spend, so a restart does not reset the budget."""
        record = await self.store.load(self.config.budget_key)
        if record is not None:
            self.ledger.restore(record.day, record.spent_usd, record.calls, record.budget_alerted)
        metrics.SPEND_TODAY.set(float(self.ledger.spent_today))
        log.info(
            "ai spend restored",
            extra={
                "budget_key": self.config.budget_key,
                "spent_today_usd": str(self.ledger.spent_today),
                "budget_usd": str(self.ledger.budget_usd),
            },
        )

    # ------------------------------------------------------------------ intake

    async def analyze(self, alert: RiskAlertChanged) -> AnalysisCompleted | None:
        """The analysis of ``alert``, once its coalescing window closed and was analysed.

        The same alert event always yields the same event id; a redelivered alert returns
        the remembered analysis without another call.
        """
        if alert.transition not in ANALYSED:
            metrics.ALERTS_SKIPPED.labels("resolved").inc()
            return None
        if alert.rule == BUDGET_RULE:
            metrics.ALERTS_SKIPPED.labels("own").inc()
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
        now = self._monotonic()
        was_idle = self.open_windows == 0
        full = self._windows.add(alert.account, _Item(alert, now, future), now)
        if full is not None:
            self._spawn(full)
        elif was_idle:
            self._wake.set()
        try:
            return await asyncio.shield(future)
        finally:
            self._in_progress.pop(alert.event_id, None)

    def flush_due(self) -> list[asyncio.Task[None]]:
        """Start the analysis of every window whose time is up; the tasks are returned."""
        return [self._spawn(w) for w in self._windows.due(self._monotonic())]

    async def run(self) -> None:
        """Close windows as they fall due, until cancelled."""
        while True:
            due = self._windows.next_due()
            if due is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            delay = due - self._monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.flush_due()

    async def close(self) -> None:
        """Analyse what is still waiting in a window, and wait for every running group."""
        for w in self._windows.drain():
            self._spawn(w)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, window: Window[_Item]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._process(window), name=f"analysis-{window.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ one group

    async def _process(self, window: Window[_Item]) -> None:
        items = window.items
        try:
            events = await self._analyse_group(window.key, [i.alert for i in items])
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()
            raise
        except Exception as exc:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
                    item.future.exception()  # retrieved: each waiter re-raises it itself
            return
        now = self._monotonic()
        for item, event in zip(items, events, strict=True):
            self._remember(item.alert.event_id, event)
            metrics.ANALYSIS_DELAY.observe(now - item.arrived)
            if not item.future.done():
                item.future.set_result(event)

    def _remember(self, event_id: str, analysis: AnalysisCompleted) -> None:
        self._recent[event_id] = analysis
        while len(self._recent) > self.config.recent_alerts:
            self._recent.popitem(last=False)

    async def _analyse_group(
        self, account: str, alerts: Sequence[RiskAlertChanged]
    ) -> list[AnalysisCompleted]:
        facts = group_facts(account, alerts, self.context.facts(account))
        strong = any(needs_strong_model(a) for a in alerts)
        choice = self.config.strong if strong else self.config.cheap
        outcome = await self._outcome(facts, choice)
        return self._events(alerts, outcome, choice)

    async def _outcome(self, facts: dict[str, Any], choice: ModelChoice) -> _Outcome:
        gateway = self.gateway
        if gateway is None:
            return _Outcome(None, NOTE_NO_KEY, "no_key")
        messages = build_messages(facts)
        key = fingerprint(choice.name, messages)
        cached = self._cache.get(key, self._monotonic())
        if cached is not None:
            metrics.CACHE_HITS.inc()
            return _Outcome(cached, "", "cached", cached=True)
        spend = _Spend()
        note, reason = NOTE_INVALID, "invalid"
        async with self._slots:
            metrics.IN_FLIGHT.inc()
            try:
                asked = messages
                for _ in range(CONTENT_ATTEMPTS):
                    content: str | None = None
                    try:
                        completion = await self._call(gateway, choice, asked, spend)
                        content = completion.content
                        if completion.finish_reason == "length":
                            raise InvalidCommentary("answer cut at max_tokens")
                        commentary = parse_answer(content, facts)
                    except _BudgetReached:
                        await self._budget_spent()
                        note = NOTE_BUDGET.format(budget=self.ledger.budget_usd)
                        return _Outcome(None, note, "budget", spend)
                    except GatewayError as exc:
                        log.warning(str(exc), extra={"model": choice.name, "status": exc.status})
                        return _Outcome(None, NOTE_FAILED.format(error=exc), exc.reason, spend)
                    except InvalidCommentary as exc:
                        if isinstance(exc, InventedNumbers):
                            metrics.INVENTED_NUMBERS.inc()
                            note, reason = NOTE_INVENTED, "invented"
                        else:
                            note, reason = NOTE_INVALID, "invalid"
                        log.warning(
                            "llm answer refused",
                            extra={"model": choice.name, "problem": str(exc)},
                        )
                        asked = repair_messages(messages, content, str(exc))
                        continue
                    self._cache.put(key, commentary, self._monotonic())
                    return _Outcome(commentary, "", "ok", spend)
            finally:
                metrics.IN_FLIGHT.dec()
        return _Outcome(None, note, reason, spend)

    async def _call(
        self,
        gateway: LlmGateway,
        choice: ModelChoice,
        messages: list[dict[str, str]],
        spend: _Spend,
    ) -> Completion:
        prompt_chars = len(orjson.dumps(messages))
        worst = cost_usd(
            estimate_prompt_tokens(prompt_chars), self.config.max_completion_tokens, choice.price
        )
        reservation = self.ledger.try_reserve(worst)
        if reservation is None:
            raise _BudgetReached
        actual = Decimal(0)
        metrics.LLM_CALLS.labels(choice.name).inc()
        try:
            completion = await gateway.complete(
                model=choice.name, messages=messages, max_tokens=self.config.max_completion_tokens
            )
            actual = cost_usd(completion.prompt_tokens, completion.completion_tokens, choice.price)
            spend.prompt_tokens += completion.prompt_tokens
            spend.completion_tokens += completion.completion_tokens
            spend.cost_usd += actual
            metrics.LLM_TOKENS.labels(choice.name, "prompt").inc(completion.prompt_tokens)
            metrics.LLM_TOKENS.labels(choice.name, "completion").inc(completion.completion_tokens)
            metrics.LLM_COST.labels(choice.name).inc(float(actual))
            metrics.CALL_COST.labels(choice.name).observe(float(actual))
            log.info(
                "llm call",
                extra={
                    "model": choice.name,
                    "served_model": completion.served_model,
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "cost_usd": str(actual),
                    "attempts": completion.attempts,
                },
            )
            return completion
        finally:
            self.ledger.settle(reservation, actual)
            metrics.SPEND_TODAY.set(float(self.ledger.spent_today))
            if actual > 0:
                await self._persist()

    # ------------------------------------------------------------------ budget

    def _record(self) -> AiSpendRecorded:
        now = self._clock()
        day = self.ledger.day
        return AiSpendRecorded(
            event_id=derived_event_id("ai-spend", self.config.budget_key, day, self.ledger.calls),
            occurred_at=now,
            produced_at=now,
            source=self.config.source,
            correlation_id=f"ai-spend:{self.config.budget_key}:{day}",
            budget_key=self.config.budget_key,
            day=day,
            spent_usd=self.ledger.spent_today,
            budget_usd=self.ledger.budget_usd,
            calls=self.ledger.calls,
            budget_alerted=self.ledger.alerted,
        )

    async def _persist(self) -> None:
        try:
            await self.store.save(self._record())
        except Exception as exc:
            # the analysis still goes out; a restart before the next save may then
            # count this call's cost as unspent
            log.error("ai spend not persisted", extra={"error_type": type(exc).__name__})

    async def _budget_spent(self) -> None:
        if self.ledger.alerted or self.ledger.budget_usd <= 0:
            return
        self.ledger.alerted = True
        await self._persist()
        metrics.BUDGET_ALERTS.inc()
        if self._on_budget_spent is None:
            return
        now = self._clock()
        day = self.ledger.day
        spent = self.ledger.spent_today
        budget = self.ledger.budget_usd
        await self._on_budget_spent(
            RiskAlertChanged(
                event_id=derived_event_id("ai-budget", self.config.budget_key, day),
                occurred_at=now,
                produced_at=now,
                source=self.config.source,
                correlation_id=f"ai-budget:{self.config.budget_key}:{day}",
                alert_id=f"{PORTFOLIO_KEY}:{BUDGET_RULE}:{day}",
                transition=AlertTransition.RAISED,
                account=PORTFOLIO_KEY,
                rule=BUDGET_RULE,
                subject=self.config.budget_key,
                severity=Severity.WARNING,
                reason=f"daily AI budget of {budget} USD spent ({spent} USD); analyses are "
                "deterministic until 00:00 UTC",
                numbers={"spent_usd": spent, "budget_usd": budget},
            )
        )

    # ------------------------------------------------------------------ events

    def _events(
        self, alerts: Sequence[RiskAlertChanged], outcome: _Outcome, choice: ModelChoice
    ) -> list[AnalysisCompleted]:
        n = len(alerts)
        spend = outcome.spend
        costs = split(spend.cost_usd, n)
        prompts = _split_int(spend.prompt_tokens, n)
        completions = _split_int(spend.completion_tokens, n)
        call_id = derived_event_id("llm-call", *sorted(a.event_id for a in alerts))
        target = plan_alert(alerts)
        commentary = outcome.commentary
        billed = spend.prompt_tokens + spend.completion_tokens > 0
        mode = AnalysisMode.LLM if commentary is not None else AnalysisMode.DETERMINISTIC
        metrics.ANALYSES.labels(mode.value, outcome.reason).inc(n)
        now = self._clock()
        out = []
        for i, alert in enumerate(alerts):
            plan = self._plan(alert, commentary if alert is target else None)
            if commentary is not None:
                text = commentary.text_html
                ideas = plan_lines(plan) if plan else commentary.hedging_ideas
            else:
                text = deterministic_summary(alert)
                ideas = plan_lines(plan)
            out.append(
                AnalysisCompleted(
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
                    # the model is named when it answered or was billed for this analysis
                    model=choice.name if commentary is not None or billed else None,
                    text_html=text,
                    hedging_ideas=ideas,
                    prompt_tokens=prompts[i],
                    completion_tokens=completions[i],
                    cost_usd=costs[i],
                    note=outcome.note,
                    plan=plan,
                    call_id=call_id if billed or outcome.cached else None,
                    alerts_in_call=n,
                    call_cost_usd=spend.cost_usd,
                    cached=outcome.cached,
                )
            )
        return out

    @staticmethod
    def _plan(alert: RiskAlertChanged, commentary: Commentary | None) -> tuple[PlanOption, ...]:
        """The model's ranking and words over our figures, else our deterministic plan."""
        if not alert.hedge_options:
            return ()
        if commentary is None or commentary.plan is None:
            return deterministic_plan(alert.hedge_options)
        by_id = {o.option_id: o for o in alert.hedge_options}
        return tuple(
            PlanOption(
                option_id=option_id,
                rank=rank,
                how=commentary.plan[option_id].how,
                pros=commentary.plan[option_id].pros,
                cons=commentary.plan[option_id].cons,
                estimated_cost_usd=by_id[option_id].fee_usd,
                figures=by_id[option_id],
            )
            for rank, option_id in enumerate(commentary.ranking, start=1)
        )
