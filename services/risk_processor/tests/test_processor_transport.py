"""Our Faust transport: the fetch wait, producer idempotence, the mirrored delivery loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from processor_testkit import position, publish, settings_for
from risk_processor.app import RiskProcessor
from risk_processor.transport import (
    FAUST_DRAIN_FINGERPRINT,
    FAUST_GETMANY_FINGERPRINT,
    drain_fingerprint,
    getmany_fingerprint,
)
from riskwatch_common.contracts import Side
from riskwatch_common.kafka import client_kwargs
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import wait_until
from riskwatch_common.topics import ACCOUNT_EVENTS


def test_faust_delivery_loop_is_still_the_one_batch_drain_mirrors() -> None:
    # Fails after a Faust upgrade that changed Consumer._drain_messages: compare the new
    # upstream loop with transport._BatchDrainConsumer, port any fix, update the digest.
    assert drain_fingerprint() == FAUST_DRAIN_FINGERPRINT


def test_faust_getmany_is_still_the_one_our_rewinding_getmany_mirrors() -> None:
    # Fails after a Faust upgrade that changed Consumer.getmany: compare it with
    # transport._TunedConsumer.getmany, port any change, update the digest.
    assert getmany_fingerprint() == FAUST_GETMANY_FINGERPRINT


async def test_worker_consumer_uses_the_configured_fetch_wait_not_fausts_1500_ms(
    tmp_path: Path,
) -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9", fetch_max_wait_ms=25)
    proc = RiskProcessor(settings_for(kafka, tmp_path))
    thread = proc.app.consumer._thread
    consumer = thread._create_worker_consumer(proc.app.transport)
    assert consumer._fetch_max_wait_ms == 25
    # Faust's own settings still reach the consumer (we only change the wait).
    assert consumer._group_id == proc.app.conf.id


async def test_producer_idempotence_follows_kafka_settings(tmp_path: Path) -> None:
    on = RiskProcessor(settings_for(KafkaSettings(bootstrap_servers="127.0.0.1:9"), tmp_path))
    assert on.app.producer._settings_extra() == {"acks": "all", "enable_idempotence": True}
    off_settings = KafkaSettings(bootstrap_servers="127.0.0.1:9", enable_idempotence=False)
    off = RiskProcessor(settings_for(off_settings, tmp_path))
    assert off.app.producer._settings_extra() == {}


async def test_tansu_profile_settings(tmp_path: Path) -> None:
    proc = RiskProcessor(settings_for(KafkaSettings(bootstrap_servers="127.0.0.1:9"), tmp_path))
    conf = proc.app.conf
    assert conf.broker_session_timeout == 6.0
    assert conf.broker_heartbeat_interval == 1.0
    assert conf.broker_rebalance_timeout == 6.0
    assert conf.topic_partitions == 12
    assert conf.table_standby_replicas == 0
    assert conf.processing_guarantee.value == "at_least_once"
    assert conf.store.scheme == "memory"
    assert conf.web_enabled is False
    custom = KafkaSettings(bootstrap_servers="127.0.0.1:9", topic_partitions=24)
    assert RiskProcessor(settings_for(custom, tmp_path)).app.conf.topic_partitions == 24


@pytest.mark.integration
async def test_seek_rewinds_input_partitions_never_committed_and_keeps_committed_ones(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    # Faust drops the rest of a fetched batch when a rebalance stops the flow and relies on
    # the seek to committed offsets that follows; aiokafka does not move a partition that
    # has no committed offset, so the dropped records were lost (an idle restarted worker).
    proc = RiskProcessor(settings_for(kafka, tmp_path))
    await proc.app.topics._update_indices()  # what subscribing does: Faust acks these topics
    topic = proc.names[ACCOUNT_EVENTS.name]
    for i in range(8):  # one record per batch: Tansu's end offset is right only for those
        await publish(kafka, [position(f"seek{i}", "ETHUSDT", Side.BUY, 1, 4000, 5)])
    tps = [TopicPartition(topic, p) for p in range(kafka.topic_partitions)]
    client = AIOKafkaConsumer(
        topic, **client_kwargs(kafka), group_id=f"{kafka.topic_namespace}seek",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await client.start()
    try:
        await wait_until(lambda: set(client.assignment()) == set(tps), message="assigned")
        ends = await client.end_offsets(tps)
        filled = [tp for tp in tps if ends[tp] > 1]
        assert len(filled) >= 2, ends
        kept, rewound = filled[0], filled[1:]
        await client.commit({kept: 1})
        for tp in tps:
            client.seek(tp, ends[tp])  # read to the end, as a dropped batch leaves it
        thread = proc.app.consumer._thread
        thread._consumer = client
        committed = await thread._seek_to_committed_or_beginning()
        assert committed[kept] == 1
        assert await client.position(kept) == 1
        for tp in rewound:
            assert committed[tp] is None
            assert await client.position(tp) == 0, tp
    finally:
        await client.stop()
