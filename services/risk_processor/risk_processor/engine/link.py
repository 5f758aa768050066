"""Account link: the ingestor's link status as an ``account_link`` alert.

A monitor whose stream is down, or whose API key Bybit refused, watches nothing while it
looks up; the trader must hear it like any other risk. The ingestor reports the link as
``AccountStatusChanged`` statuses; ``step`` folds them into a small ``LinkState`` kept in
the account's risk book (so it survives restarts) and ``link_candidate`` turns that state
into at most one candidate (subject ``account``), the worst problem that holds:

- ``auth_failed`` (CRITICAL): Bybit refused the key; ends on ``connected``/``resynced``;
- ``link_down`` (HIGH): no data since ``down_since``; ends on ``connected``/``resynced``;
- ``key_expiring`` (WARNING): the key expires on ``key_expires_at``; ends on ``key_ok``.

The alert resolves at the first evaluation without a problem (``alerts.RESOLVE_AT_ONCE``).
Pure: no I/O, time comes in with the status.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from risk_processor.engine.actions import Action, ActionKind
from risk_processor.engine.rules import AlertCandidate, Rule
from risk_processor.engine.types import Severity

SUBJECT = "account"

# Status values of ``contracts.StreamStatus`` (plain strings: the engine has no contracts).
LINK_DOWN = "link_down"
AUTH_FAILED = "auth_failed"
KEY_EXPIRING = "key_expiring"
KEY_OK = "key_ok"
CONNECTED = "connected"
RESYNCED = "resynced"
_RECOVERED = frozenset({CONNECTED, RESYNCED})


@dataclass(frozen=True, slots=True)
class LinkState:
    """What the ingestor last said about one account's link.

    ``stream``: ``""`` (fine), ``link_down`` or ``auth_failed``, since ``since``, with the
    ingestor's ``reason``; ``key_expires_at``: set while the key is reported expiring;
    ``resynced``: the account completed a first resync (the portfolio warm-up waits for it).
    """

    stream: str = ""
    since: datetime | None = None
    reason: str = ""
    key_expires_at: datetime | None = None
    resynced: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resynced": self.resynced}
        if self.stream:
            out["stream"] = self.stream
            out["reason"] = self.reason
        if self.since is not None:
            out["since"] = self.since.isoformat()
        if self.key_expires_at is not None:
            out["key_expires_at"] = self.key_expires_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinkState:
        since = d.get("since")
        expires = d.get("key_expires_at")
        return cls(
            stream=str(d.get("stream", "")),
            since=datetime.fromisoformat(since) if since else None,
            reason=str(d.get("reason", "")),
            key_expires_at=datetime.fromisoformat(expires) if expires else None,
            resynced=bool(d.get("resynced", False)),
        )


NO_LINK = LinkState()


def step(
    link: LinkState | None,
    status: str,
    at: datetime,
    *,
    reason: str = "",
    down_since: datetime | None = None,
    key_expires_at: datetime | None = None,
) -> LinkState:
    """The link state after one reported ``status`` (observed at ``at``)."""
    held = link if link is not None else NO_LINK
    if status == AUTH_FAILED:
        since = held.since if held.stream == AUTH_FAILED and held.since is not None else at
        return replace(held, stream=AUTH_FAILED, since=since, reason=reason)
    if status == LINK_DOWN:
        if held.stream == AUTH_FAILED:
            return held  # the key refusal explains the silence and is the worse problem
        return replace(held, stream=LINK_DOWN, since=down_since or held.since or at, reason=reason)
    if status in _RECOVERED:
        out = replace(held, stream="", since=None, reason="")
        return replace(out, resynced=True) if status == RESYNCED else out
    if status == KEY_EXPIRING:
        return replace(held, key_expires_at=key_expires_at or held.key_expires_at)
    if status == KEY_OK:
        return replace(held, key_expires_at=None)
    return held  # ``disconnected`` short of the threshold: the ingestor is reconnecting


def _clock(t: datetime) -> str:
    return t.strftime("%H:%M UTC")


def _date(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


def link_candidate(account: str, link: LinkState | None, now: datetime) -> AlertCandidate | None:
    """The ``account_link`` candidate of ``link``'s worst problem, or ``None``.

    ``value`` is 1 (the condition holds) against a threshold of 0: the figures are in the
    text, and a constant value never gives an ``updated`` transition.
    """
    if link is None:
        return None
    one, zero = Decimal(1), Decimal(0)
    reason = f" ({link.reason})" if link.reason else ""
    if link.stream == AUTH_FAILED:
        return AlertCandidate(
            account,
            Rule.ACCOUNT_LINK,
            SUBJECT,
            Severity.CRITICAL,
            one,
            zero,
            f"Bybit refused the API key of {account}{reason}: positions are not watched",
        )
    if link.stream == LINK_DOWN:
        since = link.since or now
        return AlertCandidate(
            account,
            Rule.ACCOUNT_LINK,
            SUBJECT,
            Severity.HIGH,
            one,
            zero,
            f"no data from Bybit for {account} since {_clock(since)}: positions are not watched",
        )
    if link.key_expires_at is not None:
        days = max((link.key_expires_at - now).days, 0)
        return AlertCandidate(
            account,
            Rule.ACCOUNT_LINK,
            SUBJECT,
            Severity.WARNING,
            one,
            zero,
            f"the API key of {account} expires on {_date(link.key_expires_at)} (in {days} "
            f"day(s)): after that, positions are not watched",
        )
    return None


def link_action(account: str, link: LinkState | None) -> Action:
    """``check_link``; with the expiry as ``deadline`` when the key is what must be renewed."""
    deadline = None
    if link is not None and not link.stream:
        deadline = link.key_expires_at
    return Action(ActionKind.CHECK_LINK, account, deadline=deadline)
