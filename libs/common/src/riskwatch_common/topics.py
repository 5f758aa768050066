"""The topic registry: every topic riskwatch uses, declared once.

A topic's name carries its schema version (``.v1``); a breaking change gets a new topic and
both run side by side while consumers move. Keys are the entity whose order matters: the
account for account data, the symbol for market data, never a constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, TypeAdapter

from riskwatch_common import contracts as c


class KeyKind(StrEnum):
    ACCOUNT = "account"
    SYMBOL = "symbol"
    ACCOUNT_OR_PORTFOLIO = "account, or 'portfolio' for the aggregate"
    SOURCE_KEY = "the failed record's key"
    BUDGET = "the analyst's budget key (consumer group/instance)"
    SILENCE = "the silence id"


class CleanupPolicy(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


DEFAULT_PARTITIONS = 12
"""The default of ``KAFKA_TOPIC_PARTITIONS``: how many partitions every registry topic (and
every risk-processor table) has, so up to 12 processor workers share the accounts. Faust
requires topics keyed alike and their tables' changelogs to agree on it; changing it on a
live cluster is a procedure (docs/deployment.md, "Changing the partition count")."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    value: Any = field(repr=False)
    key: KeyKind
    description: str
    # The registry's default; topics are created with ``KafkaSettings.topic_partitions``.
    partitions: int = DEFAULT_PARTITIONS
    cleanup: CleanupPolicy = CleanupPolicy.DELETE
    retention_ms: int | None = None
    dead_letter: str | None = None
    adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter", TypeAdapter(self.value))

    def qualified(self, namespace: str = "") -> str:
        """The name on the broker; a namespace isolates test runs sharing one broker."""
        return f"{namespace}{self.name}"

    def decode(self, raw: bytes) -> Any:
        """Validate a record value against this topic's model (raises on bad input)."""
        return self.adapter.validate_json(raw)

    @property
    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup.value}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


def encode(event: BaseModel) -> bytes:
    """Serialize any contract model to its wire form (JSON, Decimals as strings)."""
    return event.model_dump_json(exclude_none=True).encode()


_DAY_MS = 24 * 3600 * 1000

ACCOUNT_EVENTS = TopicSpec(
    name="bybit.account-events.v1",
    value=c.AccountEventUnion,
    key=KeyKind.ACCOUNT,
    description=(
        "Normalized private-stream data of every account: positions, orders, wallet, "
        "executions and link status, in the order the ingestor saw them."
    ),
    retention_ms=7 * _DAY_MS,
    dead_letter="bybit.account-events.dlq.v1",
)
MARK_PRICES = TopicSpec(
    name="bybit.mark-prices.v1",
    value=c.MarkPriceUpdated,
    key=KeyKind.SYMBOL,
    description="Mark prices, coalesced per symbol before Kafka (latest price wins).",
    cleanup=CleanupPolicy.COMPACT,
    dead_letter="bybit.mark-prices.dlq.v1",
)
RISK_LIMITS = TopicSpec(
    name="bybit.risk-limits.v1",
    value=c.RiskLimitTableUpdated,
    key=KeyKind.SYMBOL,
    description="Each symbol's full risk-limit tier table; the latest record is current.",
    cleanup=CleanupPolicy.COMPACT,
    dead_letter="bybit.risk-limits.dlq.v1",
)
EXPOSURES = TopicSpec(
    name="risk.exposures.v1",
    value=c.ExposureSnapshotted,
    key=KeyKind.ACCOUNT_OR_PORTFOLIO,
    description="Exposure snapshots per account and for the whole portfolio.",
    cleanup=CleanupPolicy.COMPACT,
    dead_letter="risk.exposures.dlq.v1",
)
ALERTS = TopicSpec(
    name="risk.alerts.v1",
    value=c.RiskAlertChanged,
    key=KeyKind.ACCOUNT,
    description="Risk alerts raised, escalated and resolved, with the numbers behind them.",
    retention_ms=30 * _DAY_MS,
    dead_letter="risk.alerts.dlq.v1",
)
ANALYSES = TopicSpec(
    name="ai.analyses.v1",
    value=c.AnalysisCompleted,
    key=KeyKind.ACCOUNT,
    description="AI (or deterministic) commentary on an alert, following the alert itself.",
    retention_ms=30 * _DAY_MS,
    dead_letter="ai.analyses.dlq.v1",
)
AI_SPEND = TopicSpec(
    name="ai.spend.v1",
    value=c.AiSpendRecorded,
    key=KeyKind.BUDGET,
    description="The AI analyst's spend of the UTC day, so its daily budget survives restarts.",
    cleanup=CleanupPolicy.COMPACT,
    dead_letter="ai.spend.dlq.v1",
)
HEARTBEATS = TopicSpec(
    name="risk.heartbeats.v1",
    value=c.PipelineHeartbeat,
    key=KeyKind.ACCOUNT,
    description=(
        "Ingestor heartbeats forwarded by the risk processor once handled: the notifier "
        "raises 'monitoring stalled' when a group's heartbeats stop arriving."
    ),
    retention_ms=_DAY_MS,
    dead_letter="risk.heartbeats.dlq.v1",
)
NOTIFICATIONS = TopicSpec(
    name="notify.deliveries.v1",
    value=c.NotificationDelivered | c.NotificationFailed,
    key=KeyKind.ACCOUNT,
    description="One record per channel delivery attempt outcome (delivered or failed).",
    retention_ms=30 * _DAY_MS,
    dead_letter="notify.deliveries.dlq.v1",
)
SILENCES = TopicSpec(
    name="notify.silences.v1",
    value=c.SilenceChanged,
    key=KeyKind.SILENCE,
    description=(
        "Mutes, snoozes and acknowledgements set from Telegram, the CLI or the notifier's "
        "API; the latest record per silence id is current, read back at notifier startup."
    ),
    cleanup=CleanupPolicy.COMPACT,
    dead_letter="notify.silences.dlq.v1",
)

