"""The fake HolySheep gateway (riskwatch_common.fakes) as a fixture, plus an alert builder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from riskwatch_common.contracts import (
    AlertTransition,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    new_event_id,
)
from riskwatch_common.fakes import FakeHolySheep

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
async def holysheep() -> AsyncIterator[FakeHolySheep]:
    fake = FakeHolySheep()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


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
    )


@pytest.fixture(name="make_alert")
def make_alert_fixture() -> Any:
    """Builds a RiskAlertChanged; keyword arguments override the defaults."""
    return make_alert
