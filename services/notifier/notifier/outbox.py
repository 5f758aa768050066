"""Notifications a phone channel could not take yet, kept on disk until delivered or expired.

When a Telegram or Slack delivery fails with a retryable problem (5xx, timeouts, a network
error, a 429 asking to wait longer than the in-line cap) after its in-line attempts, the
notification is appended here (flushed and fsynced) before the Kafka batch is committed,
and retried with capped exponential backoff, across restarts, until the channel accepts it
or it is older than its TTL (24 h for HIGH/CRITICAL by default, shorter for the rest). The
delivery log is checked before each retry, so nothing that reached a channel is sent again.

The file is JSON lines of ``add``, ``retry`` and ``done`` records; it is replayed at startup
and rewritten with only the pending entries when it has grown past twice what is pending.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from notifier.messages import Notification, notification_from_dict, notification_to_dict

log = logging.getLogger(__name__)

COMPACT_SLACK = 1000
"""Rewrite once the file has this many more lines than twice the pending entries."""


@dataclass(slots=True)
class Entry:
    channel: str
    notification: Notification
    created_at: datetime
    next_at: datetime
    retries: int = 0
    error: str = ""

    @property
    def key(self) -> str:
        return f"{self.channel}|{self.notification.source_event_id}"


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    ttl_urgent: timedelta = timedelta(hours=24)  # HIGH and CRITICAL
    ttl_other: timedelta = timedelta(hours=1)
    base: timedelta = timedelta(seconds=5)
    cap: timedelta = timedelta(minutes=5)

    def ttl(self, n: Notification) -> timedelta:
        return self.ttl_urgent if n.rank <= 1 else self.ttl_other

    def backoff(self, retries: int, rng: random.Random) -> timedelta:
        ceiling: timedelta = min(self.base * 2 ** min(retries, 20), self.cap)
        return ceiling * (1 - 0.25 * rng.random())


class Outbox:
    def __init__(
        self,
        path: str | Path | None,
        *,
        policy: OutboxPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.path = Path(path) if path else None
        self.policy = policy or OutboxPolicy()
        self._rng = rng or random.Random()
        self.pending: dict[str, Entry] = {}
        self._file: IO[bytes] | None = None
        self._lines = 0

    def open(self) -> None:
        """Replay the file: what was added and neither delivered nor expired is pending."""
        if self.path is None:
            log.warning("outbox disabled: undelivered notifications do not survive a restart")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._replay(self.path.read_bytes())
        self._compact()
        log.info("outbox loaded", extra={"path": str(self.path), "pending": len(self.pending)})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _replay(self, data: bytes) -> None:
        for line in data.splitlines():
            try:
                doc = orjson.loads(line)
                op, key = doc["op"], doc["key"]
                if op == "add":
                    self.pending[key] = Entry(
                        channel=doc["channel"],
                        notification=notification_from_dict(doc["notification"]),
                        created_at=datetime.fromisoformat(doc["created_at"]),
                        next_at=datetime.fromisoformat(doc["next_at"]),
                    )
                elif op == "retry" and key in self.pending:
                    entry = self.pending[key]
                    entry.next_at = datetime.fromisoformat(doc["next_at"])
                    entry.retries = int(doc["retries"])
                    entry.error = str(doc.get("error", ""))
                elif op == "done":
                    self.pending.pop(key, None)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                # a torn last line after a crash; anything else unreadable is skipped too
                log.warning("outbox line skipped", extra={"path": str(self.path)})

    def _write(self, doc: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open between writes
        self._file.write(orjson.dumps(doc) + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._lines += 1
        if self._lines > 2 * len(self.pending) + COMPACT_SLACK:
            self._compact()

    def _compact(self) -> None:
        if self.path is None:
            return
        self.close()
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            for entry in self.pending.values():
                f.write(orjson.dumps(self._add_doc(entry)) + b"\n")
                if entry.retries:
                    f.write(orjson.dumps(self._retry_doc(entry)) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines = len(self.pending)

    @staticmethod
    def _add_doc(entry: Entry) -> dict[str, Any]:
        return {
            "op": "add",
            "key": entry.key,
            "channel": entry.channel,
            "notification": notification_to_dict(entry.notification),
            "created_at": entry.created_at.isoformat(),
            "next_at": entry.next_at.isoformat(),
        }

    @staticmethod
    def _retry_doc(entry: Entry) -> dict[str, Any]:
        return {
            "op": "retry",
            "key": entry.key,
            "next_at": entry.next_at.isoformat(),
            "retries": entry.retries,
            "error": entry.error,
        }

    def add(
        self, channel: str, n: Notification, *, now: datetime, error: str, wait: float | None
    ) -> Entry:
        """Keep ``n`` for ``channel`` (durably when this returns); ``wait`` is the server's."""
        entry = Entry(channel, n, created_at=now, next_at=now, error=error)
        if entry.key in self.pending:
            return self.pending[entry.key]
        entry.next_at = now + (
            timedelta(seconds=wait) if wait else self.policy.backoff(0, self._rng)
        )
        self.pending[entry.key] = entry
        self._write(self._add_doc(entry))
        return entry

    def due(self, now: datetime) -> list[Entry]:
        """Entries whose retry time has come, most urgent and oldest first."""
        ready = [e for e in self.pending.values() if e.next_at <= now]
        return sorted(ready, key=lambda e: (e.notification.rank, e.created_at))

    def expired(self, entry: Entry, now: datetime) -> bool:
        return now - entry.created_at >= self.policy.ttl(entry.notification)

    def retry_later(self, entry: Entry, *, now: datetime, error: str, wait: float | None) -> None:
        entry.retries += 1
        entry.error = error
        entry.next_at = now + (
            timedelta(seconds=wait) if wait else self.policy.backoff(entry.retries, self._rng)
        )
        self._write(self._retry_doc(entry))

    def done(self, entry: Entry, outcome: str) -> None:
        if self.pending.pop(entry.key, None) is not None:
            self._write({"op": "done", "key": entry.key, "outcome": outcome})