# The risk processor's own topics: in the registry so they are created, validated and
# dead-lettered like the public ones; no other service reads them.
REEVALUATE = TopicSpec(
    name="risk-processor.reevaluate.v1",
    value=c.ReevaluationRequested,
    key=KeyKind.ACCOUNT,
    description="Internal: 're-evaluate account X' requests from the processor's timer, keyed "
    "by account so the request lands in the partition (and agent) that owns X.",
    retention_ms=_DAY_MS,
    dead_letter="risk-processor.reevaluate.dlq.v1",
)
ACCOUNT_EXPOSURES = TopicSpec(
    name="risk-processor.account-exposures.v1",
    value=c.AccountExposureNoted,
    key=KeyKind.ACCOUNT_OR_PORTFOLIO,
    description="Internal: each account's latest exposure, keyed 'portfolio' so one processor "
    "agent sees every account.",
    retention_ms=_DAY_MS,
    dead_letter="risk-processor.account-exposures.dlq.v1",
)
INTERNAL_TOPICS: tuple[TopicSpec, ...] = (REEVALUATE, ACCOUNT_EXPOSURES)

DATA_TOPICS: tuple[TopicSpec, ...] = (
    ACCOUNT_EVENTS,
    MARK_PRICES,
    RISK_LIMITS,
    EXPOSURES,
    ALERTS,
    ANALYSES,
    AI_SPEND,
    HEARTBEATS,
    NOTIFICATIONS,
    SILENCES,
    *INTERNAL_TOPICS,
)


def _dead_letter_spec(parent: TopicSpec) -> TopicSpec:
    assert parent.dead_letter is not None
    return TopicSpec(
        name=parent.dead_letter,
        value=c.RecordDeadLettered,
        key=KeyKind.SOURCE_KEY,
        description=f"Records of {parent.name} that failed to decode or handle, with why.",
        retention_ms=30 * _DAY_MS,
    )


DEAD_LETTER_TOPICS: tuple[TopicSpec, ...] = tuple(
    _dead_letter_spec(t) for t in DATA_TOPICS if t.dead_letter
)

ALL_TOPICS: tuple[TopicSpec, ...] = DATA_TOPICS + DEAD_LETTER_TOPICS

_BY_NAME = {t.name: t for t in ALL_TOPICS}


def by_name(name: str) -> TopicSpec:
    """The registry entry for an unqualified topic name."""
    return _BY_NAME[name]


def dead_letter_of(spec: TopicSpec) -> TopicSpec:
    """The dead-letter topic of a data topic."""
    if spec.dead_letter is None:
        raise ValueError(f"{spec.name} has no dead-letter topic")
    return _BY_NAME[spec.dead_letter]
