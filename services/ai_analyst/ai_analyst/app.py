"""Composition root of the AI analyst: Kafka in and out, the LLM gateway, health, metrics.

A separate consumer group from the notifier, so the alert path never waits for an LLM.
It reads the alerts and the exposure snapshots (the prompt's context); alerts of one
account wait in a coalescing window and share one call. A batch's offsets are committed
only after every analysis of it was produced and acknowledged, so a crash re-analyses
(same event ids) instead of losing an analysis. The day's AI spend lives on the compacted
topic ``ai.spend.v1`` and is read back before the first alert is consumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ai_analyst.analyst import Analyst, AnalystConfig, ModelChoice
from ai_analyst.breaker import CircuitBreaker
from ai_analyst.budget_store import BudgetStore, KafkaBudgetStore
from ai_analyst.gateway import LlmGateway, build_client
from ai_analyst.pricing import SpendLedger
from ai_analyst.settings import SERVICE, AnalystSettings
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import ExposureSnapshotted, RiskAlertChanged
from riskwatch_common.kafka import BrokerProbe, Consumer, Producer, RecordMeta
from riskwatch_common.runtime import Health, HttpServer, supervise
from riskwatch_common.topics import ALERTS, ANALYSES, EXPOSURES, encode

log = logging.getLogger(__name__)


def analyst_config(settings: AnalystSettings) -> AnalystConfig:
    return AnalystConfig(
        source=f"{SERVICE}/{settings.instance}",
        cheap=ModelChoice(settings.cheap_model, settings.cheap_price),
        strong=ModelChoice(settings.strong_model, settings.strong_price),
        max_completion_tokens=settings.max_completion_tokens,
        max_concurrency=settings.max_concurrency,
        recent_alerts=settings.recent_alerts,
        coalesce_window_seconds=settings.coalesce_window_seconds,
        coalesce_max_alerts=settings.coalesce_max_alerts,
        cache_ttl_seconds=settings.cache_ttl_seconds,
        cache_entries=settings.cache_entries,
        budget_key=settings.spend_key,
    )


def build_gateway(
    settings: AnalystSettings,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> LlmGateway | None:
    """The gateway adapter, or None without a key (every analysis is then deterministic)."""
    key = settings.gateway_key
    if key is None:
        return None
    client = build_client(
        base_url=settings.base_url,
        api_key=key.get_secret_value(),
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        request_timeout=settings.request_timeout_seconds,
    )
    return LlmGateway(
        client,
        breaker=CircuitBreaker(
            failure_threshold=settings.breaker_failures,
            open_seconds=settings.breaker_open_seconds,
            monotonic=monotonic,
        ),
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
        retry_max_seconds=settings.retry_max_seconds,
        request_timeout=settings.request_timeout_seconds,
        gateway_pause_seconds=settings.gateway_pause_seconds,
        sleep=sleep,
    )


class AnalystApp:
    """Builds the real adapters; tests replace ``clock``, ``sleep`` and the budget store."""

    def __init__(
        self,
        settings: AnalystSettings,
        *,
        clock: Clock = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        store: BudgetStore | None = None,
    ) -> None:
        self.settings = settings
        self.health = Health()
        self.health.expect("kafka", "broker")
        self.http = HttpServer(settings.http_host, settings.http_port, self.health)
        self.producer = Producer(settings.kafka, service=SERVICE)
        self.consumer = Consumer(
            settings.kafka,
            specs=[ALERTS, EXPOSURES],
            group_id=settings.group_id,
            handler=self._handle,
            producer=self.producer,
            service=SERVICE,
            max_records=settings.max_batch_records,
            on_batch_done=self._batch_done,
        )
        self.gateway = build_gateway(settings, sleep=sleep)
        self.analyst = Analyst(
            analyst_config(settings),
            gateway=self.gateway,
            ledger=SpendLedger(settings.daily_budget_usd, clock),
            store=store or KafkaBudgetStore(settings.kafka, self.producer),
            on_budget_spent=self._publish_budget_alert,
            clock=clock,
        )
        self._pending: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        mode = "llm" if self.analyst.llm_enabled else "deterministic"
        if not self.analyst.llm_enabled:
            log.warning("llm disabled: no AI_ANALYST_API_KEY; analyses are deterministic")
        self.health.set("analysis", True, mode)
        await self.http.start()
        await self.producer.start()
        await self.analyst.restore()
        await self.consumer.start()
        self.health.set("kafka", True, f"consuming {ALERTS.name}, {EXPOSURES.name}")
        # Supervised: a loop that raises or ends fails the service (/healthz 503, exit 1).
        self._tasks = [
            supervise(self.consumer.run(), "consumer", self.health),
            supervise(self.analyst.run(), "coalescing windows", self.health),
            supervise(
                BrokerProbe(
                    self.settings.kafka, lambda ok, detail: self.health.set("broker", ok, detail)
                ).run(),
                "broker probe",
                self.health,
            ),
        ]
        log.info(
            "ai analyst started",
            extra={
                "mode": mode,
                "base_url": self.settings.base_url,
                "cheap_model": self.settings.cheap_model,
                "strong_model": self.settings.strong_model,
                "daily_budget_usd": str(self.settings.daily_budget_usd),
                "coalesce_window_s": self.settings.coalesce_window_seconds,
            },
        )

    async def wait(self) -> None:
        """Run until a supervised task stops; its error propagates."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RuntimeError("an ai-analyst task stopped unexpectedly")

    async def stop(self) -> None:
        self.health.set("kafka", False, "stopping")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending.clear()
        await self.analyst.close()
        await self.consumer.stop()
        await self.producer.stop()
        if self.gateway is not None:
            await self.gateway.close()
        await self.http.stop()

    async def _handle(
        self, event: RiskAlertChanged | ExposureSnapshotted, meta: RecordMeta
    ) -> None:
        if isinstance(event, ExposureSnapshotted):
            self.analyst.context.update(event)
            return
        self._pending.append(asyncio.create_task(self._analyze(event, meta)))

    async def _publish_budget_alert(self, alert: RiskAlertChanged) -> None:
        await self.producer.send_and_wait(ALERTS, alert.account, alert)
        log.warning(alert.reason, extra={"alert_id": alert.alert_id})

    async def _analyze(self, alert: RiskAlertChanged, meta: RecordMeta) -> None:
        try:
            analysis = await self.analyst.analyze(alert)
            if analysis is not None:
                await self.producer.send_and_wait(ANALYSES, analysis.account, analysis)
        except Exception as exc:
            log.exception("analysis failed", extra={"source": meta.source})
            await self.producer.dead_letter(
                ALERTS,
                value=encode(alert),
                key=meta.key,
                error=exc,
                source=meta.source,
                partition=meta.partition,
                offset=meta.offset,
            )

    async def _batch_done(self) -> None:
        pending, self._pending = self._pending, []
        results: list[Any] = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # the dead-letter send itself failed: let the consumer crash


async def main(settings: AnalystSettings) -> None:
    app = AnalystApp(settings)
    await app.start()
    try:
        await app.wait()
    finally:
        await app.stop()
