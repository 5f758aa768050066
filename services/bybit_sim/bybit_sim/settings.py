"""Simulator settings (env prefix ``BYBIT_SIM_``); the simulator needs no Kafka."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, FilePath
from pydantic_settings import SettingsConfigDict

from riskwatch_common.settings import BaseServiceSettings


class SimSettings(BaseServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="BYBIT_SIM_", frozen=True, extra="ignore", populate_by_name=True
    )

    scenario: FilePath = Field(description="Scenario YAML file to run.")
    host: str = Field(default="127.0.0.1", description="Bind address of the Bybit API.")
    port: int = Field(default=8090, ge=0, le=65535, description="Bybit REST + WS port.")
    http_port: int = Field(default=8091, ge=0, le=65535, description="/healthz, /metrics")
    frames_log: Path | None = Field(
        default=None, description="Append every sent private frame (JSON lines) here."
    )
    rate_limit_per_s: int = Field(default=50, ge=1, description="Per key and endpoint.")
    idle_timeout_s: float = Field(default=600.0, gt=0, description="Close silent WS links.")
    ip_limit_per_5s: int = Field(
        default=600, ge=1, description="REST requests per client IP per rolling 5 s (all keys)."
    )
    ip_ban_s: float = Field(
        default=600.0, gt=0, description="How long an IP over the REST limit gets HTTP 403."
    )
    ws_connect_limit_per_5min: int = Field(
        default=500, ge=1, description="New WebSocket connections per path per 5 minutes."
    )
