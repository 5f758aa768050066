"""The riskwatch pytest plugin: one Kafka broker for the whole test run.

Loaded by the repository's root ``conftest.py`` (``pytest_plugins``), so every member's
tests get the same fixtures: ``kafka_broker``, ``broker_kind``, ``kafka``.

``KAFKA_BOOTSTRAP_SERVERS`` selects an existing cluster; otherwise the local broker that
``RISKWATCH_BROKER`` selects (Apache Kafka by default, see ``riskwatch_common.broker``)
starts once on a fresh data dir, and every test gets its own topic namespace on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from riskwatch_common.broker import LocalBroker, local_broker
from riskwatch_common.kafka import ensure_topics
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import external_bootstrap, fresh_namespace
from riskwatch_common.topics import ALL_TOPICS

_banner: list[str] = []


def _say(config: pytest.Config, line: str) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def kafka_broker(pytestconfig: pytest.Config) -> Iterator[LocalBroker | None]:
    """The local broker of this run, or None when ``KAFKA_BOOTSTRAP_SERVERS`` names one."""
    external = external_bootstrap()
    if external:
        _banner.append(f"broker: external cluster {external} (KAFKA_BOOTSTRAP_SERVERS)")
        _say(pytestconfig, _banner[-1])
        yield None
        return
    broker = local_broker()
    try:
        broker.start()
        _banner.append(broker.banner())
        _say(pytestconfig, _banner[-1])
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def broker_kind(kafka_broker: LocalBroker | None) -> str:
    """``apache``, ``tansu``, ``container`` or ``external``: for the few tests that differ."""
    return kafka_broker.kind if kafka_broker else "external"


@pytest.fixture
async def kafka(kafka_broker: LocalBroker | None) -> KafkaSettings:
    """Kafka settings with a fresh namespace whose registry topics already exist."""
    namespace = fresh_namespace()
    if kafka_broker is None:
        settings = KafkaSettings(topic_namespace=namespace)  # the cluster from KAFKA_*
    else:
        settings = kafka_broker.kafka_settings(topic_namespace=namespace)
    await asyncio.wait_for(ensure_topics(settings, ALL_TOPICS), 30)
    return settings


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _banner:
        terminalreporter.write_line(line)
