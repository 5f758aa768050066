"""Notifier settings (env prefix ``NOTIFIER_``).

Telegram and Slack are configured but off until their credentials are set; console and
file are always on (the file channel turns off with an empty ``NOTIFIER_ALERTS_FILE``).
"""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from notifier.routing import ChannelType, RoutingFile, default_routing, load_routing
from riskwatch_common.settings import OutboundSecretUrl, OutboundUrl, ServiceSettings

SERVICE = "notifier"


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOTIFIER_", frozen=True, extra="ignore", populate_by_name=True
    )

    http_port: int = Field(default=8084, ge=0, le=65535)
    group_id: str = Field(default="notifier", description="Kafka consumer group.")

    console_enabled: bool = True
    alerts_file: str = Field(
        default="var/alerts.jsonl", description="JSON lines of every notification; '' = off."
    )
    alerts_file_max_mb: float = Field(
        default=50.0, ge=0, description="Rotate the alerts file past this size; 0 = never."
    )
    alerts_file_backups: int = Field(default=3, ge=1, le=100)
    delivery_log: str = Field(
        default="var/notifier-delivered.jsonl",
        description="(channel, event id) of every delivery, read at startup so a record "
        "redelivered after a restart is not sent again; '' = in memory only.",
    )
    dedup_capacity: int = Field(default=100_000, ge=100)
    outbox: str | None = Field(
        default=None,
        description="Notifications a channel could not take yet, retried across restarts; "
        "unset = notifier-outbox.jsonl beside the delivery log, '' = in memory only.",
    )
    outbox_ttl_hours: float = Field(
        default=24.0, gt=0, description="How long HIGH/CRITICAL notifications are retried."
    )
    outbox_ttl_other_hours: float = Field(
        default=1.0, gt=0, description="How long WARNING/INFO notifications are retried."
    )

    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: str | None = None
    telegram_api_base: OutboundUrl = Field(default="https://api.telegram.org", min_length=1)
    telegram_min_interval_seconds: float = Field(
        default=1.0, ge=0, description="Telegram allows about 1 message/s per chat."
    )
    slack_webhook_url: OutboundSecretUrl | None = None
    slack_api_base: OutboundUrl = Field(
        default="https://slack.com", min_length=1, description="Web API (bot tokens)."
    )
    slack_min_interval_seconds: float = Field(
        default=1.0, ge=0, description="Slack allows about 1 message/s per webhook."
    )

    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the silence API; required for it when the HTTP host "
        "is not loopback (without one the API refuses every request there).",
    )
    telegram_commands: bool = Field(
        default=True, description="Answer /status, /mute, ... in the routing's Telegram chats."
    )
    telegram_poll_seconds: float = Field(default=25.0, ge=0, le=50)
    heartbeat_stall_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Raise 'monitoring stalled' when a group's heartbeats are older; 0 = off.",
    )
    heartbeat_groups: str = Field(
        default="",
        description="Comma-separated ingestor groups to expect even before they report.",
    )
    deadman_url: OutboundSecretUrl | None = Field(
        default=None,
        description="Pinged (GET) while every group is fresh: an outside check notices a "
        "dead or blind notifier when the pings stop.",
    )
    deadman_interval_seconds: float = Field(default=60.0, gt=0)
    routing_file: str = Field(
        default="",
        description="YAML routing file (channels, routes, quiet hours, repeats); '' = every "
        "configured channel, phones from WARNING up.",
    )
    timezone: str = Field(
        default="UTC", description="IANA zone the times in messages are shown in."
    )
    digest_threshold: int = Field(
        default=4,
        ge=0,
        description="This many WARNING/INFO/resolved messages waiting on a phone channel "
        "go out as one digest; 0 = never digest.",
    )

    max_attempts: int = Field(default=5, ge=1, le=20)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=30.0, gt=0)
    max_retry_after_seconds: float = Field(
        default=60.0, gt=0, description="A longer rate-limit wait fails the delivery instead."
    )
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    queue_size: int = Field(default=256, ge=1, description="Pending sends per channel.")
    max_batch_records: int = Field(default=200, ge=1)

    @property
    def outbox_path(self) -> str:
        if self.outbox is not None:
            return self.outbox
        if not self.delivery_log:
            return ""
        return str(Path(self.delivery_log).with_name("notifier-outbox.jsonl"))

    @property
    def expected_groups(self) -> frozenset[str]:
        return frozenset(g.strip() for g in self.heartbeat_groups.split(",") if g.strip())

    @field_validator(
        "telegram_bot_token", "slack_webhook_url", "api_token", "deadman_url", mode="before"
    )
    @classmethod
    def _blank_secret_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("routing_file")
    @classmethod
    def _valid_routing(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        routing = load_routing(value)  # RoutingError is a ValueError: one line, exit 2
        for name, c in routing.channels.items():
            for field in ("webhook_url_env", "bot_token_env"):
                var = getattr(c, field)
                if c.type == ChannelType.SLACK and var and not os.environ.get(var, "").strip():
                    raise ValueError(
                        f"routing file {value}: channels.{name}.{field}: {var} is not set"
                    )
            if c.type == ChannelType.TELEGRAM and info.data.get("telegram_bot_token") is None:
                raise ValueError(
                    f"routing file {value}: channels.{name}: a telegram channel needs "
                    "NOTIFIER_TELEGRAM_BOT_TOKEN"
                )
        return value

    def routing(self) -> RoutingFile:
        """The routing file's channels and routes, or the default of the env settings."""
        if self.routing_file:
            return load_routing(self.routing_file)
        return default_routing(
            console=self.console_enabled,
            file_path=self.alerts_file,
            telegram_chat_id=self.telegram_chat_id if self.telegram_bot_token else None,
            slack=self.slack_webhook_url is not None,
        )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {value!r} (an IANA name such as Europe/Berlin)"
            ) from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @field_validator("telegram_chat_id", mode="before")
    @classmethod
    def _blank_chat_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value
