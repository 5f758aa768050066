"""Composition root of the AI analyst: Kafka in and out, HolySheep, health and metrics.

A separate consumer group from the notifier, so the alert path never waits for an LLM.
Alerts of one fetched batch are analysed concurrently (bounded by ``max_concurrency``);
the batch's offsets are committed only after every analysis of it was produced and
acknowledged, so a crash re-analyses (same event ids) instead of losing an analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ai_analyst.analyst import Analyst, AnalystConfig, ModelChoice
from ai_analyst.holysheep import HolySheepClient
from ai_analyst.pricing import ModelPrice, SpendLedger
from ai_analyst.settings import SERVICE, AnalystSettings
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import RiskAlertChanged
from riskwatch_common.kafka import BrokerProbe, Consumer, Producer, RecordMeta
from riskwatch_common.runtime import Health, HttpServer
from riskwatch_common.topics import ALERTS, ANALYSES, encode

log = logging.getLogger(__name__)


def analyst_config(settings: AnalystSettings) -> AnalystConfig:
    return AnalystConfig(
        source=f"{SERVICE}/{settings.instance}",
        cheap=ModelChoice(
            settings.cheap_model,
            ModelPrice(settings.cheap_input_usd_per_mtok, settings.cheap_output_usd_per_mtok),
        ),
        strong=ModelChoice(
            settings.strong_model,
            ModelPrice(settings.strong_input_usd_per_mtok, settings.strong_output_usd_per_mtok),
        ),
        max_completion_tokens=settings.max_completion_tokens,
        max_concurrency=settings.max_concurrency,
        recent_alerts=settings.recent_alerts,
        gateway_pause_seconds=settings.gateway_pause_seconds,
    )


class AnalystApp:
    """Builds the real adapters; tests replace ``clock`` and ``sleep``."""

    def __init__(
        self,
        settings: AnalystSettings,
        *,
        clock: Clock = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.health = Health()
        self.health.expect("kafka", "broker")
        self.http = HttpServer(settings.http_host, settings.http_port, self.health)
        self.producer = Producer(settings.kafka, service=SERVICE)
        self.consumer = Consumer(
            settings.kafka,
            specs=[ALERTS],
            group_id=settings.group_id,
            handler=self._handle,
            producer=self.producer,
            service=SERVICE,
            max_records=settings.max_batch_records,
            on_batch_done=self._batch_done,
        )
        self._session: aiohttp.ClientSession | None = None
        client: HolySheepClient | None = None
        key = settings.holysheep_api_key
        if key is not None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=settings.request_timeout_seconds,
                    sock_connect=min(10.0, settings.read_timeout_seconds),
                    sock_read=settings.read_timeout_seconds,
                )
            )
            client = HolySheepClient(
                self._session,
                base_url=settings.base_url,
                api_key=key.get_secret_value(),
                max_attempts=settings.max_attempts,
                retry_base_seconds=settings.retry_base_seconds,
                retry_max_seconds=settings.retry_max_seconds,
                sleep=sleep,
            )
        self.analyst = Analyst(
            analyst_config(settings),
            client=client,
            ledger=SpendLedger(settings.daily_budget_usd, clock),
            clock=clock,
        )
        self._pending: list[asyncio.Task[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> None:
        mode = "llm" if self.analyst.llm_enabled else "deterministic"
        if not self.analyst.llm_enabled:
            log.warning("llm disabled: no HOLYSHEEP_API_KEY; analyses are deterministic")
        self.health.set("analysis", True, mode)
        await self.http.start()
        await self.producer.start()
        await self.consumer.start()
        self.health.set("kafka", True, "consuming " + ALERTS.name)
        self._task = asyncio.create_task(self.consumer.run(), name="ai-analyst-consumer")
        self._probe = asyncio.create_task(
            BrokerProbe(
                self.settings.kafka, lambda ok, detail: self.health.set("broker", ok, detail)
            ).run(),
            name="ai-analyst-broker-probe",
        )
        log.info(
            "ai analyst started",
            extra={
                "mode": mode,
                "cheap_model": self.settings.cheap_model,
                "strong_model": self.settings.strong_model,
                "daily_budget_usd": str(self.settings.daily_budget_usd),
            },
        )

    async def wait(self) -> None:
        """Run until the consumer stops; a consumer crash propagates."""
        assert self._task is not None
        await self._task

    async def stop(self) -> None:
        self.health.set("kafka", False, "stopping")
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending.clear()
        await self.consumer.stop()
        await self.producer.stop()
        if self._session is not None:
            await self._session.close()
        await self.http.stop()

    async def _handle(self, alert: RiskAlertChanged, meta: RecordMeta) -> None:
        self._pending.append(asyncio.create_task(self._analyze(alert, meta)))

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
