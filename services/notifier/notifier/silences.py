"""Mutes, snoozes and acknowledgements: which alerts the phones do not get right now.

A silence matches every alert of an account, a rule or a symbol until a time (or until
lifted); an acknowledgement stops one open alert's repeats until it resolves. They are
``SilenceChanged`` events on the compacted ``notify.silences.v1`` topic (the latest record
per silence id is current), so every notifier instance and every restart sees the same set.
A silenced alert is still written to the file channel. Pure: time comes in as an argument.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from notifier.messages import Notification
from riskwatch_common.contracts import SilenceChanged, SilenceScope, derived_event_id
from riskwatch_common.render import rule_name

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_SILENCE = timedelta(days=30)
_QUOTES = ("USDT", "USDC", "USD", "PERP")
SOURCE = "notifier"


def parse_duration(text: str) -> timedelta:
    """``30m``, ``1h``, ``2d``, ``1w`` (at most 30 days); ValueError with a hint."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration: say 30m, 1h, 2d")
    span = timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])
    if span <= timedelta(0) or span > MAX_SILENCE:
        raise ValueError(f"{text!r}: a silence lasts from 1 s to 30 days")
    return span


def resolve_target(text: str, accounts: set[str], rules: set[str]) -> tuple[SilenceScope, str]:
    """What ``/mute <target>`` means: ``account:x``, ``rule:x``, ``symbol:X`` explicitly, or a
    known account, a known rule id, a symbol (``BTCUSDT``). A typo must not mute nothing
    silently, so anything else is an error naming the forms."""
    scope_text, sep, value = text.partition(":")
    if sep and scope_text.lower() in ("account", "rule", "symbol") and value:
        scope = SilenceScope(scope_text.lower())
        return scope, value.upper() if scope == SilenceScope.SYMBOL else value
    if text in accounts:
        return SilenceScope.ACCOUNT, text
    if text in rules:
        return SilenceScope.RULE, text
    upper = text.upper()
    if upper.isalnum() and upper.endswith(_QUOTES) and len(upper) > 4:
        return SilenceScope.SYMBOL, upper
    raise ValueError(
        f"unknown target {text!r}: name an account, a rule or a symbol "
        "(or say account:NAME, rule:ID, symbol:SYMBOL)"
    )


def describe(s: SilenceChanged, now: datetime) -> str:
    """``sub_90x muted for 54 min`` / ``Close to liquidation acknowledged``."""
    if s.scope == SilenceScope.ACK:
        return f"{s.value} acknowledged (no repeats until it resolves)"
    what = rule_name(s.value) if s.scope == SilenceScope.RULE else s.value
    if s.until is None:
        return f"{s.scope.value} {what} muted until unmuted"
    left = max(int((s.until - now).total_seconds() // 60), 0)
    span = f"{left} min" if left < 120 else f"{left // 60} h {left % 60} min"
    return f"{s.scope.value} {what} muted for {span}"


class Silences:
    """The current silences, from the topic's records applied in order."""

    def __init__(self) -> None:
        self._by_id: dict[str, SilenceChanged] = {}

    def apply(self, event: SilenceChanged) -> None:
        if event.active:
            self._by_id[event.silence_id] = event
        else:
            self._by_id.pop(event.silence_id, None)

    def active(self, now: datetime) -> list[SilenceChanged]:
        return sorted(
            (s for s in self._by_id.values() if s.until is None or s.until > now),
            key=lambda s: (s.scope.value, s.value),
        )

    def muting(self, n: Notification, now: datetime) -> SilenceChanged | None:
        """The silence that keeps ``n`` off the phones now, if any."""
        symbol = n.subject.partition(":")[0]
        for s in self.active(now):
            if (
                (s.scope == SilenceScope.ACCOUNT and s.value == n.account)
                or (s.scope == SilenceScope.RULE and s.value == n.rule)
                or (s.scope == SilenceScope.SYMBOL and s.value == symbol)
            ):
                return s
        return None

    def ack_of(self, alert_id: str) -> SilenceChanged | None:
        return self._by_id.get(ack_id(alert_id))

    def find(self, scope: SilenceScope, value: str, now: datetime) -> list[SilenceChanged]:
        return [s for s in self.active(now) if s.scope == scope and s.value == value]

    def get(self, silence_id: str) -> SilenceChanged | None:
        return self._by_id.get(silence_id)


def ack_id(alert_id: str) -> str:
    return derived_event_id("ack", alert_id)


def new_silence(
    scope: SilenceScope,
    value: str,
    *,
    now: datetime,
    until: datetime | None,
    by: str,
    reason: str = "",
) -> SilenceChanged:
    silence_id = (
        ack_id(value)
        if scope == SilenceScope.ACK
        else derived_event_id("silence", scope, value, now.isoformat())
    )
    return SilenceChanged(
        event_id=derived_event_id("silence-set", silence_id, now.isoformat()),
        occurred_at=now,
        produced_at=now,
        source=SOURCE,
        correlation_id=silence_id,
        silence_id=silence_id,
        scope=scope,
        value=value,
        until=until,
        by=by,
        reason=reason,
    )


def lifted(s: SilenceChanged, *, now: datetime, by: str) -> SilenceChanged:
    return s.model_copy(
        update={
            "event_id": derived_event_id("silence-lift", s.silence_id, now.isoformat()),
            "occurred_at": now,
            "produced_at": now,
            "active": False,
            "by": by,
        }
    )
