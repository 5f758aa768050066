"""Outsiders can subscribe: a Kafka client nobody here wrote reads our risk topics and the
records validate against the committed JSON Schemas."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jsonschema
import orjson
import pytest

from riskwatch_common import contracts as c
from riskwatch_common import topics
from riskwatch_common.kafka import Producer
from riskwatch_common.settings import KafkaSettings

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def librdkafka_dir(tmp: Path) -> Path:
    """A directory holding a current librdkafka for kcat, needed on Tansu only.

    Debian's kcat links librdkafka 2.0.2, which reads Apache Kafka as it is but fails to
    parse Tansu's ApiVersions v3 response ("Read underflow"); there the same kcat binary
    works with the ABI-compatible librdkafka that the confluent-kafka wheel bundles.
    """
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    (lib,) = libs.glob("librdkafka-*.so.1")
    (tmp / "librdkafka.so.1").symlink_to(lib)
    return tmp


def kcat_read(
    kafka: KafkaSettings, spec: topics.TopicSpec, count: int, libdir: Path | None
) -> list[bytes]:
    out = subprocess.run(
        [
            "kcat",
            "-C",
            "-b",
            kafka.bootstrap_servers,
            "-t",
            spec.qualified(kafka.topic_namespace),
            "-o",
            "beginning",
            "-c",
            str(count),
            "-e",
            "-q",
            "-f",
            "%k\t%s\n",
        ],
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, **({"LD_LIBRARY_PATH": str(libdir)} if libdir else {})},
    )
    return [line for line in out.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (make kcat)")
async def test_kcat_reads_risk_topics_and_records_match_the_committed_schemas(
    kafka: KafkaSettings, tmp_path: Path, broker_kind: str
) -> None:
    libdir = librdkafka_dir(tmp_path) if broker_kind == "tansu" else None
    position = c.PositionExposure(
        account="main",
        symbol="BTCUSDT",
        side=c.Side.BUY,
        size=Decimal("0.5"),
        notional=Decimal("35000.0"),
        leverage=Decimal(10),
        tier_id=1,
        effective_value=Decimal("33750.00"),
        liquidation_distance_pct=Decimal("9.82"),
    )
    snapshot = c.ExposureSnapshotted(
        event_id="e-1",
        occurred_at=NOW,
        produced_at=NOW,
        source="test",
        correlation_id="f-1",
        scope=c.ExposureScope.ACCOUNT,
        account="main",
        total_long=Decimal("35000.0"),
        total_short=Decimal(0),
        net=Decimal("35000.0"),
        gross=Decimal("35000.0"),
        unrealised_pnl=Decimal("1250"),
        risk_level=c.RiskLevel.MEDIUM,
        riskiest_positions=(position,),
        positions=(position,),
    )
    alert = c.RiskAlertChanged(
        event_id="a-1",
        occurred_at=NOW,
        produced_at=NOW,
        source="test",
        correlation_id="f-1",
        alert_id="main/net_exposure/account",
        transition=c.AlertTransition.RAISED,
        account="main",
        rule="net_exposure_usd",
        subject="account",
        severity=c.Severity.WARNING,
        reason="net exposure 35,000 USD above 10,000",
        numbers={"net": Decimal("35000.0")},
    )
    producer = Producer(kafka, service="test")
    await producer.start()
    try:
        await producer.send_and_wait(topics.EXPOSURES, "main", snapshot)
        await producer.send_and_wait(topics.ALERTS, "main", alert)
    finally:
        await producer.stop()

    for spec, model in ((topics.EXPOSURES, snapshot), (topics.ALERTS, alert)):
        schema = orjson.loads((SCHEMAS / f"{type(model).__name__}.json").read_bytes())
        (line,) = kcat_read(kafka, spec, 1, libdir)
        key, value = line.split(b"\t", 1)
        assert key == b"main"
        doc = orjson.loads(value)
        jsonschema.validate(doc, schema)
        assert type(model).model_validate(doc) == model
