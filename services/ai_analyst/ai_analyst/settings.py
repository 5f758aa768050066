"""AI analyst settings (env prefix ``AI_ANALYST_``).

The gateway key is ``AI_ANALYST_API_KEY``; ``HOLYSHEEP_API_KEY`` is kept as an alias so
existing deployments keep working. Any OpenAI-compatible gateway works through
``AI_ANALYST_BASE_URL``.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from ai_analyst.pricing import ModelPrice
from riskwatch_common.settings import OutboundUrl, ServiceSettings

SERVICE = "ai-analyst"


class AnalystSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="AI_ANALYST_", frozen=True, extra="ignore", populate_by_name=True
    )

    http_port: int = Field(default=8083, ge=0, le=65535)
    group_id: str = Field(default="ai-analyst", description="Kafka consumer group.")

    api_key: SecretStr | None = Field(
        default=None, description="Gateway key; without it every analysis is deterministic."
    )
    holysheep_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HOLYSHEEP_API_KEY"),
        description="The key under its older name, used when AI_ANALYST_API_KEY is unset.",
    )
    base_url: OutboundUrl = Field(
        default="https://api.holysheep.ai/v1",
        min_length=1,
        description="https://; plain http:// only to localhost (the key goes with every call)",
    )
    cheap_model: str = Field(default="deepseek-v3.2", min_length=1)
    strong_model: str = Field(
        default="gpt-4.1", min_length=1, description="Only for HIGH/CRITICAL or HIGH risk."
    )
    # The user's flat prices per million tokens; the in/out split is optional.
    cheap_usd_per_mtok: Decimal = Field(default=Decimal("0.42"), ge=0)
    cheap_input_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    cheap_output_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    strong_usd_per_mtok: Decimal = Field(default=Decimal(8), ge=0)
    strong_input_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    strong_output_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    daily_budget_usd: Decimal = Field(
        default=Decimal(5), ge=0, description="Per budget key and UTC day; 0 disables the LLM."
    )

    max_completion_tokens: int = Field(default=900, ge=50, le=8000)
    connect_timeout_seconds: float = Field(default=10, gt=0)
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
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive 5xx/timeouts/connection errors that open it."
    )
    breaker_open_seconds: float = Field(default=60, gt=0)
    gateway_pause_seconds: float = Field(
        default=300,
        ge=0,
        description="After a rejected key or exhausted quota, skip the LLM this long.",
    )
    coalesce_window_seconds: float = Field(
        default=3, ge=0, description="Alerts of one account within it share one LLM call."
    )
    coalesce_max_alerts: int = Field(default=50, ge=1, description="Alerts per call at most.")
    cache_ttl_seconds: float = Field(default=600, ge=0)
    cache_entries: int = Field(default=512, ge=1)
    budget_key: str | None = Field(
        default=None, description="Key of the persisted spend; default '<group_id>/<instance>'."
    )
    max_concurrency: int = Field(default=4, ge=1, le=64, description="LLM calls in flight.")
    max_batch_records: int = Field(default=100, ge=1)
    recent_alerts: int = Field(
        default=2048, ge=1, description="Alert event ids remembered to skip duplicates."
    )

    @field_validator("api_key", "holysheep_api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator(
        "cheap_input_usd_per_mtok",
        "cheap_output_usd_per_mtok",
        "strong_input_usd_per_mtok",
        "strong_output_usd_per_mtok",
        "budget_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def gateway_key(self) -> SecretStr | None:
        """``AI_ANALYST_API_KEY``, else its alias ``HOLYSHEEP_API_KEY`` (blank counts as unset)."""
        return self.api_key if self.api_key is not None else self.holysheep_api_key

    @property
    def cheap_price(self) -> ModelPrice:
        flat = self.cheap_usd_per_mtok
        return ModelPrice(
            self.cheap_input_usd_per_mtok if self.cheap_input_usd_per_mtok is not None else flat,
            self.cheap_output_usd_per_mtok if self.cheap_output_usd_per_mtok is not None else flat,
        )

    @property
    def strong_price(self) -> ModelPrice:
        flat = self.strong_usd_per_mtok
        return ModelPrice(
            self.strong_input_usd_per_mtok if self.strong_input_usd_per_mtok is not None else flat,
            self.strong_output_usd_per_mtok
            if self.strong_output_usd_per_mtok is not None
            else flat,
        )

    @property
    def spend_key(self) -> str:
        return self.budget_key or f"{self.group_id}/{self.instance}"
