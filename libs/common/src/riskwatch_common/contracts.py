"""Event contracts: one envelope, one model per event, Decimal for every amount.

Every record on a riskwatch topic is one of these models serialized as JSON. Amounts and
sizes are Decimal (strings on the wire) because float loses cents at exchange magnitudes.
Within a schema version only additive, optional changes are allowed, and consumers ignore
unknown fields (``extra="ignore"``), so an older consumer keeps working on newer records.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class Event(BaseModel):
    """The envelope every event shares.

    ``event_id`` is the dedup key: producers derive it from the source identity where one
    exists (an exchange frame, an alert transition) so a record published twice is
    recognised downstream. ``correlation_id`` follows one cause from the exchange frame to
    the notification.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_timedelta="float")

    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: str = Field(description="Unique id of this event; consumers deduplicate on it.")
    event_type: str
    schema_version: int = Field(default=1, ge=1)
    occurred_at: AwareDatetime = Field(description="When it happened at the source (UTC).")
    produced_at: AwareDatetime = Field(description="When riskwatch produced the record (UTC).")
    source: str = Field(description="Producing service and instance, e.g. 'ingestor/group-a'.")
    correlation_id: str = Field(description="Traces one cause from exchange frame to alert.")


def new_event_id() -> str:
    """A random event id for events that have no natural identity at their source."""
    return uuid.uuid4().hex


def derived_event_id(*parts: object) -> str:
    """A deterministic event id from the identity of what the event describes.

    The same exchange state change seen twice (stream and REST resync, or a redelivered
    frame) yields the same id, which is what makes downstream deduplication work.
    """
    return uuid.uuid5(uuid.NAMESPACE_URL, "|".join(str(p) for p in parts)).hex


class Side(StrEnum):
    BUY = "Buy"
    SELL = "Sell"


class DataOrigin(StrEnum):
    """Whether a state record came from the live stream or from a REST snapshot."""

    STREAM = "stream"
    SNAPSHOT = "snapshot"


# --------------------------------------------------------------------------- account data


class AccountEvent(Event):
    """Base of everything the ingestor reads from one account's private stream."""

    account: str = Field(description="Configured account name, e.g. 'main'; the record key.")
    origin: DataOrigin = DataOrigin.STREAM


class PositionUpdated(AccountEvent):
    """A position row as Bybit reported it (stream push or REST snapshot)."""

    event_type: Literal["PositionUpdated"] = "PositionUpdated"
    symbol: str
    position_idx: int = Field(ge=0, le=2, description="0 one-way, 1 hedge buy, 2 hedge sell")
    side: Side | None = Field(default=None, description="None when the position is flat.")
    size: Decimal = Field(ge=0)
    entry_price: Decimal
    leverage: Decimal | None = None
    mark_price: Decimal | None = None
    position_value: Decimal | None = None
    liq_price: Decimal | None = None
    unrealised_pnl: Decimal | None = None
    cum_realised_pnl: Decimal | None = None
    position_im: Decimal | None = None
    position_mm: Decimal | None = None
    risk_id: int | None = None
    position_status: str | None = None
    is_reduce_only: bool = False
    mmr_sys_updated_at: AwareDatetime | None = None
    leverage_sys_updated_at: AwareDatetime | None = None
    seq: int = Field(description="Bybit cross sequence; with symbol it orders updates.")
    updated_at: AwareDatetime


class OrderUpdated(AccountEvent):
    event_type: Literal["OrderUpdated"] = "OrderUpdated"
    symbol: str
    order_id: str
    order_link_id: str = ""
    side: Side
    order_type: str
    order_status: str
    price: Decimal | None = None
    qty: Decimal
    leaves_qty: Decimal = Decimal(0)
    leaves_value: Decimal | None = None
    cum_exec_qty: Decimal = Decimal(0)
    avg_price: Decimal | None = None
    position_idx: int = Field(default=0, ge=0, le=2)
    reduce_only: bool = False
    close_on_trigger: bool = False
    stop_order_type: str | None = None
    trigger_price: Decimal | None = None
    time_in_force: str | None = None
    updated_at: AwareDatetime

    OPEN_STATUSES: ClassVar[frozenset[str]] = frozenset(
        {"New", "PartiallyFilled", "Untriggered", "Active"}
    )

    @property
    def is_open(self) -> bool:
        return self.order_status in self.OPEN_STATUSES


