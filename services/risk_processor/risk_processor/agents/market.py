"""The market agents: mark prices and tier tables into the GlobalTables; the holders of
a moved symbol are re-evaluated at most once per interval (``reevaluate.Reevaluator``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from risk_processor import metrics, state
from risk_processor.agents.context import Context
from riskwatch_common.contracts import ReevaluationRequested
from riskwatch_common.topics import MARK_PRICES, REEVALUATE, RISK_LIMITS, encode

log = logging.getLogger(__name__)


async def request_due(ctx: Context, *, min_age: float | None = None) -> None:
    """Send a re-evaluate request for every account the reevaluator says is due."""
    topic = ctx.topic(REEVALUATE)
    for account, reason in ctx.reevaluator.due(min_age=min_age):
        body = encode(ReevaluationRequested(account=account, reason=reason))
        await ctx.send(topic, account, body)
        metrics.REEVALUATIONS_REQUESTED.labels(reason).inc()


async def _moved(ctx: Context, symbols: Iterable[str], reason: str) -> None:
    """Holders of ``symbols`` are dirty; those not requested within the interval are
    requested at once (leading edge), the timer requests the rest (trailing edge)."""
    ctx.reevaluator.moved(symbols, reason)
    await request_due(ctx)


class MarksAgent:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._processed = metrics.EVENTS_PROCESSED.labels("MarkPriceUpdated")

    async def __call__(self, events: list[Any]) -> None:
        ctx = self.ctx
        marks = ctx.tables.marks
        latest: dict[str, tuple[int, Any]] = {}
        for ev in events:
            try:
                mark = MARK_PRICES.decode(ev.message.value or b"")
            except (ValidationError, ValueError) as exc:
                await ctx.dead_letter(MARK_PRICES, ev.message, exc, "decode")
                continue
            self._processed.inc()
            # Only the newest mark per symbol matters; older ones in the batch are skipped.
            latest[mark.symbol] = (ev.message.partition, mark)
        moved = []
        for symbol, (partition, mark) in latest.items():
            entry = state.apply_mark(marks.get(symbol), mark)
            if entry is None:
                continue
            await ctx.writer.put(marks, partition, symbol, entry)
            moved.append(symbol)
        if moved:
            await _moved(ctx, moved, "mark")


class TiersAgent:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._processed = metrics.EVENTS_PROCESSED.labels("RiskLimitTableUpdated")
        self._stale = metrics.STALE_DROPPED.labels("RiskLimitTableUpdated")

    async def __call__(self, events: list[Any]) -> None:
        ctx = self.ctx
        tiers = ctx.tables.tiers
        changed = []
        for ev in events:
            try:
                update = RISK_LIMITS.decode(ev.message.value or b"")
                entry = state.apply_tiers(tiers.get(update.symbol), update)
            except (ValidationError, ValueError) as exc:
                await ctx.dead_letter(RISK_LIMITS, ev.message, exc, "decode")
                continue
            self._processed.inc()
            if entry is None:
                self._stale.inc()
                continue
            await ctx.writer.put(tiers, ev.message.partition, update.symbol, entry)
            changed.append(update.symbol)
            log.info(
                "tier table changed", extra={"symbol": update.symbol, "version": entry.version}
            )
        if changed:
            await _moved(ctx, changed, "tiers")
