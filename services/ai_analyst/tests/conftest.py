"""Fixtures: the fake OpenAI-compatible gateway on loopback, alerts, a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from ai_analyst.analyst import Analyst, AnalystConfig, ModelChoice
from ai_analyst.breaker import CircuitBreaker
from ai_analyst.budget_store import BudgetStore, MemoryBudgetStore
from ai_analyst.context import ContextBook
from ai_analyst.gateway import LlmGateway, build_client
from ai_analyst.pricing import ModelPrice, SpendLedger
from ai_analyst.testing import API_KEY, NOW, FakeGateway, Sleeps
from riskwatch_common.contracts import (
    ActionKind,
    AlertTransition,
    HedgeOption,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    Side,
    SuggestedAction,
    new_event_id,
)
from riskwatch_common.testkit import FakeClock


@pytest.fixture
async def holysheep() -> AsyncIterator[FakeGateway]:
    fake = FakeGateway(prompt_tokens=120, completion_tokens=80)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


# An action as the risk engine attaches it: 12,500 USD of net exposure, 10,000 allowed.
DEFAULT_ACTION = SuggestedAction(
    kind=ActionKind.REDUCE_EXPOSURE, account="main", side=Side.SELL, amount_usd=Decimal(2500)
)


def make_alert(
    *,
    severity: Severity = Severity.WARNING,
    risk_level: RiskLevel | None = RiskLevel.MEDIUM,
    transition: AlertTransition = AlertTransition.RAISED,
    rule: str = "net_exposure_usd",
    subject: str = "BTCUSDT",
    reason: str = "net exposure 12,500 USD above 10,000",
    numbers: dict[str, Decimal] | None = None,
    account: str = "main",
    event_id: str | None = None,
    hedge_options: tuple[HedgeOption, ...] = (),
    action: SuggestedAction | None = DEFAULT_ACTION,
) -> RiskAlertChanged:
    return RiskAlertChanged(
        event_id=event_id or new_event_id(),
        occurred_at=NOW,
        produced_at=NOW,
        source="risk-processor/0",
        correlation_id="corr-42",
        alert_id=f"{account}:{rule}:{subject}",
        transition=transition,
        account=account,
        rule=rule,
        subject=subject,
        severity=severity,
        risk_level=risk_level,
        reason=reason,
        numbers=numbers
        if numbers is not None
        else {"value": Decimal("12500"), "threshold": Decimal("10000")},
        hedge_options=hedge_options,
        action=action,
    )


@pytest.fixture(name="make_alert")
def make_alert_fixture() -> Any:
    """Builds a RiskAlertChanged; keyword arguments override the defaults."""
    return make_alert


CHEAP = ModelChoice("deepseek-v3.2", ModelPrice(Decimal("0.42"), Decimal("0.42")))
STRONG = ModelChoice("gpt-4.1", ModelPrice(Decimal(8), Decimal(8)))


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def store() -> MemoryBudgetStore:
    return MemoryBudgetStore()


@pytest.fixture
async def build(
    holysheep: FakeGateway, sleeps: Sleeps, clock: FakeClock, store: MemoryBudgetStore
) -> AsyncIterator[Callable[..., Analyst]]:
    """An analyst on the fake gateway; by default every alert is its own group."""
    built: list[LlmGateway] = []

    def _build(
        *,
        budget: Decimal = Decimal(5),
        key: str | None = API_KEY,
        max_attempts: int = 3,
        breaker_failures: int = 5,
        window: float = 0.0,
        max_alerts: int = 1,
        max_concurrency: int = 4,
        read_timeout: float = 0.3,
        budget_store: BudgetStore | None = None,
        context: ContextBook | None = None,
        on_budget_spent: Any = None,
    ) -> Analyst:
        gateway = None
        if key:
            gateway = LlmGateway(
                build_client(
                    base_url=holysheep.base_url,
                    api_key=key,
                    connect_timeout=1,
                    read_timeout=read_timeout,
                    request_timeout=5,
                ),
                breaker=CircuitBreaker(
                    failure_threshold=breaker_failures,
                    open_seconds=60,
                    monotonic=clock.monotonic,
                ),
                max_attempts=max_attempts,
                retry_base_seconds=0.5,
                retry_max_seconds=4,
                gateway_pause_seconds=300,
                sleep=sleeps,
            )
            built.append(gateway)
        config = AnalystConfig(
            source="ai-analyst/test",
            cheap=CHEAP,
            strong=STRONG,
            max_concurrency=max_concurrency,
            coalesce_window_seconds=window,
            coalesce_max_alerts=max_alerts,
            budget_key="ai-analyst/test",
        )
        return Analyst(
            config,
            gateway=gateway,
            ledger=SpendLedger(budget, clock),
            store=budget_store or store,
            context=context,
            on_budget_spent=on_budget_spent,
            clock=clock,
            monotonic=clock.monotonic,
        )

    yield _build
    for gateway in built:
        await gateway.close()
