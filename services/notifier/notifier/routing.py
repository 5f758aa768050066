"""Which channels get a notification: a validated routing file, or one default route.

The file (``NOTIFIER_ROUTING_FILE``, YAML) names channels (several Telegram chats, several
Slack webhooks, the console, the file) with what each accepts: a minimum severity, quiet
hours (CRITICAL exempt), whether resolves and analyses are sent, and how often an unresolved
HIGH/CRITICAL alert is repeated. Routes match severity, rule, account, group (named lists
of accounts in the same file) or the portfolio and send to channels; a notification goes to
every channel of every route it matches, then each channel's own filters apply. The file
channel is not filtered: every notification, silenced or not, is written to it.

Pure: no I/O beyond reading the file, time comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from notifier.messages import Notification
from riskwatch_common.contracts import (
    PORTFOLIO_KEY,
    AlertTransition,
    NotificationKind,
    Severity,
)

SEVERITY_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}
DEFAULT_REPEAT_MINUTES = 30.0
PHONE_MIN_SEVERITY = Severity.WARNING


class ChannelType(StrEnum):
    TELEGRAM = "telegram"
    SLACK = "slack"
    CONSOLE = "console"
    FILE = "file"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QuietHours(_Strict):
    """From ``start`` to ``end`` (local, ``NOTIFIER_TIMEZONE``; may span midnight)."""

    start: time
    end: time

    def contains(self, at: time) -> bool:
        if self.start <= self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end


class ChannelConfig(_Strict):
    type: ChannelType
    chat_id: str | None = Field(default=None, description="telegram: the chat")
    webhook_url_env: str | None = Field(
        default=None, description="slack: the variable holding the webhook URL (a secret)"
    )
    bot_token_env: str | None = Field(
        default=None,
        description="slack: the variable holding a bot token (chat.postMessage, threads)",
    )
    channel: str | None = Field(default=None, description="slack with a bot token: channel id")
    path: str | None = Field(default=None, description="file: default NOTIFIER_ALERTS_FILE")
    min_severity: Severity | None = Field(
        default=None, description="default: WARNING for telegram/slack, INFO otherwise"
    )
    repeat_minutes: float = Field(
        default=DEFAULT_REPEAT_MINUTES,
        ge=0,
        description="repeat of an unresolved HIGH/CRITICAL alert; 0 = never",
    )
    quiet_hours: QuietHours | None = None
    send_resolves: bool = True
    send_analyses: bool = True
    min_interval_seconds: float | None = Field(
        default=None,
        ge=0,
        description="pacing; a paced channel digests bursts (default: telegram/slack "
        "from their NOTIFIER_*_MIN_INTERVAL_SECONDS, console/file 0)",
    )

    @model_validator(mode="after")
    def _needs(self) -> ChannelConfig:
        if self.type == ChannelType.TELEGRAM and not self.chat_id:
            raise ValueError("a telegram channel needs chat_id")
        if self.type == ChannelType.SLACK:
            bot = bool(self.bot_token_env) and bool(self.channel)
            if bool(self.webhook_url_env) == bot:
                raise ValueError(
                    "a slack channel needs webhook_url_env, or bot_token_env and channel"
                )
        return self

    @property
    def is_phone(self) -> bool:
        """Messages a person reads: repeats and quiet hours apply (a paced console too)."""
        return self.type in (ChannelType.TELEGRAM, ChannelType.SLACK) or bool(
            self.min_interval_seconds
        )

    @property
    def floor(self) -> Severity:
        if self.min_severity is not None:
            return self.min_severity
        return PHONE_MIN_SEVERITY if self.is_phone else Severity.INFO


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


class Match(_Strict):
    """Every given condition must hold; a list matches any of its items."""

    severity: list[Severity] = Field(default_factory=list)
    rule: list[str] = Field(default_factory=list)
    account: list[str] = Field(default_factory=list)
    group: list[str] = Field(default_factory=list)
    portfolio: bool | None = None

    @field_validator("severity", "rule", "account", "group", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _as_list(value)


class Route(_Strict):
    match: Match = Field(default_factory=lambda: Match())
    to: list[str] = Field(min_length=1)

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _as_list(value)


class RoutingFile(_Strict):
    channels: dict[str, ChannelConfig] = Field(min_length=1)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    routes: list[Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> RoutingFile:
        for i, route in enumerate(self.routes):
            for name in route.to:
                if name not in self.channels:
                    raise ValueError(f"routes.{i}.to: unknown channel {name!r}")
            for g in route.match.group:
                if g not in self.groups:
                    raise ValueError(f"routes.{i}.match.group: unknown group {g!r}")
        return self


class _UniqueKeyLoader(yaml.SafeLoader):
    """A second ``channels:`` must not silently replace the first."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class RoutingError(ValueError):
    """The routing file is wrong; the message is one line naming the file and field."""


