"""The local-broker switch, the client settings each broker brings, and the container path."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from riskwatch_common.broker import (
    KAFKA_IMAGE,
    KAFKA_VERSION,
    ApacheKafkaBroker,
    BrokerError,
    ContainerBroker,
    TansuBroker,
    docker_missing,
    free_port,
    kraft_properties,
    local_broker,
    metadata_brokers,
    selected_kind,
)


def _fake_java(tmp_path: Path, version: str) -> Path:
    """A ``java`` on PATH that reports ``version`` the way OpenJDK does (on stderr)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-04-15' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.fixture
def no_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("JAVA_HOME", raising=False)


@pytest.mark.usefixtures("no_java")
def test_without_java_the_default_is_tansu_and_says_why() -> None:
    kind, why = selected_kind({})
    assert kind == "tansu"
    assert why is not None
    assert "no java" in why
    assert "Tansu" in why


@pytest.mark.usefixtures("no_java")
def test_asking_for_apache_without_java_fails_instead_of_falling_back() -> None:
    with pytest.raises(BrokerError, match="RISKWATCH_BROKER=apache but no java"):
        selected_kind({"RISKWATCH_BROKER": "apache"})


def test_java_older_than_17_is_not_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(_fake_java(tmp_path, "11.0.2")))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    kind, why = selected_kind({})
    assert kind == "tansu"
    assert why is not None
    assert "Java 11" in why


def test_java_17_selects_apache_kafka_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _fake_java(tmp_path, "17.0.15")
    mvn = bin_dir / "mvn"
    mvn.write_text("#!/bin/sh\n")
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert selected_kind({}) == ("apache", None)


def test_an_unknown_broker_name_is_rejected_naming_the_choices() -> None:
    with pytest.raises(BrokerError, match="apache, tansu, container"):
        selected_kind({"RISKWATCH_BROKER": "redpanda"})


def test_explicit_tansu_needs_no_java(no_java: None) -> None:
    assert selected_kind({"RISKWATCH_BROKER": "tansu"}) == ("tansu", None)
    assert isinstance(local_broker("tansu"), TansuBroker)


def test_each_broker_brings_the_client_settings_it_needs() -> None:
    apache = ApacheKafkaBroker(1).kafka_settings(topic_namespace="x.")
    tansu = TansuBroker(1).kafka_settings(topic_namespace="x.")
    assert apache.enable_idempotence is True
    assert apache.fetch_max_wait_ms == 500
    assert tansu.enable_idempotence is False
    assert tansu.fetch_max_wait_ms == 10
    assert apache.bootstrap_servers == tansu.bootstrap_servers == "127.0.0.1:1"
    assert apache.topic_namespace == "x."


def test_settings_as_env_load_back_to_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from riskwatch_common.settings import KafkaSettings

    original = TansuBroker(1).kafka_settings(topic_namespace="ns.", sasl_password="s3cret")
    for name, value in original.as_env().items():
        monkeypatch.setenv(name, value)
    assert KafkaSettings() == original


def test_kraft_config_is_single_node_on_loopback(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1)
        for line in kraft_properties(tmp_path, 19092, 19093).splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"].startswith(str(tmp_path))


def test_metadata_check_reports_nothing_where_no_broker_listens() -> None:
    assert metadata_brokers("127.0.0.1", free_port(), timeout=0.5) == 0


def test_the_container_broker_runs_the_version_the_suite_and_compose_use() -> None:
    assert f"apache/kafka:{KAFKA_VERSION}" == KAFKA_IMAGE
    assert ContainerBroker().image == KAFKA_IMAGE


@pytest.mark.integration
def test_container_broker_starts_and_answers_metadata() -> None:
    missing = docker_missing()
    if missing:
        pytest.skip(f"RISKWATCH_BROKER=container needs Docker: {missing}")
    broker = ContainerBroker()
    try:
        broker.start()
        assert metadata_brokers(broker.host, broker.port) >= 1
    finally:
        broker.stop()


@pytest.mark.integration
def test_apache_broker_restarts_on_its_data_and_stops_cleanly(broker_kind: str) -> None:
    if broker_kind != "apache":
        pytest.skip(f"the suite runs on {broker_kind}; this checks the Apache Kafka broker")
    broker = ApacheKafkaBroker()
    try:
        broker.start()
        assert broker.started_in_s is not None
        assert "Apache Kafka" in broker.banner()
        meta = broker.data_dir / "data" / "meta.properties"
        cluster = meta.read_text()
        broker.restart(down_s=0.5)
        assert metadata_brokers(broker.host, broker.port) >= 1
        assert meta.read_text() == cluster, "restart reformatted the data dir"
    finally:
        broker.stop()
    assert metadata_brokers(broker.host, broker.port, timeout=0.5) == 0
    assert not broker.data_dir.exists(), "a run's own data dir is removed at stop"