class CoinBalance(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    coin: str
    equity: Decimal | None = None
    usd_value: Decimal | None = None
    wallet_balance: Decimal | None = None
    unrealised_pnl: Decimal | None = None
    total_position_im: Decimal | None = None
    total_position_mm: Decimal | None = None


class WalletUpdated(AccountEvent):
    event_type: Literal["WalletUpdated"] = "WalletUpdated"
    account_type: str = "UNIFIED"
    total_equity: Decimal
    total_wallet_balance: Decimal
    total_margin_balance: Decimal
    total_available_balance: Decimal | None = None
    total_perp_upl: Decimal = Decimal(0)
    total_initial_margin: Decimal = Decimal(0)
    total_maintenance_margin: Decimal = Decimal(0)
    account_im_rate: Decimal | None = None
    account_mm_rate: Decimal | None = None
    coins: tuple[CoinBalance, ...] = ()


class ExecutionReported(AccountEvent):
    event_type: Literal["ExecutionReported"] = "ExecutionReported"
    symbol: str
    exec_id: str
    order_id: str
    side: Side
    exec_price: Decimal
    exec_qty: Decimal
    exec_value: Decimal | None = None
    exec_fee: Decimal | None = None
    exec_type: str = "Trade"
    closed_size: Decimal | None = None
    is_maker: bool = False
    seq: int | None = None


class StreamStatus(StrEnum):
    CONNECTED = "connected"
    RESYNCED = "resynced"
    DISCONNECTED = "disconnected"
    AUTH_FAILED = "auth_failed"
    # The account link is broken in a way the trader must hear about (``account_link``):
    LINK_DOWN = "link_down"  # the private stream has been down longer than the threshold
    KEY_EXPIRING = "key_expiring"  # the API key expires within 7 days (``key_expires_at``)
    KEY_OK = "key_ok"  # a key reported expiring no longer is (renewed or replaced)


LINK_PROBLEMS = frozenset(
    {StreamStatus.LINK_DOWN, StreamStatus.AUTH_FAILED, StreamStatus.KEY_EXPIRING}
)
"""Statuses that open an ``account_link`` problem; ``resynced`` ends the first two,
``key_ok`` the last."""


class AccountStatusChanged(AccountEvent):
    """The ingestor's link to one account changed state (connected, resynced, failed, down
    too long, key expiring)."""

    event_type: Literal["AccountStatusChanged"] = "AccountStatusChanged"
    status: StreamStatus
    reason: str = ""
    ret_code: int | None = None
    key_expires_at: AwareDatetime | None = Field(
        default=None,
        description="When the account's API key expires (Bybit /v5/user/query-api "
        "expiredAt), when known; set on key_expiring and key_ok.",
    )
    down_since: AwareDatetime | None = Field(
        default=None, description="On link_down: since when the private stream is down."
    )


class PipelineHeartbeat(AccountEvent):
    """Proof of life: the ingestor emits one per account every few seconds on the account
    events topic; the processor forwards it unchanged (same ``event_id``) to
    ``risk.heartbeats.v1`` once it has handled everything before it on that partition, so
    a fresh heartbeat at the notifier proves the whole chain moves for that account."""

    event_type: Literal["PipelineHeartbeat"] = "PipelineHeartbeat"
    group: str = Field(description="The ingestor's account group, e.g. 'group-a'.")
    link_up: bool = Field(description="The account's private stream is connected.")
    last_exchange_message_at: AwareDatetime | None = None


# --------------------------------------------------------------------------- market data


class MarkPriceUpdated(Event):
    event_type: Literal["MarkPriceUpdated"] = "MarkPriceUpdated"
    symbol: str
    mark_price: Decimal = Field(gt=0)
    index_price: Decimal | None = None
    last_price: Decimal | None = None
    ticks_coalesced: int = Field(
        default=1, ge=1, description="Exchange ticks this record stands for (coalescing)."
    )


class RiskTier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    tier_id: int
    risk_limit_value: Decimal = Field(description="Largest position value in this tier.")
    maintenance_margin_rate: Decimal = Field(description="Fraction, e.g. 0.005 for 0.5 %.")
    initial_margin_rate: Decimal = Field(description="Fraction, e.g. 0.01 for 1 %.")
    max_leverage: Decimal
    mm_deduction: Decimal = Decimal(0)
    is_lowest_risk: bool = False


class RiskLimitTableUpdated(Event):
    """A symbol's full risk-limit tier table, rates normalized to fractions."""

    event_type: Literal["RiskLimitTableUpdated"] = "RiskLimitTableUpdated"
    symbol: str
    tiers: tuple[RiskTier, ...] = Field(min_length=1)


# --------------------------------------------------------------------------- risk outputs


class RiskLevel(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class PositionExposure(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    account: str
    symbol: str
    position_idx: int = 0
    side: Side
    size: Decimal
    notional: Decimal = Field(description="size × mark price (entry price without a mark).")
    leverage: Decimal | None = None
    unrealised_pnl: Decimal | None = None
    tier_id: int | None = None
    effective_value: Decimal | None = Field(
        default=None, description="Positions plus counted open orders, per Bybit's rule."
    )
    headroom_to_next_tier: Decimal | None = None
    headroom_to_leverage_cap: Decimal | None = None
    liq_price: Decimal | None = None
    liquidation_distance_pct: Decimal | None = None
    maintenance_margin_rate: Decimal | None = Field(
        default=None, description="MMR of the position's current tier (fraction)."
    )


class ExposureScope(StrEnum):
    ACCOUNT = "account"
    PORTFOLIO = "portfolio"


PORTFOLIO_KEY = "portfolio"
RESERVED_ACCOUNT_NAMES = frozenset({PORTFOLIO_KEY})
"""Keys the processor uses for itself in the account key space (topics, tables, the query
API): an account may not be named so, in any letter case (``is_reserved_account``)."""


def is_reserved_account(name: str) -> bool:
    """Whether ``name`` is one of ``RESERVED_ACCOUNT_NAMES`` in any letter case: the accounts
    file refuses it, the processor dead-letters events and requests for it."""
    return name.lower() in RESERVED_ACCOUNT_NAMES


class ExposureSnapshotted(Event):
    """Exposure of one account, or of all accounts (``scope=portfolio``, key 'portfolio')."""

    event_type: Literal["ExposureSnapshotted"] = "ExposureSnapshotted"
    scope: ExposureScope
    account: str = Field(description="Account name, or 'portfolio' for the aggregate.")
    accounts: tuple[str, ...] = ()
    total_long: Decimal
    total_short: Decimal
    net: Decimal
    gross: Decimal
    equity: Decimal | None = None
    net_share_of_equity: Decimal | None = Field(default=None, description="net / equity")
    unrealised_pnl: Decimal
    account_mm_rate: Decimal | None = None
    margin_ratio: Decimal | None = None
    buy_side_share: Decimal | None = Field(
        default=None, description="Share of open positions on the buy side (direction bias)."
    )
    risk_level: RiskLevel
    riskiest_positions: tuple[PositionExposure, ...] = ()
    positions: tuple[PositionExposure, ...] = ()


class HedgeOption(BaseModel):
    """One way out of a HIGH/CRITICAL alert and what it costs and changes.

    Computed by the risk engine by re-running its exposure math on the account as it
    would be after the option: fees at the taker rate, the initial margin the option
    needs (negative when it releases margin), and the effect on net exposure, the tier of
    the position and the nearest liquidation distance of the account.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    option_id: str = Field(description="Stable within the alert: 'reduce', 'offset', 'add_margin'.")
    action: str = Field(description="What to do, in plain words with our numbers.")
    symbol: str | None = None
    side: Side | None = Field(default=None, description="Order side; None for a transfer.")
    qty: Decimal | None = None
    notional_usd: Decimal = Decimal(0)
    taker_fee_rate: Decimal = Decimal(0)
    fee_usd: Decimal = Decimal(0)
    margin_needed_usd: Decimal = Field(
        default=Decimal(0), description="Initial margin (or transfer) it needs; negative frees."
    )
    net_exposure_before_usd: Decimal
    net_exposure_after_usd: Decimal
    tier_before: int | None = None
    tier_after: int | None = None
    nearest_liq_distance_pct_before: Decimal | None = None
    nearest_liq_distance_pct_after: Decimal | None = None


class AlertTransition(StrEnum):
    RAISED = "raised"
    ESCALATED = "escalated"
    # The alert stays open at the same severity but its numbers moved: readers refresh what
    # they show (reminders, /status, the overview); channels do not page for it.
    UPDATED = "updated"
    RESOLVED = "resolved"


class ActionKind(StrEnum):
    """What the trader should do; the figures are in ``SuggestedAction``'s fields."""

    ADD_MARGIN = "add_margin"  # add at least amount_usd of margin to the account
    REDUCE_POSITION = "reduce_position"  # cut symbol by qty contracts (amount_usd of value)
    LOWER_LEVERAGE = "lower_leverage"  # set symbol's leverage to at most `leverage`
    CANCEL_ORDER = "cancel_order"  # cancel order_id, or shrink it to qty (qty=0: cancel)
    REDUCE_EXPOSURE = "reduce_exposure"  # cut net exposure by amount_usd (any symbols)
    CHECK_LINK = "check_link"  # fix the account's link to Bybit (key, network)
    MONITOR = "monitor"  # nothing to do now; keep watching


class SuggestedAction(BaseModel):
    """A computed action attached to an alert: our numbers, never inferred from text.

    ``deadline`` says by when (a grace period's end); ``alternatives`` are equivalent ways
    out ("add 21,333 USDT *or* cut 5.71 BTC"), each a complete action of its own.
    """

    model_config = ConfigDict(frozen=True)

    kind: ActionKind
    account: str
    symbol: str | None = None
    side: Side | None = Field(default=None, description="Order side for reduce/cancel.")
    qty: Decimal | None = Field(default=None, description="Contracts, in the symbol's units.")
    amount_usd: Decimal | None = Field(
        default=None, description="Margin to add, or position value / net exposure to cut."
    )
    leverage: Decimal | None = Field(default=None, description="Target leverage (at most).")
    order_id: str | None = None
    deadline: AwareDatetime | None = None
    alternatives: tuple[SuggestedAction, ...] = ()


class RiskAlertChanged(Event):
    """An alert was raised, escalated, updated or resolved.

    ``alert_id`` is stable per (account, rule, subject); ``event_id`` is unique per
    transition, so a redelivered transition is recognised and a new one is not.

    ``numbers`` holds what the rule computed. Keys readers rely on: ``value`` (the
    measured quantity) and ``threshold`` (the limit crossed); the rest are the rule's own
    figures. What to do is ``action``, computed by the risk engine: never infer an action
    from number keys or rule names.
    """

    event_type: Literal["RiskAlertChanged"] = "RiskAlertChanged"
    alert_id: str
    transition: AlertTransition
    account: str
    rule: str
    subject: str = Field(description="What the alert is about: a symbol, or 'account'.")
    severity: Severity
    risk_level: RiskLevel | None = None
    reason: str
    numbers: dict[str, Decimal] = Field(default_factory=dict)
    hedge_options: tuple[HedgeOption, ...] = Field(
        default=(), description="Computed ways out; only on raised/escalated HIGH and CRITICAL."
    )
    action: SuggestedAction | None = Field(
        default=None, description="What to do now, computed by the engine (None: nothing)."
    )


class AnalysisMode(StrEnum):
    LLM = "llm"
    DETERMINISTIC = "deterministic"


class PlanOption(BaseModel):
    """One option of a hedging plan: the words are the model's (or ours), the figures ours."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    option_id: str
    rank: int = Field(ge=1, description="1 is the recommended option.")
    how: str
    pros: str
    cons: str
    estimated_cost_usd: Decimal = Field(description="Fees at the taker rate, from figures.")
    figures: HedgeOption


class AnalysisCompleted(Event):
    event_type: Literal["AnalysisCompleted"] = "AnalysisCompleted"
    alert_id: str
    alert_event_id: str
    account: str
    rule: str
    subject: str | None = None
    transition: AlertTransition | None = None
    severity: Severity
    mode: AnalysisMode
    model: str | None = None
    text_html: str = Field(max_length=300, description="Telegram-HTML commentary.")
    hedging_ideas: tuple[str, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Field(
        default=Decimal(0), description="This alert's share of the call (shares sum to it)."
    )
    note: str = ""
    plan: tuple[PlanOption, ...] = Field(default=(), description="Ranked, best first.")
    call_id: str | None = Field(
        default=None, description="The LLM call it came from, shared by coalesced alerts."
    )
    alerts_in_call: int = Field(default=1, ge=1)
    call_cost_usd: Decimal = Field(default=Decimal(0), description="What the whole call cost.")
    cached: bool = Field(default=False, description="Answer reused from an identical input.")


class AiSpendRecorded(Event):
    """The AI analyst's spend so far in one UTC day; the latest record per key is current."""

    event_type: Literal["AiSpendRecorded"] = "AiSpendRecorded"
    budget_key: str = Field(description="Whose budget: the analyst's group and instance.")
    day: date
    spent_usd: Decimal = Field(ge=0)
    budget_usd: Decimal = Field(ge=0)
    calls: int = Field(default=0, ge=0)
    budget_alerted: bool = Field(
        default=False, description="The day's budget alert was published already."
    )


class NotificationKind(StrEnum):
    ALERT = "alert"
    ANALYSIS = "analysis"


class NotificationOutcome(Event):
    channel: str
    kind: NotificationKind
    alert_id: str
    source_event_id: str
    attempts: int = Field(ge=1)


class NotificationDelivered(NotificationOutcome):
    event_type: Literal["NotificationDelivered"] = "NotificationDelivered"


class NotificationFailed(NotificationOutcome):
    event_type: Literal["NotificationFailed"] = "NotificationFailed"
    error: str


class SilenceScope(StrEnum):
    """What a silence matches: every alert of an account, a rule or a symbol, or one
    alert's repeats (an acknowledgement)."""

    ACCOUNT = "account"
    RULE = "rule"
    SYMBOL = "symbol"
    ACK = "ack"  # value is an alert id: no more repeats of it until it resolves


class SilenceChanged(Event):
    """A silence set or lifted, from a Telegram command, the CLI or the notifier's API.

    The latest record per ``silence_id`` (the key; the topic is compacted) is current. A
    muted alert still reaches the file channel; phones do not get it until ``until``.
    """

    event_type: Literal["SilenceChanged"] = "SilenceChanged"
    silence_id: str
    scope: SilenceScope
    value: str = Field(description="The account, rule id, symbol, or alert id (ack).")
    until: AwareDatetime | None = Field(
        default=None, description="End of the silence; None: until lifted (ack: resolved)."
    )
    active: bool = Field(default=True, description="False: the silence was lifted.")
    by: str = Field(default="", description="Who set it: 'telegram:<chat>', 'cli', 'api'.")
    reason: str = ""


# --------------------------------------------------------------------------- dead letters


class RecordDeadLettered(BaseModel):
    """What a dead-letter topic holds: the failed record and why it failed.

    Not an ``Event``: the failed input may not be one, so it is kept verbatim.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    source: str = Field(description="'topic[partition]@offset', or what produced the raw input.")
    key: str | None = None
    value: str = Field(
        description="The failed record, UTF-8 text (invalid bytes replaced); only its "
        "first bytes when value_truncated."
    )
    value_length: int | None = Field(default=None, description="Bytes of the raw value.")
    value_sha256: str | None = Field(default=None, description="SHA-256 of the raw value.")
    value_truncated: bool | None = Field(
        default=None, description="Whether value holds only the first bytes of the record."
    )
    error_type: str
    error: str
    reason: str | None = Field(
        default=None, description="What failed: decode, key, handle, reserved, ..."
    )
    service: str
    failed_at: datetime


class ReevaluationRequested(BaseModel):
    """Internal to the risk processor: re-evaluate ``account`` (its marks or tier tables
    moved, or a time-based rule is due). Not an ``Event``: nothing outside reads it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    account: str = Field(min_length=1)
    reason: str = Field(description="mark, tiers, timer or deadline")


class AccountExposureNoted(BaseModel):
    """Internal to the risk processor: an account's latest exposure for the portfolio stage,
    in the processor's own exposure wire form (``e``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    account: str = Field(min_length=1)
    at: int = Field(description="Evaluation time, epoch ms.")
    corr: str = Field(description="Correlation id of the causing input.")
    produced: int = Field(description="produced_at of the causing input, epoch ms.")
    e: dict[str, Any] = Field(description="The exposure (risk_processor.codec wire form).")
    resynced: bool | None = Field(
        default=None,
        description="Whether the account completed its first resync (AccountStatusChanged "
        "resynced); absent when it never reported a link status. The portfolio warm-up "
        "waits for it.",
    )


AccountEventUnion = Annotated[
    PositionUpdated
    | OrderUpdated
    | WalletUpdated
    | ExecutionReported
    | AccountStatusChanged
    | PipelineHeartbeat,
    Field(discriminator="event_type"),
]


def event_models() -> dict[str, type[BaseModel]]:
    """Every model that appears on a topic, by name: the source of the JSON Schemas."""
    models: list[type[BaseModel]] = [
        PositionUpdated,
        OrderUpdated,
        WalletUpdated,
        ExecutionReported,
        AccountStatusChanged,
        PipelineHeartbeat,
        MarkPriceUpdated,
        RiskLimitTableUpdated,
        ExposureSnapshotted,
        RiskAlertChanged,
        AnalysisCompleted,
        AiSpendRecorded,
        NotificationDelivered,
        ReevaluationRequested,
        AccountExposureNoted,
        NotificationFailed,
        SilenceChanged,
        RecordDeadLettered,
    ]
    return {m.__name__: m for m in models}
