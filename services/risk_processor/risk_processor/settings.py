"""Risk processor settings (env prefix ``RISK_PROCESSOR_``); thresholds may live in a file."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from riskwatch_common.settings import ServiceSettings


class RiskProcessorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RISK_PROCESSOR_")

    http_port: int = Field(default=8082, ge=0, le=65535)
    query_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        validate_default=True,
        description="Bearer token of the query API (/v1/...); required when http_host is "
        "not a loopback address. Never logged.",
    )

    app_id: str = Field(
        default="risk-processor",
        min_length=1,
        description="Faust app id: consumer group and changelog-topic prefix (namespaced).",
    )
    store: str = Field(
        default="memory://",
        description="Faust table store: memory:// (replays changelogs at start) in dev, "
        "rocksdb:// (rocksdict driver; recovers only what it missed) in production.",
    )
    data_dir: Path = Field(
        default=Path("var/risk-processor"), description="Faust data dir (RocksDB files)."
    )
    table_standby_replicas: int = Field(
        default=0, ge=0, description="Hot standbys per table partition; 1 with >1 worker."
    )

    reevaluate_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Cadence of mark-price / tier-table re-evaluation: each account whose "
        "marks or tables moved is re-evaluated at most once per interval.",
    )
    snapshot_interval_ms: int = Field(
        default=250,
        ge=0,
        description="Least time between two exposure snapshots of one account (or the "
        "portfolio); the latest state is always published, at the end of the interval.",
    )
    portfolio_interval_ms: int = Field(
        default=50,
        ge=0,
        description="Least time between two portfolio evaluations (each is O(accounts)); "
        "a change is evaluated at once when the last evaluation is older than this.",
    )
    batch_max_events: int = Field(
        default=5000, ge=1, description="Most records handled in one batch."
    )
    batch_gather_ms: int = Field(
        default=20,
        ge=0,
        description="Most time a batch keeps collecting records that are still arriving.",
    )
    buffer_events: int = Field(
        default=20000, ge=1, description="Records buffered per input before fetching pauses."
    )
    batch_drain: bool = Field(
        default=True,
        description="Deliver fetched records with one flow race per batch (transport.py).",
    )

    thresholds_file: Path | None = Field(
        default=None, description="YAML/JSON file of thresholds per account/group/portfolio."
    )
    net_exposure_limit_usd: Decimal | None = Field(
        default=None, gt=0, description="Overrides the base net-exposure threshold (USD)."
    )
    alert_tail_records: int = Field(
        default=1000,
        ge=0,
        description="Records per alerts partition read at start to recognise transitions "
        "already published before a crash.",
    )
    dedup_window: int = Field(
        default=4096, ge=0, description="Event ids remembered per worker for duplicate drops."
    )

    @field_validator("query_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, token: object) -> object:
        # `RISK_PROCESSOR_QUERY_TOKEN=` (a copied .env.example, compose's ${...:-}) means unset
        return None if isinstance(token, str) and not token.strip() else token

    @field_validator("query_token", mode="after")
    @classmethod
    def _token_beyond_loopback(
        cls, token: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        host = str(info.data.get("http_host", "127.0.0.1"))
        if token is None and not is_loopback(host):
            raise ValueError(
                f"required: the query API listens on {host}, beyond loopback, so it needs a "
                "bearer token (16+ characters)"
            )
        if token is not None:
            return SecretStr(token.get_secret_value().strip())
        return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
