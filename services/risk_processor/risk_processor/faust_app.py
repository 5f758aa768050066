"""The Faust app and its tables: how the processor sits on Kafka.

``build_app`` makes the app (tuned transport, at-least-once, our TLS context);
``declare_tables`` its tables; ``changelog_specs`` the changelog topics we create ourselves;
``check_partitions`` the start-up check of every topic's partition count;
``consumer_state`` the consumer's offsets and flow for the task dump; ``abandon_unacked``
what a failed worker does before Faust's stop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import faust

from risk_processor import state
from risk_processor.faust_codecs import JsonValue, RawBytes, Utf8Key, faust_type
from risk_processor.settings import RiskProcessorSettings
from risk_processor.tables import SharedTable
from risk_processor.transport import FAUST_LOGGER, TunedApp, transport_class
from riskwatch_common.kafka import partition_counts
from riskwatch_common.settings import ConfigError, KafkaSettings
from riskwatch_common.tls import kafka_ssl_context
from riskwatch_common.topics import CleanupPolicy, KeyKind, TopicSpec

SERVICE = "risk-processor"


def build_app(settings: RiskProcessorSettings) -> Any:
    k = settings.kafka
    cls = type(
        "RiskProcessorApp",
        (TunedApp,),
        {
            "__module__": FAUST_LOGGER,
            "transport_cls": transport_class(
                fetch_max_wait_ms=k.fetch_max_wait_ms,
                enable_idempotence=k.enable_idempotence,
                batch_drain=settings.batch_drain,
            ),
        },
    )
    options: dict[str, Any] = {}
    tls = kafka_ssl_context(k)
    if k.sasl_mechanism:
        options["broker_credentials"] = faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            mechanism=k.sasl_mechanism,
            ssl_context=tls,
        )
    elif tls is not None:
        options["broker_credentials"] = faust.SSLCredentials(tls)
    session_s = k.session_timeout_ms / 1000
    return cls(
        k.topic_namespace + settings.app_id,
        broker=[f"kafka://{host}" for host in k.bootstrap_servers.split(",")],
        store=settings.store,
        datadir=str(settings.data_dir),
        autodiscover=False,
        # The topics' partition count, so every table is co-partitioned with the
        # topics keyed like it (Faust defaults to 8 and would refuse).
        topic_partitions=k.topic_partitions,
        GlobalTable=SharedTable,
        topic_replication_factor=k.replication_factor,
        # The leader topic is only needed for on_leader timers; we have none.
        topic_disable_leader=True,
        # Apache Kafka's minimum session (group.min.session.timeout.ms) is 6 s.
        broker_session_timeout=session_s,
        broker_heartbeat_interval=k.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=session_s,
        table_standby_replicas=settings.table_standby_replicas,
        # Faust's exactly_once duplicates on rebalance and sends outside the
        # transaction; our outputs carry deterministic event ids instead
        # (docs/processing.md, "Restart").
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_linger=k.linger_ms / 1000,
        producer_max_batch_size=256 * 1024,
        producer_acks=-1,
        broker_client_id=f"{SERVICE}-{settings.instance}",
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        **options,
    )


@dataclass(frozen=True, slots=True)
class Tables:
    positions: Any
    orders: Any
    wallets: Any
    risk: Any
    # Keys 'account:<name>' and 'risk', all in the partition of key 'portfolio', so the
    # worker that owns the portfolio recovers all of it.
    portfolio: Any
    marks: Any
    tiers: Any
    # The query API's documents (api.exposure_key / api.alerts_key), read by every worker.
    views: Any


def declare_tables(app: Any, partitions: int) -> Tables:
    key = faust_type(Utf8Key())
    # All writes go through TableWriter with an explicit partition. A global table is
    # written by the owner of each partition and read by every worker: Faust's
    # multi-writer mode for it is use_partitioner, and every changelog record must
    # apply as it arrives (tables.SharedTable).
    shared: dict[str, Any] = {"use_partitioner": True, "recovery_buffer_size": 1}

    def table(name: str, to_json: Any, from_json: Any, *, glob: bool = False) -> Any:
        factory = app.GlobalTable if glob else app.Table
        return factory(
            name,
            default=None,
            partitions=partitions,
            key_type=key,
            value_type=faust_type(JsonValue(to_json, from_json)),
            **(shared if glob else {}),
        )

    return Tables(
        positions=table("positions", state.positions_to_json, state.positions_from_json),
        orders=table("orders", state.orders_to_json, state.orders_from_json),
        wallets=table("wallets", state.wallet_to_json, state.wallet_from_json),
        risk=table("risk", state.risk_to_json, state.risk_from_json),
        portfolio=table(
            "portfolio", state.portfolio_value_to_json, state.portfolio_value_from_json
        ),
        marks=table("marks", state.mark_to_json, state.mark_from_json, glob=True),
        tiers=table("tiers", state.tiers_to_json, state.tiers_from_json, glob=True),
        views=app.GlobalTable(
            "views",
            default=None,
            partitions=partitions,
            key_type=key,
            value_type=faust_type(RawBytes()),
            **shared,
        ),
    )


def changelog_specs(app: Any, namespace: str) -> list[TopicSpec]:
    """The tables' changelog topics, which we create rather than Faust."""
    keys = {
        "marks": KeyKind.SYMBOL,
        "tiers": KeyKind.SYMBOL,
        "portfolio": KeyKind.ACCOUNT_OR_PORTFOLIO,
    }
    return [
        TopicSpec(
            name=t.changelog_topic.get_topic_name().removeprefix(namespace),
            value=bytes,
            key=keys.get(t.name, KeyKind.ACCOUNT),
            description=f"Faust changelog of the {t.name} table.",
            cleanup=CleanupPolicy.COMPACT,
        )
        for t in app.tables.values()
    ]


