"""The dead-letter record builder: bounded, and still says what failed and where."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import certifi
from hypothesis import given, settings
from hypothesis import strategies as st

from riskwatch_common import topics
from riskwatch_common.kafka import DEAD_LETTER_MAX_BYTES, dead_letter_record
from riskwatch_common.logs import register_secret
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.tls import kafka_ssl_context

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def build(value: bytes, key: bytes | None = b"acct") -> bytes:
    return dead_letter_record(
        source_topic="bybit.account-events.v1",
        partition=3,
        offset=41,
        key=key,
        value=value,
        error=ValueError("bad"),
        reason="decode",
        service="test",
        failed_at=NOW,
    )


def test_dead_letter_of_a_700kb_record_of_control_characters_stays_under_the_limit() -> None:
    # Every byte escapes to \u00XX in JSON: six times the raw size before the fix.
    raw = b"\x01" * 700_000
    body = build(raw)
    assert len(body) <= DEAD_LETTER_MAX_BYTES
    record = topics.dead_letter_of(topics.ACCOUNT_EVENTS).decode(body)
    assert record.source == "bybit.account-events.v1[3]@41"
    assert record.value_length == 700_000
    assert record.value_sha256 == hashlib.sha256(raw).hexdigest()
    assert record.value_truncated is True
    assert record.reason == "decode"
    assert record.error_type == "ValueError"
    assert raw.decode().startswith(record.value)


def test_dead_letter_of_a_small_record_keeps_it_whole() -> None:
    record = json.loads(build(b'{"not": "an event"}'))
    assert record["value"] == '{"not": "an event"}'
    assert record["value_truncated"] is False
    assert record["value_length"] == 19


@settings(max_examples=50, deadline=None)
@given(value=st.binary(max_size=300_000), key=st.none() | st.binary(max_size=5000))
def test_dead_letter_of_any_bytes_decodes_and_fits(value: bytes, key: bytes | None) -> None:
    body = build(value, key)
    assert len(body) <= DEAD_LETTER_MAX_BYTES
    record = topics.dead_letter_of(topics.ACCOUNT_EVENTS).decode(body)
    assert record.value_length == len(value)


def test_dead_letter_error_text_carries_no_registered_secret() -> None:
    secret = "sk-dead-letter-secret-123456"
    register_secret(secret)
    body = dead_letter_record(
        source_topic="bybit.account-events.v1",
        partition=None,
        offset=None,
        source="ws frame",
        key=None,
        value=b"{}",
        error=ConnectionError(f"GET https://api/x?token={secret} failed"),
        reason="handle",
        service="test",
        failed_at=NOW,
    )
    assert secret.encode() not in body
    record = topics.dead_letter_of(topics.ACCOUNT_EVENTS).decode(body)
    assert record.source == "ws frame"
    assert "token=*** failed" in record.error


def test_tls_context_honours_the_ca_file_and_is_none_without_tls() -> None:
    assert kafka_ssl_context(KafkaSettings(bootstrap_servers="x:9092")) is None
    tls = kafka_ssl_context(
        KafkaSettings(
            bootstrap_servers="x:9092", security_protocol="SSL", ssl_cafile=certifi.where()
        )
    )
    assert tls is not None
    assert tls.check_hostname
    assert tls.cert_store_stats()["x509_ca"] > 0
