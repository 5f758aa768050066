"""``python -m risk_processor.repartition``: move to a new partition count on a live cluster.

Kafka only adds partitions, and adding them moves keys: ``murmur2(key) % n`` changes with
``n``. The processor keeps each table key in the partition of its input key, so its
changelogs cannot simply grow: an account's state would stay in its old partition while
its input goes to the new one, and the new owner would start without it (positions,
orders, and the alert lifecycle whose counters make the event ids). So the tables move
to a new app id, each key's latest value written to the partition it belongs to now.

With every service stopped and the old group drained (see docs/deployment.md, "Changing
the partition count"), with ``KAFKA_TOPIC_PARTITIONS`` set to the new count:

1. grows every registry and processor topic to the new count (``--grow-topics``);
2. copies the latest value of every key of each table's changelog from ``--from-app-id``
   to ``--to-app-id`` (created compacted, with the new count), into the key's partition,
   without the outbox entries the alerts topic already has: after the move the processor
   looks for them in the account's *new* alerts partition, would not find them there, and
   would publish them again;
3. commits the new app id's consumer group at the end of every input partition, so the
   new workers go on where the old ones stopped instead of replaying everything.

It refuses to run when the old group has not consumed its inputs to the end (a record
left would be processed by nobody), or when a target changelog already holds records.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.partitioner import DefaultPartitioner

from risk_processor.app import INPUT_TOPICS
from riskwatch_common.kafka import client_kwargs, ensure_topics, partition_counts
from riskwatch_common.settings import KafkaSettings, load_settings
from riskwatch_common.topics import (
    ALERTS,
    ALL_TOPICS,
    INTERNAL_TOPICS,
    CleanupPolicy,
    KeyKind,
    TopicSpec,
)

log = logging.getLogger(__name__)

TABLES = ("positions", "orders", "wallets", "risk", "portfolio", "marks", "tiers", "views")
"""The processor's tables (app.RiskProcessor._declare)."""

# Inputs of the processor's consumer group, whose committed offsets move to the new group.
_GROUP_INPUTS = (*INPUT_TOPICS, *INTERNAL_TOPICS)


def owner_key(table: str, key: str) -> str:
    """The key whose partition a table entry lives in (tables.TableWriter's rule): the
    account or symbol itself; ``portfolio`` for the portfolio table; for ``views`` the
    account (or ``portfolio``) after the ``exposure/`` or ``alerts/`` prefix."""
    if table == "portfolio":
        return "portfolio"
    if table == "views":
        return key.partition("/")[2]
    return key


