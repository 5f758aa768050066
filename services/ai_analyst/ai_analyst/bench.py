"""``make bench-analyst``: what an alert storm costs and how long its analyses take.

A storm of alerts (1,000 over 10 accounts within a minute by default, every seventh HIGH with
hedge options) goes through the analyst as the service runs it (coalescing windows, cache,
budget, the openai SDK over real HTTP) against the local fake OpenAI-compatible server of
``ai_analyst.testing``, which answers after ``--llm-latency`` seconds and bills tokens by
request size. Kafka is left out: it is the same for every design and measured by
``bench-risk``. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from decimal import Decimal

from ai_analyst.analyst import Analyst, AnalystConfig, ModelChoice
from ai_analyst.breaker import CircuitBreaker
from ai_analyst.budget_store import MemoryBudgetStore
from ai_analyst.gateway import LlmGateway, build_client
from ai_analyst.pricing import ModelPrice, SpendLedger
from ai_analyst.testing import THREE_OPTIONS, FakeGateway
from riskwatch_common.benchkit import paced, percentile
from riskwatch_common.clock import utc_now
from riskwatch_common.contracts import (
    AlertTransition,
    AnalysisCompleted,
    AnalysisMode,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    new_event_id,
)

RULES = ("net_exposure_usd", "unrealised_loss", "direction_bias", "tier_headroom", "liq_distance")


def _alert(i: int, accounts: int, rng: random.Random) -> RiskAlertChanged:
    account = f"acct{i % accounts:02d}"
    rule = RULES[(i // accounts) % len(RULES)]
    high = i % 7 == 0  # spread over the accounts
    value = Decimal(10_000 + rng.randrange(0, 40_000))
    now_ts = utc_now()
    return RiskAlertChanged(
        event_id=new_event_id(),
        occurred_at=now_ts,
        produced_at=now_ts,
        source="bench",
        correlation_id=f"bench-{i}",
        alert_id=f"{account}:{rule}:BTCUSDT",
        transition=AlertTransition.RAISED if i % 3 else AlertTransition.ESCALATED,
        account=account,
        rule=rule,
        subject="BTCUSDT",
        severity=Severity.HIGH if high else Severity.WARNING,
        risk_level=RiskLevel.HIGH if high else RiskLevel.MEDIUM,
        reason=f"{rule} {value} USD above 10000",
        numbers={"value": value, "threshold": Decimal(10_000)},
        hedge_options=THREE_OPTIONS if high else (),
    )


async def bench(args: argparse.Namespace) -> None:
    fake = FakeGateway(prompt_tokens=None, completion_tokens=args.completion_tokens)
    fake.default_delay = args.llm_latency
    await fake.start()
    gateway = LlmGateway(
        build_client(
            base_url=fake.base_url,
            api_key="bench-key",
            connect_timeout=5,
            read_timeout=30,
            request_timeout=60,
        ),
        breaker=CircuitBreaker(failure_threshold=5, open_seconds=60, monotonic=time.monotonic),
    )
    config = AnalystConfig(
        source="ai-analyst/bench",
        cheap=ModelChoice("deepseek-v3.2", ModelPrice(Decimal("0.42"), Decimal("0.42"))),
        strong=ModelChoice("gpt-4.1", ModelPrice(Decimal(8), Decimal(8))),
        coalesce_window_seconds=args.window,
        max_concurrency=args.concurrency,
    )
    analyst = Analyst(
        config,
        gateway=gateway,
        ledger=SpendLedger(Decimal(args.budget), utc_now),
        store=MemoryBudgetStore(),
    )
    runner = asyncio.create_task(analyst.run())
    rng = random.Random(7)
    delays: list[float] = []
    results: list[AnalysisCompleted | BaseException | None] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(alert: RiskAlertChanged) -> None:
        started = time.perf_counter()
        try:
            results.append(await analyst.analyze(alert))
        except Exception as exc:
            results.append(exc)
        delays.append(time.perf_counter() - started)

    async def send(i: int) -> None:
        tasks.append(asyncio.create_task(one(_alert(i, args.accounts, rng))))

    began = time.perf_counter()
    sent = await paced(args.alerts / args.seconds, args.seconds, send)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    runner.cancel()
    await analyst.close()
    await gateway.close()
    await fake.stop()

    analyses = [r for r in results if isinstance(r, AnalysisCompleted)]
    llm = [a for a in analyses if a.mode is AnalysisMode.LLM]
    prompt = sum(a.prompt_tokens for a in analyses)
    completion = sum(a.completion_tokens for a in analyses)
    usd = sum((a.cost_usd for a in analyses), Decimal(0))
    calls = len(fake.requests)
    print(f"alerts: {sent} over {args.accounts} accounts in {args.seconds:g} s")
    print(f"coalescing window: {args.window:g} s; fake LLM latency: {args.llm_latency:g} s")
    print(f"LLM calls: {calls} (strong {fake.models.count('gpt-4.1')})")
    print(f"calls per alert: {calls / max(sent, 1):.3f}")
    print(f"cached answers: {sum(1 for a in analyses if a.cached)}")
    print(f"tokens: {prompt} prompt + {completion} completion")
    print(f"USD: {usd}")
    print(f"analyses: {len(llm)} llm, {len(analyses) - len(llm)} deterministic")
    print(
        "added latency (alert -> analysis): "
        f"p50 {percentile(delays, 0.5):.2f} s, p99 {percentile(delays, 0.99):.2f} s, "
        f"max {max(delays, default=float('nan')):.2f} s"
    )
    print(f"wall time: {elapsed:.1f} s")
    print(f"alerts without analysis: {sent - len(analyses)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0, help="storm duration")
    parser.add_argument("--window", type=float, default=3.0, help="coalescing window (s)")
    parser.add_argument("--llm-latency", type=float, default=0.8, help="fake answer delay (s)")
    parser.add_argument("--completion-tokens", type=int, default=250)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--budget", default="5", help="daily budget (USD)")
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
