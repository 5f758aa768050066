"""Blindness is an alert, the ingestor's half: heartbeats and the account link's health.

Every ``heartbeat_interval_s`` each account gets a ``PipelineHeartbeat`` (group, link up,
time of the last exchange message) on the account-events topic: the processor forwards it
and the notifier alerts when heartbeats stop, so a stalled pipeline is noticed even when
every service looks alive. The same tick reports an account whose private stream has been
down longer than ``link_down_alert_s`` (``link_down``), and the hourly key check one whose
API key expires within ``key_expiry_warn_days`` (``key_expiring``, then ``key_ok`` when it
no longer does): the processor raises ``account_link`` alerts from them.

``LinkWatch`` is the pure part (state and decisions, an injected clock); ``run_heartbeats``
and ``run_key_checks`` are the thin loops around it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from riskwatch_common.clock import Clock
from riskwatch_common.contracts import (
    AccountEvent,
    AccountStatusChanged,
    PipelineHeartbeat,
    StreamStatus,
    new_event_id,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AccountView:
    """What the watch needs of one account at a tick."""

    name: str
    link_up: bool
    auth_failed: bool
    last_message_at: datetime | None
    detail: str = ""


class LinkWatch:
    def __init__(
        self,
        *,
        group: str,
        source: str,
        link_down_after: timedelta,
        key_warn_before: timedelta,
        clock: Clock,
    ) -> None:
        self.group = group
        self.source = source
        self.link_down_after = link_down_after
        self.key_warn_before = key_warn_before
        self._clock = clock
        self._down_since: dict[str, datetime] = {}
        self._reported_down: set[str] = set()
        self._key_warned: dict[str, datetime] = {}

    def tick(self, accounts: Iterable[AccountView]) -> list[AccountEvent]:
        """A heartbeat per account, and ``link_down`` once per outage past the threshold."""
        now = self._clock()
        out: list[AccountEvent] = []
        for acc in accounts:
            if acc.link_up:
                self._down_since.pop(acc.name, None)
                self._reported_down.discard(acc.name)
            else:
                since = self._down_since.setdefault(acc.name, now)
                # A rejected key is reported as auth_failed by the stream itself.
                if (
                    not acc.auth_failed
                    and acc.name not in self._reported_down
                    and now - since >= self.link_down_after
                ):
                    self._reported_down.add(acc.name)
                    seconds = (now - since).total_seconds()
                    reason = f"private stream down for {seconds:.0f}s"
                    out.append(
                        self._status(
                            acc.name,
                            StreamStatus.LINK_DOWN,
                            f"{reason}: {acc.detail}" if acc.detail else reason,
                            now,
                            down_since=since,
                        )
                    )
            out.append(
                PipelineHeartbeat(
                    event_id=new_event_id(),
                    occurred_at=now,
                    produced_at=now,
                    source=self.source,
                    correlation_id=f"heartbeat:{self.group}:{acc.name}",
                    account=acc.name,
                    group=self.group,
                    link_up=acc.link_up,
                    last_exchange_message_at=acc.last_message_at,
                )
            )
        return out

    def key_checked(self, account: str, expires_at: datetime | None) -> AccountStatusChanged | None:
        """``key_expiring`` when the key expires within the warning window (once per key
        expiry), ``key_ok`` when a key reported expiring no longer does."""
        now = self._clock()
        expiring = expires_at is not None and expires_at - now <= self.key_warn_before
        warned = self._key_warned.get(account)
        if expiring and expires_at is not None and warned != expires_at:
            self._key_warned[account] = expires_at
            left = expires_at - now
            when = "expired" if left.total_seconds() <= 0 else f"expires in {_days(left)}"
            return self._status(
                account,
                StreamStatus.KEY_EXPIRING,
                f"API key {when} ({expires_at:%Y-%m-%d %H:%M} UTC): renew it on Bybit",
                now,
                key_expires_at=expires_at,
            )
        if not expiring and warned is not None:
            del self._key_warned[account]
            return self._status(
                account,
                StreamStatus.KEY_OK,
                "API key no longer expiring soon",
                now,
                key_expires_at=expires_at,
            )
        return None

    def _status(
        self,
        account: str,
        status: StreamStatus,
        reason: str,
        now: datetime,
        *,
        key_expires_at: datetime | None = None,
        down_since: datetime | None = None,
    ) -> AccountStatusChanged:
        return AccountStatusChanged(
            event_id=new_event_id(),
            occurred_at=now,
            produced_at=now,
            source=self.source,
            correlation_id=new_event_id(),
            account=account,
            status=status,
            reason=reason[:500],
            key_expires_at=key_expires_at,
            down_since=down_since,
        )


def _days(left: timedelta) -> str:
    hours = left.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


Emit = Callable[[AccountEvent], Awaitable[None]]


async def run_heartbeats(
    watch: LinkWatch,
    views: Callable[[], list[AccountView]],
    emit: Emit,
    interval_s: float,
) -> None:
    """Every ``interval_s``: the tick's heartbeats and link_down reports, until cancelled."""
    while True:
        for event in watch.tick(views()):
            await emit(event)
        await asyncio.sleep(interval_s)


KeyCheck = tuple[str, bool, Callable[[], Awaitable[datetime | None]]]


async def run_key_checks(
    watch: LinkWatch,
    accounts: Callable[[], list[KeyCheck]],
    emit: Emit,
    interval_s: float,
    monotonic: Callable[[], float],
) -> None:
    """Each account's key expiry every ``interval_s``, reported when it is near.

    ``accounts`` gives (name, ready, check): an account is first checked once its stream is
    ready, so a cold start's resyncs have the REST budget to themselves. A failed check is
    logged and tried again next round: a rejected key is already reported by the stream, and
    a network error says nothing about the key.
    """
    checked: dict[str, float] = {}
    while True:
        for name, ready, expiry in accounts():
            last = checked.get(name)
            if not ready or (last is not None and monotonic() - last < interval_s):
                continue
            checked[name] = monotonic()
            try:
                expires_at = await expiry()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("api key check failed", extra={"account": name, "error": repr(exc)})
                continue
            event = watch.key_checked(name, expires_at)
            if event is not None:
                log.warning(event.reason, extra={"account": name, "status": event.status.value})
                await emit(event)
        await asyncio.sleep(min(interval_s, 10.0))