def _problem(path: Path, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        problems.append(f"{where}: {err['msg']}")
    return f"routing file {path}: " + "; ".join(problems)


def load_routing(path: str | Path) -> RoutingFile:
    """Read and validate the routing file; raises RoutingError with one line."""
    p = Path(path)
    try:
        raw: Any = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise RoutingError(f"routing file {p}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise RoutingError(f"routing file {p}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise RoutingError(f"routing file {p}{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise RoutingError(f"routing file {p}: expected a mapping with channels and routes")
    try:
        return RoutingFile.model_validate(raw)
    except ValidationError as exc:
        raise RoutingError(_problem(p, exc)) from None


@dataclass(frozen=True, slots=True)
class Router:
    """Decides, per notification and moment, which named channels get it."""

    routing: RoutingFile
    tz: tzinfo

    @property
    def channels(self) -> dict[str, ChannelConfig]:
        return self.routing.channels

    def _matches(self, m: Match, n: Notification) -> bool:
        if m.severity and n.severity not in m.severity:
            return False
        if m.rule and n.rule not in m.rule:
            return False
        if m.account and n.account not in m.account:
            return False
        if m.group and not any(n.account in self.routing.groups[g] for g in m.group):
            return False
        return m.portfolio is None or (n.account == PORTFOLIO_KEY) == m.portfolio

    def routed(self, n: Notification) -> set[str]:
        """The channels of every route ``n`` matches, before each channel's own filters."""
        names: set[str] = set()
        for route in self.routing.routes:
            if self._matches(route.match, n):
                names.update(route.to)
        return names

    def accepts(self, name: str, n: Notification, now: datetime) -> bool:
        """Whether channel ``name``'s own filters let ``n`` through at ``now``."""
        c = self.channels[name]
        if c.type == ChannelType.FILE:
            return True
        if SEVERITY_ORDER[n.severity] < SEVERITY_ORDER[c.floor]:
            return False
        if n.kind == NotificationKind.ANALYSIS and not c.send_analyses:
            return False
        if n.transition == AlertTransition.RESOLVED and not c.send_resolves:
            return False
        return not (
            c.quiet_hours is not None
            and n.severity != Severity.CRITICAL
            and c.quiet_hours.contains(now.astimezone(self.tz).time())
        )

    def targets(self, n: Notification, now: datetime) -> set[str]:
        """Where ``n`` goes now: the file channels always, the rest as routed and filtered."""
        files = {k for k, c in self.channels.items() if c.type == ChannelType.FILE}
        return files | {k for k in self.routed(n) if self.accepts(k, n, now)}

    def repeat_seconds(self, name: str) -> float:
        return self.channels[name].repeat_minutes * 60.0


def default_routing(
    *,
    console: bool,
    file_path: str,
    telegram_chat_id: str | None,
    slack: bool,
) -> RoutingFile:
    """Without a routing file: every configured channel, phones from WARNING up."""
    channels: dict[str, ChannelConfig] = {}
    if console:
        channels["console"] = ChannelConfig(type=ChannelType.CONSOLE)
    if file_path:
        channels["file"] = ChannelConfig(type=ChannelType.FILE, path=file_path)
    if telegram_chat_id:
        channels["telegram"] = ChannelConfig(type=ChannelType.TELEGRAM, chat_id=telegram_chat_id)
    if slack:
        channels["slack"] = ChannelConfig(
            type=ChannelType.SLACK, webhook_url_env="NOTIFIER_SLACK_WEBHOOK_URL"
        )
    if not channels:
        channels["console"] = ChannelConfig(type=ChannelType.CONSOLE)
    return RoutingFile(channels=channels, routes=[Route(to=list(channels))])


def severity_at_least(s: Severity, floor: Severity) -> bool:
    return SEVERITY_ORDER[s] >= SEVERITY_ORDER[floor]


def names_of(channels: Iterable[str]) -> str:
    return ", ".join(sorted(channels))
