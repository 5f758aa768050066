"""Ingestor settings (env prefix ``INGESTOR_``); the accounts themselves live in a YAML file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from riskwatch_common.settings import ServiceSettings


class IngestorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGESTOR_")

    accounts_file: Path = Field(description="YAML file of accounts and their groups.")
    group: str = Field(min_length=1, description="The account group this process serves.")
    http_port: int = Field(default=8081, ge=0, le=65535)

    # Bybit's wallet stream does not push on price moves (docs/bybit-v5.md §3.5), so the wallet
    # is also polled; 10 s keeps 500 accounts inside the per-IP budget below.
    wallet_refresh_s: float = Field(default=10.0, gt=0)
    # A full in-place resync (positions, orders, wallet) as a drift check; 0 turns it off.
    drift_check_s: float = Field(default=120.0, ge=0)
    mark_price_interval_ms: int = Field(default=1000, ge=10)
    risk_limit_refresh_s: float = Field(default=3600.0, gt=0)

    ping_interval_s: float = Field(default=20.0, gt=0)
    pong_timeout_s: float = Field(default=30.0, gt=0)
    auth_timeout_s: float = Field(default=10.0, gt=0, description="Auth/subscribe ack wait.")
    auth_expires_s: float = Field(default=10.0, gt=0, description="WS auth `expires` horizon.")
    auth_retry_s: float = Field(default=300.0, gt=0, description="Retry delay after bad keys.")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    rest_timeout_s: float = Field(default=10.0, gt=0)
    recv_window_ms: int = Field(default=5000, ge=1000, le=60000)
    # Bybit allows 600 requests per 5 s per IP for all accounts together; a breach bans the
    # IP for 10 minutes, so the shared bucket keeps headroom. Unset: 500 per 5 s divided among
    # the groups of the accounts file that share this group's egress IP.
    rest_ip_requests: int | None = Field(default=None, ge=1)
    rest_ip_window_s: float = Field(default=5.0, gt=0)
    rest_ip_ban_s: float = Field(
        default=600.0,
        ge=1,
        description=(
            "After an HTTP 403 (Bybit's IP ban) no REST call of the process goes out for this"
            " long; Bybit lifts the ban after at least 10 minutes (docs/bybit-v5.md §1.5)."
        ),
    )
    # Bybit allows 500 new WebSocket connections per 5 minutes per domain. Unset: 450 per
    # 5 minutes divided like the REST budget.
    ws_connects_per_window: int | None = Field(default=None, ge=1)
    ws_connect_window_s: float = Field(default=300.0, gt=0)

    execution_backfill_on_start_s: float = Field(
        default=0.0,
        ge=0,
        le=7 * 24 * 3600,
        description=(
            "On the first connect of the process, also read each account's fills of this many"
            " seconds before it from /v5/execution/list (0 = none). Fills made while the"
            " ingestor itself was down are otherwise never reported (positions, orders and"
            " wallet are right either way); a longer reach re-publishes fills an earlier run"
            " already sent (same event ids, so consumers drop them) and costs one paginated"
            " REST call per account at startup. Reconnects always backfill from the last fill"
            " seen, whatever this says."
        ),
    )

    # Accounts connecting, authenticating and taking their first snapshot at the same time:
    # a group of hundreds starts (or recovers from a network blip) in waves instead of one
    # stampede that times out its own handshakes.
    max_concurrent_resyncs: int = Field(default=32, ge=1)

    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="A PipelineHeartbeat per account this often."
    )
    link_down_alert_s: float = Field(
        default=60.0,
        gt=0,
        description="A private stream down this long is reported (AccountStatusChanged "
        "link_down): the processor raises an account_link alert.",
    )
    key_check_interval_s: float = Field(
        default=3600.0, gt=0, description="How often each API key's expiry is read."
    )
    key_expiry_warn_days: float = Field(
        default=7.0, ge=0, description="A key expiring within this many days is reported."
    )

    queue_size: int = Field(default=10000, ge=1)
    publish_batch_max: int = Field(default=2000, ge=1)
    publish_stuck_s: float = Field(
        default=30.0,
        gt=0,
        description="A batch not taken by Kafka for this long turns /readyz red (check "
        "'publisher'), so a stalled publisher is seen.",
    )
