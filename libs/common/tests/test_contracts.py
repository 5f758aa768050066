from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from riskwatch_common import contracts as c
from riskwatch_common import topics
from riskwatch_common.schemas import drifted

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_committed_json_schemas_match_the_contracts() -> None:
    assert drifted(REPO / "schemas") == [], "run `make schemas` and commit"


def test_amounts_are_decimal_strings_on_the_wire_and_round_trip_exactly() -> None:
    event = c.PositionUpdated(
        event_id="e1",
        occurred_at=NOW,
        produced_at=NOW,
        source="t",
        correlation_id="x",
        account="main",
        symbol="BTCUSDT",
        position_idx=0,
        side=c.Side.BUY,
        size=Decimal("0.5"),
        entry_price=Decimal("67500.10"),
        seq=7,
        updated_at=NOW,
    )
    raw = topics.encode(event)
    doc = orjson.loads(raw)
    assert doc["entry_price"] == "67500.10"
    assert doc["size"] == "0.5"
    back = topics.ACCOUNT_EVENTS.decode(raw)
    assert back == event


def test_account_topic_decodes_each_member_of_the_union_by_event_type() -> None:
    wallet = c.WalletUpdated(
        event_id="w",
        occurred_at=NOW,
        produced_at=NOW,
        source="t",
        correlation_id="x",
        account="main",
        total_equity=Decimal(1),
        total_wallet_balance=Decimal(1),
        total_margin_balance=Decimal(1),
    )
    assert isinstance(topics.ACCOUNT_EVENTS.decode(topics.encode(wallet)), c.WalletUpdated)


def test_consumers_ignore_unknown_fields_from_newer_producers() -> None:
    doc = orjson.loads(
        topics.encode(
            c.MarkPriceUpdated(
                event_id="m",
                occurred_at=NOW,
                produced_at=NOW,
                source="t",
                correlation_id="x",
                symbol="ETHUSDT",
                mark_price=Decimal("3500"),
            )
        )
    )
    doc["added_in_a_later_minor_change"] = 1
    assert topics.MARK_PRICES.decode(orjson.dumps(doc)).symbol == "ETHUSDT"


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError):
        c.MarkPriceUpdated(
            event_id="m",
            occurred_at=datetime(2026, 1, 1),
            produced_at=NOW,
            source="t",
            correlation_id="x",
            symbol="ETHUSDT",
            mark_price=Decimal("1"),
        )


def test_derived_event_ids_are_stable_for_the_same_identity() -> None:
    assert c.derived_event_id("main", "BTCUSDT", 0, 5) == c.derived_event_id(
        "main", "BTCUSDT", 0, 5
    )
    assert c.derived_event_id("main", "BTCUSDT", 0, 5) != c.derived_event_id(
        "main", "BTCUSDT", 0, 6
    )


def test_every_data_topic_has_a_registered_dead_letter_topic() -> None:
    for spec in topics.DATA_TOPICS:
        assert topics.dead_letter_of(spec).value is c.RecordDeadLettered
    names = [t.name for t in topics.ALL_TOPICS]
    assert len(names) == len(set(names))
    assert all(n.endswith(".v1") for n in names)


def test_subscriber_guide_documents_every_registered_topic() -> None:
    guide = (REPO / "docs" / "topics.md").read_text()
    for spec in topics.DATA_TOPICS:
        assert f"`{spec.name}`" in guide, spec.name
