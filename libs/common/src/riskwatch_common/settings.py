"""Settings pieces shared by every service.

One style everywhere: frozen pydantic-settings classes, one env prefix per service, secrets
as ``SecretStr``. A required value has no default, so a missing variable stops startup with
a message naming it (``load_settings``).
"""

from __future__ import annotations

import ipaddress
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from riskwatch_common.logs import register_secret
from riskwatch_common.topics import DEFAULT_PARTITIONS


class ConfigError(Exception):
    """Startup configuration is wrong; the message names every offending variable."""


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_outbound_url(url: str, *, allow_plain: bool = False) -> str:
    """``url`` if it is https:// (or wss://); http:// and ws:// only to a loopback host, or
    anywhere with ``allow_plain`` (the simulator). Raises ValueError saying why.

    Every outbound base URL carries a key or a token; plain HTTP would send it in clear.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "wss", "http", "ws") or not parts.hostname:
        raise ValueError(f"must be an https:// URL, got {url!r}")
    if parts.scheme in ("http", "ws") and not allow_plain and not is_loopback(parts.hostname):
        raise ValueError(
            f"must be https:// (plain {parts.scheme}:// only to localhost), got {url!r}"
        )
    return url


OutboundUrl = Annotated[str, AfterValidator(check_outbound_url)]
"""A base URL we send credentials to: https, or http to loopback only."""


def _check_secret_url(value: SecretStr) -> SecretStr:
    try:
        check_outbound_url(value.get_secret_value())
    except ValueError:
        # the URL is the secret (a Slack webhook): the message must not quote it
        raise ValueError("must be an https:// URL (plain http:// only to localhost)") from None
    return value


OutboundSecretUrl = Annotated[SecretStr, AfterValidator(_check_secret_url)]
"""A URL that is itself a secret (a Slack webhook): https, or http to loopback only."""


def _strip_secret(value: Any) -> Any:
    # A key pasted with a newline (a secret file, `kubectl create secret --from-file`)
    # would break every call that sends it.
    if isinstance(value, SecretStr):
        stripped = value.get_secret_value().strip()
        return SecretStr(stripped) if stripped != value.get_secret_value() else value
    return value


class _DuplicateKeyLoader(yaml.SafeLoader):
    """Safe YAML that rejects a mapping key given twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (line {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def load_config_file(path: Path, what: str) -> Any:
    """The document in a YAML (or ``.json``) config file, or ConfigError naming the file.

    Rejects what the plain parsers accept silently: a key given twice in one mapping (the
    second would replace the first) and text that is not UTF-8. ``what`` names the file in
    the message, e.g. ``accounts file``.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    if path.suffix == ".json":
        try:
            return json.loads(text, object_pairs_hook=_json_pairs)
        except ValueError as exc:
            raise ConfigError(f"{what} {path}: not valid JSON ({exc})") from None
    try:
        return yaml.load(text, Loader=_DuplicateKeyLoader)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{what} {path}: not valid YAML ({detail})") from None


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

    @field_validator("*", mode="after")
    @classmethod
    def _strip_secrets(cls, value: Any) -> Any:
        return _strip_secret(value)

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
    log_level: str = Field(
        default="INFO",
        validation_alias=AliasChoices("LOG_LEVEL"),
        description=", ".join(LOG_LEVELS),
    )
    log_format: LogFormat = Field(
        default=LogFormat.JSON,
        validation_alias=AliasChoices("LOG_FORMAT"),
        description="json in production, console for people",
    )

    @field_validator("log_level", mode="after")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"is {value!r}, expected one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("*", mode="after")
    @classmethod
    def _strip_secrets(cls, value: Any) -> Any:
        return _strip_secret(value)


class ServiceSettings(BaseServiceSettings):
    """A service that talks to Kafka (env ``KAFKA_*``)."""

    kafka: KafkaSettings = Field(default_factory=lambda: KafkaSettings())


S = TypeVar("S", bound=BaseSettings)


def _env_name(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The environment variable a validation error location corresponds to."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    head = str(loc[0]) if loc else ""
    for other in cls.model_fields.values():
        # pydantic reports a field read through its alias under the alias (LOG_FORMAT)
        alias = other.validation_alias
        if isinstance(alias, AliasChoices) and head in alias.choices:
            return head.upper()
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


def _problems(owner: type[BaseSettings], exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        var = _env_name(owner, err["loc"])
        if err["type"] == "missing":
            what = "is required but not set"
        else:
            what = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{var} {what}")
    return problems


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment, or raise ConfigError naming each bad variable.

    Every problem is reported at once: nested settings (``KAFKA_*``) are built on their own
    first, so a missing broker address does not hide a bad service variable. Every secret
    found is registered with the log redactor before anything can log it.
    """
    problems: list[str] = []
    nested: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        kind = field.annotation
        if name in overrides or not (isinstance(kind, type) and issubclass(kind, BaseSettings)):
            continue
        try:
            nested[name] = kind()
        except ValidationError as exc:
            problems += _problems(kind, exc)
            nested[name] = kind.model_construct()
    try:
        settings = cls(**{**nested, **overrides})
    except ValidationError as exc:
        problems += _problems(cls, exc)
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    _register_secrets(settings)
    return settings
