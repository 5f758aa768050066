"""The analyst service end to end on the real broker, with the fake HolySheep."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from ai_analyst.app import AnalystApp
from ai_analyst.settings import AnalystSettings
from riskwatch_common import topics
from riskwatch_common.broker import free_port
from riskwatch_common.contracts import (
    AiSpendRecorded,
    AlertTransition,
    AnalysisCompleted,
    AnalysisMode,
    RiskAlertChanged,
    Severity,
    derived_event_id,
)
from riskwatch_common.kafka import Producer
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import read_topic, wait_until

pytestmark = pytest.mark.integration


async def test_alert_on_the_alerts_topic_produces_one_analysis_keyed_by_account(
    kafka: KafkaSettings, holysheep: Any, make_alert: Any
) -> None:
    settings = AnalystSettings(
        kafka=kafka,
        http_port=0,
        api_key=SecretStr("hs-it-key-0123456789"),
        base_url=holysheep.base_url,
        coalesce_window_seconds=0.2,
    )
    app = AnalystApp(settings)
    producer = Producer(kafka, service="test")
    await producer.start()
    await app.start()
    try:
        resolved = make_alert(account="sub_hedge", transition=AlertTransition.RESOLVED)
        raised = make_alert(account="sub_hedge", severity=Severity.HIGH)
        # same key, same partition: once the raised one is analysed the resolved one was seen
        await producer.send_and_wait(topics.ALERTS, "sub_hedge", resolved)
        await producer.send_and_wait(topics.ALERTS, "sub_hedge", raised)

        records = await read_topic(kafka, topics.ANALYSES, min_records=1)
        assert len(records) == 1
        key, value = records[0]
        analysis = AnalysisCompleted.model_validate_json(value)
        assert key == b"sub_hedge"
        assert analysis.event_id == derived_event_id("analysis", raised.event_id)
        assert analysis.alert_event_id == raised.event_id
        assert analysis.alert_id == raised.alert_id
        assert analysis.correlation_id == raised.correlation_id
        assert analysis.mode == AnalysisMode.LLM
        assert analysis.model == "gpt-4.1"
        assert holysheep.models == ["gpt-4.1"]

        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{app.http.port}"

            async def ready() -> bool:
                async with http.get(f"{base}/readyz") as resp:
                    return resp.status == 200

            await wait_until(ready, message="/readyz ok")
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert 'ai_analyst_llm_requests_total{model="gpt-4.1",outcome="ok"}' in text
            assert "ai_analyst_llm_cost_usd_total" in text
            assert 'ai_analyst_llm_call_cost_usd_count{model="gpt-4.1"}' in text
    finally:
        await app.stop()
        await producer.stop()


async def test_the_daily_budget_survives_a_restart_on_the_compacted_spend_topic(
    kafka: KafkaSettings, holysheep: Any, make_alert: Any
) -> None:
    holysheep.prompt_tokens, holysheep.completion_tokens = 3000, 1000
    # one cheap call bills 4000 tokens = 0.00168 USD; the worst case of a second won't fit
    settings = AnalystSettings(
        kafka=kafka,
        http_port=0,
        api_key=SecretStr("hs-it-key-0123456789"),
        base_url=holysheep.base_url,
        coalesce_window_seconds=0.1,
        daily_budget_usd=Decimal("0.002"),
    )
    producer = Producer(kafka, service="test")
    await producer.start()
    try:
        first = AnalystApp(settings)
        await first.start()
        try:
            await producer.send_and_wait(topics.ALERTS, "main", make_alert())
            await read_topic(kafka, topics.ANALYSES, min_records=1)
        finally:
            await first.stop()
        [(key, value)] = await read_topic(kafka, topics.AI_SPEND, min_records=1)
        assert key == b"ai-analyst/0"
        assert AiSpendRecorded.model_validate_json(value).spent_usd == Decimal("0.00168")

        second = AnalystApp(settings)  # a new process: it must not start from zero
        await second.start()
        try:
            assert second.analyst.ledger.spent_today == Decimal("0.00168")
            await producer.send_and_wait(topics.ALERTS, "main", make_alert(rule="later"))
            records = await read_topic(kafka, topics.ANALYSES, min_records=2)
            analyses = [AnalysisCompleted.model_validate_json(v) for _, v in records]
            later = [a for a in analyses if a.rule == "later"]
            assert [a.mode for a in later] == [AnalysisMode.DETERMINISTIC]
            assert "budget" in later[0].note
            assert len(holysheep.requests) == 1
            alerts = await read_topic(kafka, topics.ALERTS, min_records=3)
            budget = [RiskAlertChanged.model_validate_json(v) for _, v in alerts]
            assert [a.rule for a in budget if a.rule == "ai_budget_spent"] == ["ai_budget_spent"]
        finally:
            await second.stop()
    finally:
        await producer.stop()


async def test_process_with_a_newline_padded_key_calls_the_gateway_and_never_shows_the_key(
    kafka: KafkaSettings, holysheep: Any, make_alert: Any
) -> None:
    # a key from a mounted secret keeps its newline; stripped, it authenticates, and neither
    # an endpoint, a log line nor a metric label ever carries it
    key = "hs-scan-secret-5e6f7a8b9c"
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        **kafka.as_env(),
        "AI_ANALYST_API_KEY": f"{key}\n",
        "AI_ANALYST_BASE_URL": holysheep.base_url,
        "AI_ANALYST_HTTP_PORT": str(port),
        "AI_ANALYST_METRICS_PORT": str(metrics_port),
        "AI_ANALYST_COALESCE_WINDOW_SECONDS": "0.2",
        "LOG_LEVEL": "DEBUG",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ai_analyst",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    producer = Producer(kafka, service="test")
    await producer.start()
    bodies: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as http:

            async def get(url: str) -> tuple[int, str]:
                try:
                    async with http.get(url) as resp:
                        return resp.status, await resp.text()
                except aiohttp.ClientError:
                    return 0, ""

            async def ready() -> bool:
                return (await get(f"http://127.0.0.1:{port}/readyz"))[0] == 200

            await wait_until(ready, timeout=60, message="/readyz ok")
            alert = make_alert(account="main", severity=Severity.HIGH)
            await producer.send_and_wait(topics.ALERTS, "main", alert)
            await read_topic(kafka, topics.ANALYSES, min_records=1, timeout=30)
            for route in ("/healthz", "/readyz", "/metrics"):
                bodies[route] = (await get(f"http://127.0.0.1:{port}{route}"))[1]
            status, bodies["metrics port"] = await get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await producer.stop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    bodies["log"] = (await proc.stderr.read()).decode() if proc.stderr else ""

    assert holysheep.auth_headers == [f"Bearer {key}"]
    assert "ai_analyst_llm_requests_total" in bodies["metrics port"]
    for where, text in bodies.items():
        assert key not in text, f"the key leaked into {where}"
