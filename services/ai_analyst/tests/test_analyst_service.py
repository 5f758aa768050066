"""The analyst service end to end on the real broker, with the fake HolySheep."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from ai_analyst.app import AnalystApp
from ai_analyst.settings import AnalystSettings
from riskwatch_common import topics
from riskwatch_common.contracts import (
    AlertTransition,
    AnalysisCompleted,
    AnalysisMode,
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
        holysheep_api_key=SecretStr("hs-it-key-0123456789"),
        base_url=holysheep.base_url,
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
    finally:
        await app.stop()
        await producer.stop()
