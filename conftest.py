"""Session-wide fixtures: one Kafka-protocol broker for the whole test run.

``KAFKA_BOOTSTRAP_SERVERS`` selects an existing cluster; otherwise the embedded broker
starts once (fresh, memory-only) and every test gets its own topic namespace on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from riskwatch_common.broker import EmbeddedBroker
from riskwatch_common.kafka import ensure_topics
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import external_bootstrap, kafka_settings_for_test
from riskwatch_common.topics import ALL_TOPICS


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = external_bootstrap()
    if external:
        yield external
        return
    broker = EmbeddedBroker()
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture
async def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """Kafka settings with a fresh namespace whose registry topics already exist."""
    settings = kafka_settings_for_test(kafka_bootstrap, external=bool(external_bootstrap()))
    await asyncio.wait_for(ensure_topics(settings, ALL_TOPICS), 30)
    return settings
