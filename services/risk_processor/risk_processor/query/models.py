"""The query API's documents (v1): pydantic models, so the OpenAPI document is generated
from the same classes that shape the answers.

Every number is kept exact, as the string of its ``Decimal``; ``display`` blocks carry the
same figures rounded and labelled for people (a phone, two seconds). Clients that compute
read the exact fields; nobody parses ``display``.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema

from riskwatch_common.contracts import ExposureSnapshotted, RiskLevel, Severity, Side


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True)


class LinkStatus(StrEnum):
    OK = "ok"
    DOWN = "down"
    EXPIRING = "expiring"


class Link(_Doc):
    """The account's link to Bybit as the alert path sees it: ``down`` while an
    ``account_link`` alert is active for a stream down past its threshold or a refused key
    (HIGH or CRITICAL: positions are not watched), ``expiring`` while it is active only for
    an API key that expires soon (WARNING: still watched), ``ok`` otherwise."""

    status: LinkStatus
    reason: str | None = None
    since: AwareDatetime | None = None


class Nearest(_Doc):
    """The position nearest to something (liquidation, or its next tier/leverage cap)."""

    symbol: str
    side: Side
    value: Decimal = Field(description="Liquidation distance in % or headroom in USD.")


class AccountDisplay(_Doc):
    equity: str
    net: str
    gross: str
    unrealised_pnl: str
    mm_rate: str
    nearest_liquidation: str
    tier_headroom: str
    link: str
    alerts: str
    as_of: str


class AccountRow(_Doc):
    """One account (or the portfolio) in a line: what ``riskwatch watch`` and the web
    overview show."""

    account: str
    link: Link | None = Field(description="None for the portfolio row.")
    risk_level: RiskLevel
    equity: Decimal | None
    net: Decimal
    gross: Decimal
    unrealised_pnl: Decimal
    account_mm_rate: Decimal | None = Field(
        description="Fraction; the weakest account's for the portfolio."
    )
    nearest_liquidation: Nearest | None = Field(description="Smallest liquidation distance, %.")
    tier_headroom: Nearest | None = Field(
        description="Smallest headroom, USD, to the next tier or the leverage cap."
    )
    active_alerts: int
    worst_severity: Severity | None
    as_of: AwareDatetime = Field(description="Exchange time of the input behind the snapshot.")
    age_s: Decimal = Field(description="Seconds since as_of, when answered.")
    display: AccountDisplay


class AccountList(_Doc):
    accounts: list[AccountRow]
    count: int


class ExposureDisplay(_Doc):
    equity: str
    net: str
    net_share_of_equity: str
    gross: str
    long: str
    short: str
    unrealised_pnl: str
    mm_rate: str
    buy_share: str
    risk_level: str
    positions: list[str]


class Exposure(_Doc):
    """The latest snapshot exactly as published on ``risk.exposures.v1``, and its display."""

    exposure: ExposureSnapshotted
    display: ExposureDisplay


class Exposures(_Doc):
    portfolio: Exposure | None
    accounts: list[Exposure]


class AlertDisplay(_Doc):
    headline: str
    value: str
    threshold: str
    since: str


class Alert(_Doc):
    """An active alert with its current figures (those of its last evaluation)."""

    alert_id: str
    account: str
    rule: str
    subject: str
    severity: Severity
    notified_severity: Severity
    raised_at: AwareDatetime
    updated_at: AwareDatetime
    value: Decimal = Field(description="The rule's figure at the alert's last change.")
    current: Decimal | None = Field(
        description="The rule's figure in the account's latest snapshot, for the rules whose "
        "figure the snapshot holds (net exposure, its share, UPL, MM rate, liquidation "
        "distance); display.value shows it when known."
    )
    threshold: Decimal
    reason: str
    numbers: dict[str, Decimal]
    display: AlertDisplay


class AlertList(_Doc):
    alerts: list[Alert]
    count: int


class Overview(_Doc):
    """Portfolio row, account rows and active alerts: one ``/v1/stream`` event."""

    portfolio: AccountRow | None
    accounts: list[AccountRow]
    alerts: list[Alert]


# A positive decimal written as a string ("0.5", "65000"): exact, never a float.
PositiveDecimal = Annotated[
    Decimal,
    Field(gt=0, max_digits=28, decimal_places=10),
    WithJsonSchema({"type": "string", "pattern": r"^(?=[0-9.]*[1-9])[0-9]{1,18}(\.[0-9]{1,10})?$"}),
]


class WhatIfRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    account: str = Field(min_length=1, max_length=64)
    symbol: str = Field(min_length=1, max_length=32, pattern=r"^[A-Z0-9]+$")
    side: Side
    qty: PositiveDecimal = Field(description="Contracts, in the symbol's units.")
    price: PositiveDecimal = Field(description="Limit price, USD.")
    leverage: PositiveDecimal | None = Field(
        default=None,
        description="Leverage the order would be placed at; default: the position's.",
    )
    reduce_only: bool = False


class Tier(_Doc):
    tier_id: int
    risk_limit_value: Decimal
    max_leverage: Decimal
    over_top_tier: bool


class WhatIfDisplay(_Doc):
    verdict: str
    tier: str
    fix: str | None
    after: list[str]


class WhatIf(_Doc):
    """What the order would do, on the live state of the worker that owns the account."""

    account: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    reduce_only: bool
    leverage: Decimal
    leverage_source: Literal["request", "position"]
    effective_value_before: Decimal
    effective_value_after: Decimal
    tier_before: Tier
    tier_after: Tier
    leverage_cap: Decimal | None = Field(description="Largest value the leverage allows.")
    rejected: bool = Field(description="Bybit would refuse it (retCode 110090).")
    max_leverage_allowing: Decimal | None
    cap_at_max_leverage: Decimal | None
    position_value_after: Decimal
    initial_margin_after: Decimal
    maintenance_margin_after: Decimal
    liq_price_after: Decimal | None
    liq_distance_pct_after: Decimal | None
    account_mm_rate_before: Decimal | None
    account_mm_rate_after: Decimal | None
    account_net_before: Decimal
    account_net_after: Decimal
    portfolio_net_before: Decimal | None
    portfolio_net_after: Decimal | None
    display: WhatIfDisplay


class Problem(_Doc):
    """Every error: what went wrong, in one line."""

    error: str
    partition: int | None = Field(
        default=None, description="503 only: the partition that owns the account."
    )
