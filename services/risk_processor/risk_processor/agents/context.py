"""What the agents share: topic handles, tables, the outbox, dead letters, dedup, market.

One ``Context`` per worker, built by ``app.RiskProcessor``; the agents get it and nothing
else, so following an event never leads back to the composition root.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from risk_processor import api, codec, metrics, state
from risk_processor.coalesce import Coalescer, Throttle
from risk_processor.config import RiskConfig
from risk_processor.faust_app import Tables
from risk_processor.outbox import Outbox
from risk_processor.outputs import account_snapshot, portfolio_snapshot
from risk_processor.reevaluate import Reevaluator
from risk_processor.settings import RiskProcessorSettings
from risk_processor.tables import TableWriter
from riskwatch_common.clock import Clock, to_ms
from riskwatch_common.contracts import PORTFOLIO_KEY
from riskwatch_common.kafka import dead_letter_record
from riskwatch_common.topics import ACCOUNT_EXPOSURES, EXPOSURES, TopicSpec, dead_letter_of

log = logging.getLogger(__name__)

SERVICE = "risk-processor"


EVENT_KINDS = (
    "PositionUpdated",
    "OrderUpdated",
    "WalletUpdated",
    "ExecutionReported",
    "AccountStatusChanged",
    "PipelineHeartbeat",
    "MarkPriceUpdated",
    "RiskLimitTableUpdated",
)


class Market:
    """Mark and tier entries of the symbols one batch needs, each looked up once."""

    def __init__(self, marks: Any, tiers: Any) -> None:
        self._marks = marks
        self._tiers = tiers
        self._cache: dict[str, tuple[state.MarkEntry | None, state.TierEntry | None]] = {}

    def get(self, symbol: str) -> tuple[state.MarkEntry | None, state.TierEntry | None]:
        found = self._cache.get(symbol)
        if found is None:
            found = self._cache[symbol] = (self._marks.get(symbol), self._tiers.get(symbol))
        return found

    def marks(self, symbols: Iterable[str]) -> dict[str, Decimal]:
        return {s: m.price for s in symbols if (m := self.get(s)[0]) is not None}

    def tiers(self, symbols: Iterable[str]) -> dict[str, state.TierEntry]:
        return {s: t for s in symbols if (t := self.get(s)[1]) is not None}


class Dedup:
    """Event ids seen recently by this process (bounded memory).

    Only a shortcut: the durable guard is the ordering key in each state value.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._seen: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        if not self.window:
            return False
        seen = self._seen
        if event_id in seen:
            return True
        seen[event_id] = None
        if len(seen) > self.window:
            seen.popitem(last=False)
        return False


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    topic: str
    key: bytes | None
    body: bytes


@dataclass
class Context:
    """The per-worker state and handles every agent uses."""

    settings: RiskProcessorSettings
    config: RiskConfig
    clock: Clock
    app: Any
    tables: Tables
    writer: TableWriter
    outbox: Outbox
    coalescer: Coalescer
    portfolio_throttle: Throttle
    reevaluator: Reevaluator
    names: dict[str, str]
    source: str
    dedup: Dedup
    exposures: dict[str, Any] = field(default_factory=dict)
    dead_letters_pending: list[_Pending] = field(default_factory=list)
    # Account-event records handled (including dead-lettered and stale ones).
    records_handled: int = 0

    def topic(self, spec: TopicSpec) -> str:
        return self.names[spec.name]

    def market(self) -> Market:
        return Market(self.tables.marks, self.tables.tiers)

    async def send(self, topic: str, key: str, value: bytes) -> Any:
        return await self.app.producer.send(topic, key.encode(), value, None, None, None)

    async def dead_letter(
        self, spec: TopicSpec, message: Any, error: BaseException, reason: str
    ) -> None:
        """Send ``message`` to ``spec``'s dead-letter topic (bounded), count and log it."""
        source_topic = message.topic
        body = dead_letter_record(
            source_topic=source_topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value or b"",
            error=error,
            reason=reason,
            service=SERVICE,
            failed_at=self.clock(),
        )
        dlq = dead_letter_of(spec).qualified(self.settings.kafka.topic_namespace)
        await self._send_dead_letter(dlq, message.key, body)
        metrics.DEAD_LETTERED.labels(source_topic, reason).inc()
        log.warning(
            "record dead-lettered",
            extra={
                "source": f"{source_topic}[{message.partition}]@{message.offset}",
                "reason": reason,
                "error": str(error)[:500],
            },
        )

    async def _send_dead_letter(self, topic: str, key: bytes | None, body: bytes) -> None:
        future = await self.app.producer.send(topic, key, body, None, None, None)
        self.dead_letters_pending.append(_Pending(future, topic, key, body))

    async def retry_failed_dead_letters(self) -> int:
        """Drop acknowledged dead letters; send again those whose send failed."""
        pending, self.dead_letters_pending = self.dead_letters_pending, []
        failed = 0
        for p in pending:
            if not p.future.done():
                self.dead_letters_pending.append(p)
            elif p.future.cancelled() or p.future.exception() is not None:
                failed += 1
                metrics.DEAD_LETTER_RETRIES.inc()
                log.warning("dead-letter send failed; sending it again", extra={"topic": p.topic})
                await self._send_dead_letter(p.topic, p.key, p.body)
        return failed

    async def emit_due(self, *, everything: bool = False) -> None:
        """Publish the staged snapshots whose key has not published within the interval,
        with the query API's views and (for an account) the portfolio stage's summary."""
        due = self.coalescer.take_due(everything=everything)
        if not due:
            return
        exposures = self.topic(EXPOSURES)
        summaries = self.topic(ACCOUNT_EXPOSURES)
        views = self.tables.views
        put = self.writer.put
        for key, staged in due:
            e = staged.exposure
            build = portfolio_snapshot if key == PORTFOLIO_KEY else account_snapshot
            body, _ = build(e, now=staged.now, cause=staged.cause, source=self.source)
            await self.send(exposures, key, body)
            await put(views, staged.partition, api.exposure_key(key), body)
            if self.coalescer.alert_view_changed(key, staged):
                alerts = orjson.dumps([s.to_dict() for s in staged.risk.alerts.values()])
                view = api.alerts_key(key)
                if views.get(view) != alerts:
                    await put(views, staged.partition, view, alerts)
            if key == PORTFOLIO_KEY:
                metrics.SNAPSHOTS_EMITTED.labels("portfolio").inc()
                continue
            metrics.SNAPSHOTS_EMITTED.labels("account").inc()
            cause = staged.cause
            # The fields of AccountExposureNoted, dumped directly: model_dump_json of the
            # exposure costs several times orjson's.
            summary = {
                "account": key,
                "at": to_ms(staged.now),
                "corr": cause.correlation_id,
                "produced": to_ms(cause.produced_at or staged.now),
                "e": codec.exposure_to_json(e),
            }
            link = staged.risk.link
            if link is not None:
                summary["resynced"] = link.resynced
            await self.send(summaries, PORTFOLIO_KEY, orjson.dumps(summary))
