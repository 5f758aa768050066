from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from riskwatch_cli.demo import demo_env, trace
from riskwatch_common.broker import ApacheKafkaBroker, LocalBroker, TansuBroker

STATE_VARS = (
    "BYBIT_SIM_FRAMES_LOG",
    "NOTIFIER_ALERTS_FILE",
    "NOTIFIER_DELIVERY_LOG",
    "RISK_PROCESSOR_DATA_DIR",
)


def test_demo_keeps_every_state_file_in_its_own_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State surviving from an earlier run would dedup this run's alerts (same event ids
    on a fresh broker), so the demo must not share any of it."""
    for var in STATE_VARS:
        monkeypatch.delenv(var, raising=False)
    env = demo_env(tmp_path, ApacheKafkaBroker(1).kafka_settings())
    for var in STATE_VARS:
        assert Path(env[var]).is_relative_to(tmp_path), var
    assert env["SIM_MAIN_API_KEY"] == "sim-main-key"


@pytest.mark.parametrize(
    ("broker", "idempotent", "fetch_wait"),
    [(ApacheKafkaBroker(1), "true", "500"), (TansuBroker(1), "false", "10")],
)
def test_demo_services_get_the_client_settings_of_the_broker_it_started(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    broker: LocalBroker,
    idempotent: str,
    fetch_wait: str,
) -> None:
    for var in ("KAFKA_ENABLE_IDEMPOTENCE", "KAFKA_FETCH_MAX_WAIT_MS", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(var, raising=False)
    env = demo_env(tmp_path, broker.kafka_settings())
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    assert env["KAFKA_ENABLE_IDEMPOTENCE"] == idempotent
    assert env["KAFKA_FETCH_MAX_WAIT_MS"] == fetch_wait


def test_trace_links_a_delivered_alert_to_the_simulator_frame_with_its_correlation_id(
    tmp_path: Path,
) -> None:
    frames = tmp_path / "frames.jsonl"
    frames.write_bytes(
        b"\n".join(
            orjson.dumps({"id": i, "account": "main", "topic": "position"})
            for i in ("run-1", "run-2")
        )
    )
    alerts = [
        {"kind": "analysis", "correlation_id": "run-1"},
        {"kind": "alert", "correlation_id": "rest-snapshot"},
        {"kind": "alert", "correlation_id": "run-2", "alert_id": "a"},
    ]
    found = trace(alerts, frames)
    assert found is not None
    assert found["alert"]["alert_id"] == "a"
    assert found["frame"]["id"] == "run-2"
    assert trace(alerts[:2], frames) is None
