"""Settings pieces shared by every service.

One style everywhere: frozen pydantic-settings classes, one env prefix per service, secrets
as ``SecretStr``. A required value has no default, so a missing variable stops startup with
a message naming it (``load_settings``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from riskwatch_common.logs import register_secret
from riskwatch_common.topics import DEFAULT_PARTITIONS


class ConfigError(Exception):
    """Startup configuration is wrong; the message names every offending variable."""


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class KafkaSettings(BaseSettings):
    """Shared by all services: the cluster and how we talk to it (env prefix ``KAFKA_``)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", frozen=True, extra="ignore")

    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port]")
    enable_idempotence: bool = Field(
        default=True,
        description="On for Apache Kafka; the embedded broker rejects InitProducerId, so off.",
    )
    topic_namespace: str = Field(default="", description="Prefix of every topic name.")
    replication_factor: int = Field(default=1, ge=1)
    topic_partitions: int = Field(
        default=DEFAULT_PARTITIONS,
        ge=1,
        description="Partitions of every registry topic and processor table: the most "
        "risk-processor workers that get work. Only grows on a live cluster, by a procedure "
        "(docs/deployment.md).",
    )
    linger_ms: int = Field(default=5, ge=0, description="Producer batching window.")
    fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        description="Most time a fetch waits for data. Kafka answers as soon as data "
        "arrives, so this only bounds idle polls (Tansu never wakes a fetch: 10 there).",
    )
    session_timeout_ms: int = Field(default=6000, ge=6000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    connect_timeout_s: float = Field(
        default=60.0, gt=0, description="How long startup waits for the cluster to answer."
    )
    security_protocol: str = Field(default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_SSL…")
    ssl_cafile: str | None = Field(default=None, description="CA bundle; system CAs if unset")
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    def as_env(self) -> dict[str, str]:
        """These settings as ``KAFKA_*`` variables, for a child process to load the same."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = str(value).lower()
            env[f"KAFKA_{name.upper()}"] = str(value)
        return env


class BaseServiceSettings(BaseSettings):
    """Fields every process has; subclass with your own ``env_prefix``."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    instance: str = Field(default="0", description="Instance name, part of the event source.")
    http_host: str = "127.0.0.1"
    http_port: int = Field(ge=0, le=65535)
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL"))
    log_format: LogFormat = Field(
        default=LogFormat.JSON,
        validation_alias=AliasChoices("LOG_FORMAT"),
        description="json in production, console for people",
    )


class ServiceSettings(BaseServiceSettings):
    """A service that talks to Kafka (env ``KAFKA_*``)."""

    kafka: KafkaSettings = Field(default_factory=lambda: KafkaSettings())


S = TypeVar("S", bound=BaseSettings)


def _env_name(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The environment variable a validation error location corresponds to."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    head = str(loc[0]) if loc else ""
    field = cls.model_fields.get(head)
    if field is not None and isinstance(field.validation_alias, AliasChoices):
        first = field.validation_alias.choices[0]
        if isinstance(first, str):
            return first.upper()
    if field is not None and isinstance(field.validation_alias, str):
        return field.validation_alias.upper()
    return (prefix + "_".join(str(p) for p in loc)).upper()


def _register_secrets(value: Any) -> None:
    if isinstance(value, SecretStr):
        register_secret(value.get_secret_value())
    elif isinstance(value, BaseSettings):
        for name in type(value).model_fields:
            _register_secrets(getattr(value, name))


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment, or raise ConfigError naming each bad variable.

    Every secret found is registered with the log redactor before anything can log it.
    """
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            # a nested BaseSettings (e.g. KafkaSettings) fails inside its default_factory,
            # in which case pydantic reports the nested class's own title.
            owner: type[BaseSettings] = cls
            if exc.title != cls.__name__ and exc.title == KafkaSettings.__name__:
                owner = KafkaSettings
            var = _env_name(owner, loc)
            what = "is required but not set" if err["type"] == "missing" else err["msg"]
            problems.append(f"{var} {what}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    _register_secrets(settings)
    return settings
