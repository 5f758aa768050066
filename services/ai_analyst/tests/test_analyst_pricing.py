"""Pure parts: cost in USD, the daily budget ledger, retry timing, the circuit breaker."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ai_analyst.breaker import BreakerState, CircuitBreaker
from ai_analyst.gateway import LlmGateway, build_client, retry_after_seconds
from ai_analyst.pricing import ModelPrice, SpendLedger, cost_usd

CHEAP = ModelPrice(Decimal("0.28"), Decimal("0.42"))
STRONG = ModelPrice(Decimal("2.00"), Decimal("8.00"))


def test_cost_uses_input_and_output_prices_per_million_tokens() -> None:
    assert cost_usd(1_000_000, 1_000_000, CHEAP) == Decimal("0.70")
    assert cost_usd(1000, 500, STRONG) == Decimal("0.006")
    flat = ModelPrice(Decimal("0.42"), Decimal("0.42"))
    assert cost_usd(600_000, 400_000, flat) == Decimal("0.42")
    assert cost_usd(0, 0, STRONG) == Decimal(0)
    assert isinstance(cost_usd(1, 1, CHEAP), Decimal)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 23, 59, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_ledger_refuses_a_call_whose_worst_case_exceeds_the_budget() -> None:
    ledger = SpendLedger(Decimal("1.00"), FakeClock())
    first = ledger.try_reserve(Decimal("0.60"))
    assert first is not None
    assert ledger.try_reserve(Decimal("0.50")) is None  # 0.60 reserved in flight
    ledger.settle(first, Decimal("0.10"))
    assert ledger.spent_today == Decimal("0.10")
    assert ledger.try_reserve(Decimal("0.90")) is not None
    assert ledger.try_reserve(Decimal("0.01")) is None


def test_ledger_starts_over_when_the_utc_day_rolls() -> None:
    clock = FakeClock()
    ledger = SpendLedger(Decimal("1.00"), clock)
    r = ledger.try_reserve(Decimal("1.00"))
    assert r is not None
    ledger.settle(r, Decimal("1.00"))
    assert ledger.try_reserve(Decimal("0.01")) is None
    clock.now += timedelta(minutes=2)
    assert ledger.spent_today == 0
    assert ledger.try_reserve(Decimal("0.50")) is not None


def test_ledger_with_zero_budget_admits_nothing() -> None:
    assert SpendLedger(Decimal(0), FakeClock()).try_reserve(Decimal("0.000001")) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "61"}, None),  # beyond 60 s: use our own backoff
        ({"retry-after": "0"}, None),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_honoured_only_within_sixty_seconds(
    headers: dict[str, str], expected: float | None
) -> None:
    assert retry_after_seconds(headers) == expected


def test_retry_after_accepts_an_http_date() -> None:
    now = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
    headers = {"retry-after": "Mon, 02 Mar 2026 12:00:05 GMT"}
    assert retry_after_seconds(headers, now=lambda: now) == 5.0


async def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    client = build_client(
        base_url="http://127.0.0.1:1/v1",
        api_key="k",
        connect_timeout=1,
        read_timeout=1,
        request_timeout=1,
    )
    gateway = LlmGateway(
        client,
        breaker=CircuitBreaker(failure_threshold=1, open_seconds=1, monotonic=lambda: 0.0),
        retry_base_seconds=0.5,
        retry_max_seconds=4,
        rng=random.Random(7),
    )
    delays = [gateway.backoff(n) for n in range(1, 7)]
    await gateway.close()
    for n, delay in enumerate(delays, start=1):
        ceiling = min(0.5 * 2 ** (n - 1), 4)
        assert 0.75 * ceiling <= delay <= ceiling
    assert delays[-1] <= 4


def test_ledger_restores_todays_persisted_spend_and_ignores_another_days() -> None:
    clock = FakeClock()
    ledger = SpendLedger(Decimal("1.00"), clock)
    ledger.restore(clock().date(), Decimal("0.95"), calls=3, alerted=False)
    assert ledger.spent_today == Decimal("0.95")
    assert ledger.try_reserve(Decimal("0.10")) is None
    other = SpendLedger(Decimal("1.00"), clock)
    other.restore(clock().date() - timedelta(days=1), Decimal("0.95"), calls=3, alerted=True)
    assert other.spent_today == 0
    assert not other.alerted


class Mono:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_consecutive_failures_and_half_opens_for_one_probe() -> None:
    mono = Mono()
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=10, monotonic=mono)
    assert not breaker.record_failure("HTTP 500")
    breaker.record_success()  # a success in between resets the count
    assert not breaker.record_failure("HTTP 500")
    assert not breaker.record_failure("HTTP 500")
    assert breaker.record_failure("HTTP 500")
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    mono.t = 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    assert breaker.record_failure("timeout")  # a failed probe opens it again
    assert not breaker.allow()
    mono.t = 20
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
