"""The portfolio agent: every account's latest exposure (the internal account-exposures
topic, key 'portfolio'), the portfolio snapshot and the portfolio rules."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import ValidationError

from risk_processor import codec, metrics, state
from risk_processor.agents.context import Context
from risk_processor.evaluate import evaluate_portfolio
from risk_processor.outputs import Cause
from riskwatch_common.clock import from_ms
from riskwatch_common.contracts import PORTFOLIO_KEY
from riskwatch_common.topics import ACCOUNT_EXPOSURES

log = logging.getLogger(__name__)

ACCOUNT_KEY = "account:"
RISK_KEY = "risk"


def decode_summary(raw: bytes) -> tuple[str, state.AccountSummary]:
    """An account-exposures record; ``ValueError`` (or ``ValidationError``) when malformed."""
    noted = ACCOUNT_EXPOSURES.decode(raw)
    try:
        exposure = codec.exposure_from_json(noted.e)
    except (KeyError, TypeError, AttributeError, IndexError, ArithmeticError) as exc:
        raise ValueError(f"malformed exposure: {type(exc).__name__}: {exc}") from exc
    return noted.account, state.AccountSummary(
        exposure, noted.at, noted.corr, noted.produced, noted.e, noted.resynced
    )


def warmup_sets(accounts: dict[str, state.AccountSummary]) -> tuple[set[str], set[str]]:
    """(resynced, known) for the portfolio warm-up: known are the accounts that reported a
    link status, loaded those that completed their first resync or never reported one
    (an account seen only through its data counts as loaded once evaluated)."""
    known = {a for a, s in accounts.items() if s.resynced is not None}
    resynced = {a for a, s in accounts.items() if s.resynced is not False}
    return resynced, known


class PortfolioAgent:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Rebuilt from the table once per assignment; kept current by this agent.
        self._accounts: dict[str, state.AccountSummary] | None = None
        self._due: tuple[int, Cause] | None = None
        self._lock = asyncio.Lock()

    def reset(self) -> None:
        self._accounts = None
        self._due = None

    async def __call__(self, events: list[Any]) -> None:
        ctx = self.ctx
        table = ctx.tables.portfolio
        cause: Cause | None = None
        partition = events[0].message.partition
        changed: dict[str, state.AccountSummary] = {}
        for ev in events:
            message = ev.message
            try:
                account, summary = decode_summary(message.value or b"")
            except (ValidationError, ValueError) as exc:
                await ctx.dead_letter(ACCOUNT_EXPOSURES, message, exc, "decode")
                continue
            held = changed.get(account) or table.get(ACCOUNT_KEY + account)
            if not state.newer_summary(held, summary):
                metrics.STALE_DROPPED.labels("AccountExposure").inc()
                continue
            changed[account] = summary
            cause = Cause(
                summary.correlation_id, from_ms(summary.at_ms), from_ms(summary.produced_ms)
            )
        if not changed or cause is None:
            return
        for account, summary in changed.items():
            await ctx.writer.put(table, partition, ACCOUNT_KEY + account, summary)
        accounts = self._accounts
        if accounts is None:
            accounts = self._accounts = {
                k[len(ACCOUNT_KEY) :]: v for k, v in table.items() if k.startswith(ACCOUNT_KEY)
            }
        accounts.update(changed)
        self._due = (partition, cause)
        await self.evaluate()

    async def evaluate(self) -> None:
        """Evaluate the portfolio if an account changed since, at most once per interval.

        The portfolio is O(accounts) to evaluate and accounts change many times a second
        under load; the first change is evaluated at once, later ones within the interval
        together at its end (the snapshot timer calls this too).
        """
        ctx = self.ctx
        if self._due is None or not ctx.portfolio_throttle.ready():
            return
        async with self._lock:
            due, self._due = self._due, None
            accounts = self._accounts
            if due is None or accounts is None:
                return
            ctx.portfolio_throttle.ran()
            partition, cause = due
            table = ctx.tables.portfolio
            outbox = ctx.outbox
            risk = table.get(RISK_KEY) or state.EMPTY_RISK
            alerts_partition = outbox.partition_for(PORTFOLIO_KEY)
            if risk.outbox:
                risk = await outbox.recover(alerts_partition, risk)
            now = ctx.clock()
            started = time.perf_counter()
            try:
                resynced, known = warmup_sets(accounts)
                result = evaluate_portfolio(
                    accounts,
                    risk,
                    config=ctx.config,
                    now=now,
                    cause=cause,
                    source=ctx.source,
                    resynced=resynced,
                    known=known,
                )
            except Exception:
                metrics.EVALUATION_FAILURES.labels("portfolio").inc()
                log.exception("portfolio evaluation failed")
                return
            metrics.EVALUATION_SECONDS.labels("portfolio").observe(time.perf_counter() - started)
            risk = await outbox.publish(
                alerts_partition, outbox.settle(result.risk), result.alerts, cause.produced_at
            )
            await ctx.writer.put(table, partition, RISK_KEY, risk)
            ctx.coalescer.stage(PORTFOLIO_KEY, partition, result.exposure, risk, cause, now)
            if result.waiting and self._due is None:
                # Still warming up: the snapshot timer evaluates again, so the warm-up
                # timeout fires even when no account changes any more.
                self._due = due
        await ctx.emit_due()
