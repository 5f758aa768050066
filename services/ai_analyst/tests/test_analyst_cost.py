"""Cost: coalescing on a fake clock, the fingerprint cache, the persisted daily budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from ai_analyst.analyst import BUDGET_RULE, Analyst, split
from ai_analyst.budget_store import MemoryBudgetStore
from ai_analyst.coalesce import Windows
from ai_analyst.testing import FakeGateway, facts_of
from riskwatch_common.contracts import AnalysisMode, RiskAlertChanged, Severity
from riskwatch_common.testkit import FakeClock, wait_until


def test_windows_close_after_their_time_or_when_full() -> None:
    w: Windows[str] = Windows(seconds=3, max_items=3)
    assert w.add("main", "a", now=0.0) is None
    assert w.add("main", "b", now=2.9) is None
    assert w.add("sub", "x", now=1.0) is None
    assert w.due(2.99) == []
    assert w.next_due() == 3.0
    [main] = w.due(3.0)
    assert (main.key, main.items) == ("main", ["a", "b"])
    assert w.add("sub", "y", now=3.5) is None
    full = w.add("sub", "z", now=3.6)
    assert full is not None
    assert full.items == ["x", "y", "z"]
    assert len(w) == 0


async def test_alerts_of_one_account_within_the_window_share_one_call(
    holysheep: FakeGateway, build: Callable[..., Analyst], clock: FakeClock, make_alert: Any
) -> None:
    holysheep.answer(prompt_tokens=1000, completion_tokens=200)
    holysheep.answer(prompt_tokens=1000, completion_tokens=200)
    analyst = build(window=3.0, max_alerts=50)
    main = [asyncio.create_task(analyst.analyze(make_alert(rule=f"r{i}"))) for i in range(3)]
    await wait_until(lambda: analyst.open_windows == 1, message="main's window open")
    clock.advance(1)
    other = asyncio.create_task(analyst.analyze(make_alert(account="sub_hedge")))
    await wait_until(lambda: analyst.open_windows == 2, message="two windows open")
    clock.advance(1.75)  # 2.75 s after the first alert: nothing is due yet
    assert analyst.flush_due() == []
    assert holysheep.requests == []
    clock.advance(0.25)
    [task] = analyst.flush_due()
    await task
    results = await asyncio.gather(*main)
    assert len(holysheep.requests) == 1
    assert not other.done()
    facts = facts_of(holysheep.requests[0])
    assert facts["alerts_in_group"] == 3
    assert {a["rule"] for a in facts["alerts"]} == {"r0", "r1", "r2"}
    assert all(r is not None and r.mode == AnalysisMode.LLM for r in results)
    assert {r.call_id for r in results if r is not None} != {None}
    assert len({r.call_id for r in results if r is not None}) == 1
    assert all(r is not None and r.alerts_in_call == 3 for r in results)
    # the shares of the one call add up to exactly what it cost
    call_cost = Decimal(1200) * Decimal("0.42") / 1_000_000
    assert sum(r.cost_usd for r in results if r is not None) == call_cost
    assert all(r is not None and r.call_cost_usd == call_cost for r in results)
    clock.advance(1)
    await asyncio.gather(*analyst.flush_due())
    assert (await other) is not None
    assert len(holysheep.requests) == 2


def test_cost_shares_sum_to_the_call_exactly() -> None:
    total = Decimal("0.000100001")
    shares = split(total, 7)
    assert sum(shares) == total
    assert len(shares) == 7


async def test_the_same_input_again_is_answered_from_the_cache(
    holysheep: FakeGateway, build: Callable[..., Analyst], make_alert: Any
) -> None:
    analyst = build()
    first = await analyst.analyze(make_alert())
    second = await analyst.analyze(make_alert())  # a new event, the same facts
    changed = await analyst.analyze(make_alert(numbers={"value": Decimal(13000)}))
    assert len(holysheep.requests) == 2
    assert first is not None
    assert second is not None
    assert changed is not None
    assert (second.mode, second.cached, second.cost_usd) == (AnalysisMode.LLM, True, 0)
    assert second.text_html == first.text_html
    assert not changed.cached


async def test_budget_spent_switches_to_deterministic_and_raises_one_budget_alert(
    holysheep: FakeGateway, build: Callable[..., Analyst], clock: FakeClock, make_alert: Any
) -> None:
    published: list[RiskAlertChanged] = []

    async def publish(alert: RiskAlertChanged) -> None:
        published.append(alert)

    # each call bills 2000 + 1000 tokens = 0.00126 USD on the cheap model
    holysheep.prompt_tokens, holysheep.completion_tokens = 2000, 1000
    analyst = build(budget=Decimal("0.0015"), on_budget_spent=publish)
    first = await analyst.analyze(make_alert())
    second = await analyst.analyze(make_alert(rule="other"))
    third = await analyst.analyze(make_alert(rule="third"))
    assert first is not None
    assert first.mode == AnalysisMode.LLM
    assert first.cost_usd == Decimal("0.00126")
    for later in (second, third):
        assert later is not None
        assert later.mode == AnalysisMode.DETERMINISTIC
        assert later.note == "deterministic summary: daily AI budget of 0.0015 USD reached"
    assert len(holysheep.requests) == 1
    [alert] = published
    assert alert.rule == BUDGET_RULE
    assert alert.severity == Severity.WARNING
    assert alert.numbers == {"spent_usd": Decimal("0.00126"), "budget_usd": Decimal("0.0015")}
    assert await analyst.analyze(alert) is None  # its own alert is not analysed
    clock.advance(24 * 3600)
    fourth = await analyst.analyze(make_alert(rule="next day"))
    assert fourth is not None
    assert fourth.mode == AnalysisMode.LLM


async def test_the_daily_budget_survives_a_restart(
    holysheep: FakeGateway,
    build: Callable[..., Analyst],
    clock: FakeClock,
    store: MemoryBudgetStore,
    make_alert: Any,
) -> None:
    holysheep.prompt_tokens, holysheep.completion_tokens = 2000, 1000
    before = build(budget=Decimal("0.0015"))
    await before.restore()
    await before.analyze(make_alert())
    [record] = store.records.values()
    assert record.spent_usd == Decimal("0.00126")
    assert record.day == clock().date()

    after = build(budget=Decimal("0.0015"))  # a new process, the same store
    await after.restore()
    assert after.ledger.spent_today == Decimal("0.00126")
    analysis = await after.analyze(make_alert(rule="after restart"))
    assert analysis is not None
    assert analysis.mode == AnalysisMode.DETERMINISTIC
    assert len(holysheep.requests) == 1

    # yesterday's record does not count today
    clock.now += timedelta(days=1)
    fresh = build(budget=Decimal("0.0015"))
    await fresh.restore()
    assert fresh.ledger.spent_today == 0