async def check_partitions(kafka: KafkaSettings, names: list[str]) -> None:
    """Wait until the broker's metadata lists every topic we use, and refuse to start
    when one has another partition count than ``KAFKA_TOPIC_PARTITIONS``: an account's
    input, tables and alerts would be read from different partitions
    (docs/deployment.md, "Changing the partition count").

    Waiting matters: a GlobalTable changelog missing from the group leader's metadata
    makes Faust's assignor raise (KeyError in its global-table standby assignment), and
    the worker then never gets an assignment."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + kafka.connect_timeout_s
    while len(counts := await partition_counts(kafka, names)) < len(names):
        if loop.time() > deadline:
            missing = sorted(set(names) - set(counts))
            raise RuntimeError(f"topics not in the broker's metadata: {missing}")
        await asyncio.sleep(0.1)
    wanted = kafka.topic_partitions
    wrong = {name: n for name, n in sorted(counts.items()) if n != wanted}
    if wrong:
        raise ConfigError(
            f"KAFKA_TOPIC_PARTITIONS is {wanted} but these topics have other partition "
            f"counts: {wrong}; see docs/deployment.md, 'Changing the partition count'"
        )


def consumer_state(app: Any, records_handled: int) -> dict[str, Any]:
    """Offsets and flow of the Faust consumer per input partition, for the task dump
    (``kill -USR1``): tells a worker that never asks for records from one whose
    records never arrive."""
    consumer = app.consumer
    tps = sorted(
        (tp for tp in consumer.assignment() if not tp.topic.endswith("-changelog")),
        key=lambda tp: (tp.topic, tp.partition),
    )
    client = getattr(getattr(consumer, "_thread", None), "_consumer", None)
    assignment = client._subscription.subscription.assignment if client else None

    def fetch_state(tp: Any) -> Any:
        if assignment is None:
            return None
        st = assignment.state_value(tp)
        if st is None:
            return "unassigned in aiokafka"
        buffered = client._fetcher._records.get(tp) if client else None
        return {
            "position": st._position,
            "paused": st.paused,
            "reset": st.awaiting_reset,
            "buffered": buffered is not None,
        }

    active = consumer._active_partitions
    return {
        "generation": app.consumer_generation_id,
        "active": None if active is None else len(active),
        "flow_active": consumer.flow_active,
        "rebalancing": app.rebalancing,
        "recovered": app.tables.recovery.completed.is_set(),
        "paused": sorted(str(tp) for tp in consumer._paused_partitions),
        "partitions": {
            f"{tp.topic}[{tp.partition}]": {
                "read": consumer._read_offset.get(tp),
                "committed": consumer._committed_offset.get(tp),
                "acked": len(consumer._acked.get(tp, ())),
                "highwater": consumer.highwater(tp),
                "faust_active": active is None or tp in active,
                "aiokafka": fetch_state(tp),
            }
            for tp in tps
        },
        "records_handled": records_handled,
    }


def abandon_unacked(app: Any) -> None:
    """Let a failed worker stop without the records it will never handle.

    Faust's graceful stop waits (``Consumer.wait_empty``) until every record handed to an
    agent is acked; the batch whose handler failed never will be, so the stop hung for
    ever. Forgetting them acks nothing: offsets are committed only up to acked records,
    so they are read again after the restart (at-least-once).
    """
    unacked = getattr(app.consumer, "_unacked_messages", None)
    if unacked:
        unacked.clear()
