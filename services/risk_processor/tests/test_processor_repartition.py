"""Growing the partition count of a live deployment keeps every account's state."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from processor_testkit import mark, position, publish, read_models, running, settings_for
from risk_processor.app import RiskProcessor
from risk_processor.repartition import owner_key, partition_of, repartition, settled
from riskwatch_common.contracts import RiskAlertChanged, Side
from riskwatch_common.kafka import ensure_topics
from riskwatch_common.settings import ConfigError, KafkaSettings
from riskwatch_common.testkit import wait_until
from riskwatch_common.topics import ALERTS, ALL_TOPICS, EXPOSURES

pytestmark = pytest.mark.integration

ACCOUNTS = [f"r{i:02d}" for i in range(12)]


def test_a_moved_risk_book_keeps_only_outbox_entries_not_yet_on_the_alerts_topic() -> None:
    book = {"alerts": {}, "outbox": {"sent": "{}", "unsent": "{}"}}
    moved = orjson.loads(settled(orjson.dumps(book), {"sent", "other"}))
    assert moved["outbox"] == {"unsent": "{}"}
    portfolio = orjson.loads(settled(orjson.dumps({"risk": book}), {"unsent"}))
    assert portfolio["risk"]["outbox"] == {"sent": "{}"}
    summary = orjson.dumps({"summary": {"account": "a"}})
    assert settled(summary, {"sent"}) == summary


def test_views_and_portfolio_entries_live_in_their_owners_partition() -> None:
    assert owner_key("views", "exposure/acc01") == "acc01"
    assert owner_key("views", "alerts/portfolio") == "portfolio"
    assert owner_key("portfolio", "account:acc01") == "portfolio"
    assert owner_key("risk", "acc01") == "acc01"
    # murmur2, as the producers that key the inputs pick it
    assert partition_of("acc01", 12) == partition_of("acc01", 12)
    assert {partition_of(a, 12) for a in ACCOUNTS} != {partition_of(a, 4) for a in ACCOUNTS}


async def _alerts(kafka: KafkaSettings) -> list[RiskAlertChanged]:
    return await read_models(kafka, ALERTS, timeout=0.5)


async def test_growing_4_to_12_partitions_keeps_state_and_publishes_no_alert_again(
    kafka: KafkaSettings, tmp_path: Path, broker_kind: str
) -> None:
    if broker_kind == "tansu":
        pytest.skip("Tansu has no CreatePartitions: its topics cannot grow")
    old = kafka.model_copy(
        update={"topic_namespace": kafka.topic_namespace + "p4.", "topic_partitions": 4}
    )
    new = old.model_copy(update={"topic_partitions": 12})
    await ensure_topics(old, ALL_TOPICS)
    # the alerts are net_exposure_usd, whose USD limit is opt-in
    limit = {"net_exposure_limit_usd": Decimal(10000)}
    async with running(old, tmp_path / "old", **limit):
        await publish(old, [mark("ETHUSDT", 4000)])
        await publish(old, [position(a, "ETHUSDT", Side.BUY, 5, 4000, 5) for a in ACCOUNTS])

        async def raised() -> bool:
            return {a.account for a in await _alerts(old)} >= {*ACCOUNTS, "portfolio"}

        await wait_until(raised, timeout=30, message="alerts on 4 partitions")
    before = await _alerts(old)

    # The old tables do not fit 12 partitions: the processor says so instead of starting.
    with pytest.raises(ConfigError, match="KAFKA_TOPIC_PARTITIONS is 12"):
        await asyncio.wait_for(RiskProcessor(settings_for(new, tmp_path / "x")).run(), 60)

    copied = await repartition(new, from_app="risk-processor", to_app="risk-processor-p12")
    assert copied["positions"] == len(ACCOUNTS)
    assert copied["risk"] == len(ACCOUNTS)

    async with running(new, tmp_path / "new", app_id="risk-processor-p12", **limit) as proc:
        for a in ACCOUNTS:
            assert proc.positions.get(a)["ETHUSDT|0"].position.size == 5
            assert proc.risk.get(a).alerts, a

        # Its first tick re-evaluates every account; the alerts stay as they were.
        async def republished() -> bool:
            seen = [s.account for s in await read_models(new, EXPOSURES, timeout=0.5)]
            return all(seen.count(a) >= 2 for a in ACCOUNTS)

        await wait_until(republished, timeout=30, message="accounts evaluated again")
        # An account's next update lands in its new partition, next to its state.
        await publish(new, [position(ACCOUNTS[0], "ETHUSDT", Side.BUY, 6, 4000, 5, seq=2)])

        async def grown() -> bool:
            mine = [s for s in await read_models(new, EXPOSURES) if s.account == ACCOUNTS[0]]
            return mine[-1].net == 24_000

        await wait_until(grown, timeout=30, message="an update after the move")
    # Nothing raised again, nothing new: the alert lifecycle moved with the tables.
    assert sorted(a.event_id for a in await _alerts(new)) == sorted(a.event_id for a in before)
