"""AI analyst settings (env prefix ``AI_ANALYST_``; the gateway key is ``HOLYSHEEP_API_KEY``)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from riskwatch_common.settings import ServiceSettings

SERVICE = "ai-analyst"


class AnalystSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="AI_ANALYST_", frozen=True, extra="ignore", populate_by_name=True
    )

    http_port: int = Field(default=8083, ge=0, le=65535)
    group_id: str = Field(default="ai-analyst", description="Kafka consumer group.")

    holysheep_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HOLYSHEEP_API_KEY"),
        description="HolySheep gateway key; without it every analysis is deterministic.",
    )
    base_url: str = Field(default="https://api.holysheep.ai/v1", min_length=1)
    cheap_model: str = Field(default="deepseek-v3.2", min_length=1)
    strong_model: str = Field(
        default="gpt-4.1", min_length=1, description="Only for HIGH/CRITICAL or HIGH risk."
    )
    # list prices per million tokens (the providers' price pages); HolySheep quotes output only
    cheap_input_usd_per_mtok: Decimal = Field(default=Decimal("0.28"), ge=0)
    cheap_output_usd_per_mtok: Decimal = Field(default=Decimal("0.42"), ge=0)
    strong_input_usd_per_mtok: Decimal = Field(default=Decimal("2.00"), ge=0)
    strong_output_usd_per_mtok: Decimal = Field(default=Decimal("8.00"), ge=0)
    daily_budget_usd: Decimal = Field(
        default=Decimal(5), ge=0, description="Per process and UTC day; 0 disables the LLM."
    )

    max_completion_tokens: int = Field(default=600, ge=50, le=8000)
    read_timeout_seconds: float = Field(default=60, gt=0)
    request_timeout_seconds: float = Field(
        default=120,
        gt=0,
        description="Whole-request bound: a held DeepSeek connection sends blank lines, "
        "which keep a pure read timeout from ever firing.",
    )
    max_attempts: int = Field(default=3, ge=1, le=10, description="HTTP attempts per call.")
    retry_base_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=8, gt=0)
    gateway_pause_seconds: float = Field(
        default=300,
        ge=0,
        description="After a rejected key or exhausted quota, skip the LLM this long.",
    )
    max_concurrency: int = Field(default=4, ge=1, le=64, description="LLM calls in flight.")
    max_batch_records: int = Field(default=100, ge=1)
    recent_alerts: int = Field(
        default=2048, ge=1, description="Alert event ids remembered to skip duplicates."
    )

    @field_validator("holysheep_api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value