def partition_of(key: str, partitions: int) -> int:
    """The partition the producer's default partitioner picks for ``key``."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key.encode(), every, every))


def _changelog(kafka: KafkaSettings, app_id: str, table: str) -> str:
    return f"{kafka.topic_namespace}{app_id}-{table}-changelog"


async def grow_topics(kafka: KafkaSettings) -> list[str]:
    """Add partitions to every registry and processor topic that has fewer; the names."""
    ns = kafka.topic_namespace
    names = [s.qualified(ns) for s in ALL_TOPICS]
    counts = await partition_counts(kafka, names)
    wanted = kafka.topic_partitions
    if shrink := {n: c for n, c in counts.items() if c > wanted}:
        raise SystemExit(f"Kafka cannot remove partitions; these have more: {shrink}")
    grow = {n: NewPartitions(total_count=wanted) for n, c in counts.items() if c < wanted}
    if grow:
        admin = AIOKafkaAdminClient(**client_kwargs(kafka), client_id="riskwatch-admin")
        await admin.start()
        try:
            await admin.create_partitions(grow)
        finally:
            await admin.close()
    return sorted(grow)


async def _ends(consumer: AIOKafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    return dict(await consumer.end_offsets(tps)) if tps else {}


async def check_drained(kafka: KafkaSettings, group: str) -> None:
    """Raise unless ``group`` committed every input partition at its end."""
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        behind = []
        # Only the outside inputs: what the internal topics carry (re-evaluate requests,
        # account exposures) the new workers' first timer tick produces again.
        for spec in INPUT_TOPICS:
            topic = spec.qualified(kafka.topic_namespace)
            await consumer._client.force_metadata_update()
            for tp, end in (await _ends(consumer, topic)).items():
                committed = await consumer.committed(tp) or 0
                if committed < end:
                    behind.append(f"{tp.topic}[{tp.partition}] {committed}/{end}")
        if behind:
            raise SystemExit(f"group {group} has not consumed to the end: {behind}")
    finally:
        await consumer.stop()


async def read_latest(
    kafka: KafkaSettings, topic: str, *, by_offset: bool = False
) -> dict[bytes, bytes]:
    """The latest value of every key of ``topic`` (tombstones remove the key); with
    ``by_offset`` every record, keyed by its partition and offset."""
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), enable_auto_commit=False)
    await consumer.start()
    latest: dict[bytes, bytes] = {}
    try:
        await consumer._client.force_metadata_update()
        ends = {tp: end for tp, end in (await _ends(consumer, topic)).items() if end > 0}
        if not ends:
            return latest
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if by_offset and r.value is not None:
                        latest[b"%d@%d" % (r.partition, r.offset)] = r.value
                        continue
                    if r.key is None:
                        continue
                    if r.value is None:
                        latest.pop(r.key, None)
                    else:
                        latest[r.key] = r.value
        return latest
    finally:
        await consumer.stop()


def settled(value: bytes, published: set[str]) -> bytes:
    """A risk book's changelog value (account ``risk`` table, or the portfolio's under
    ``risk``) without outbox entries already on the alerts topic; other values as given."""
    doc: Any = orjson.loads(value)
    book: Any = doc.get("risk", doc) if isinstance(doc, dict) else None
    outbox = book.get("outbox") if isinstance(book, dict) else None
    if not isinstance(outbox, dict) or not (published & outbox.keys()):
        return value
    book["outbox"] = {k: v for k, v in outbox.items() if k not in published}
    return orjson.dumps(doc)


async def published_ids(kafka: KafkaSettings) -> set[str]:
    """Every event id on the alerts topic."""
    ids: set[str] = set()
    for body in (
        await read_latest(kafka, ALERTS.qualified(kafka.topic_namespace), by_offset=True)
    ).values():
        event_id = orjson.loads(body).get("event_id")
        if isinstance(event_id, str):
            ids.add(event_id)
    return ids


async def copy_tables(kafka: KafkaSettings, from_app: str, to_app: str) -> dict[str, int]:
    """Copy each table's latest values into the new app id's changelogs; keys per table."""
    ns = kafka.topic_namespace
    targets = [
        TopicSpec(
            name=_changelog(kafka, to_app, t).removeprefix(ns),
            value=bytes,
            key=KeyKind.SOURCE_KEY,
            description=f"Faust changelog of the {t} table.",
            cleanup=CleanupPolicy.COMPACT,
        )
        for t in TABLES
    ]
    await ensure_topics(kafka, targets)
    for spec in targets:
        if await read_latest(kafka, spec.qualified(ns)):
            raise SystemExit(f"{spec.qualified(ns)} already holds records; not copying over it")
    published = await published_ids(kafka)
    producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all")
    await producer.start()
    copied: dict[str, int] = {}
    try:
        for table in TABLES:
            latest = await read_latest(kafka, _changelog(kafka, from_app, table))
            target = _changelog(kafka, to_app, table)
            for key, value in latest.items():
                partition = partition_of(owner_key(table, key.decode()), kafka.topic_partitions)
                if table in ("risk", "portfolio"):
                    value = settled(value, published)
                await producer.send(target, value, key=key, partition=partition)
            copied[table] = len(latest)
        await producer.flush()
    finally:
        await producer.stop()
    return copied


async def commit_at_end(kafka: KafkaSettings, group: str) -> None:
    """Commit ``group`` at the end of every input partition (the new group's start)."""
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        offsets: dict[TopicPartition, int] = {}
        for spec in _GROUP_INPUTS:
            offsets.update(await _ends(consumer, spec.qualified(kafka.topic_namespace)))
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def repartition(
    kafka: KafkaSettings, *, from_app: str, to_app: str, grow: bool = True
) -> dict[str, int]:
    """Steps 1-3 of the module doc; returns the keys copied per table."""
    if from_app == to_app:
        raise SystemExit("--to-app-id must differ from --from-app-id")
    ns = kafka.topic_namespace
    await check_drained(kafka, ns + from_app)
    if grow:
        grown = await grow_topics(kafka)
        log.info("topics grown", extra={"topics": grown, "partitions": kafka.topic_partitions})
    copied = await copy_tables(kafka, from_app, to_app)
    await commit_at_end(kafka, ns + to_app)
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m risk_processor.repartition")
    parser.add_argument("--from-app-id", default="risk-processor")
    parser.add_argument("--to-app-id", required=True, help="e.g. risk-processor-p24")
    parser.add_argument(
        "--no-grow-topics", action="store_true", help="the topics already have the new count"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kafka = load_settings(KafkaSettings)
    copied = asyncio.run(
        repartition(
            kafka, from_app=args.from_app_id, to_app=args.to_app_id, grow=not args.no_grow_topics
        )
    )
    print(f"copied to {args.to_app_id} ({kafka.topic_partitions} partitions): {copied}")
    print(f"now start the processor with RISK_PROCESSOR_APP_ID={args.to_app_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
