"""The Faust app and its tables: how the processor sits on Kafka.

``build_app`` makes the app (tuned transport, at-least-once, our TLS context);
``declare_tables`` its tables; ``changelog_specs`` the changelog topics we create ourselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from risk_processor import state
from risk_processor.faust_codecs import JsonValue, RawBytes, Utf8Key, faust_type
from risk_processor.settings import RiskProcessorSettings
from risk_processor.tables import SharedTable
from risk_processor.transport import FAUST_LOGGER, TunedApp, transport_class
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
