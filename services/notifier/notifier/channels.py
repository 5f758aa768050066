"""The channel contract and the two local channels (console and file).

A channel makes one attempt per ``send`` and says what happened; retries, rate limiting
and deduplication live in ``delivery``. Errors a channel reports never contain secrets:
they are shown in logs and in ``NotificationFailed.error``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

import orjson

from notifier.messages import Notification


class Result(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Attempt:
    result: Result
    detail: str = "ok"  # metric label: ok, rate_limited, server_error, client_error, ...
    error: str = ""
    retry_after: float | None = None
    ref: Any = None  # what the channel calls the message, e.g. a Telegram message_id


class Channel(Protocol):
    name: str
    min_interval_seconds: float

    async def send(self, notification: Notification) -> Attempt: ...

    async def close(self) -> None: ...


class ConsoleChannel:
    """One readable line per notification on stdout."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        name: str = "console",
        min_interval_seconds: float = 0.0,
    ) -> None:
        self.name = name
        # paced (e.g. the demo's stand-in for a phone), it gets digests like Telegram
        self.min_interval_seconds = min_interval_seconds
        self._stream = stream

    async def send(self, notification: Notification) -> Attempt:
        stream = self._stream or sys.stdout
        stream.write(notification.console + "\n")
        stream.flush()
        return Attempt(Result.DELIVERED)

    async def close(self) -> None:
        return None


class FileChannel:
    """Appends one JSON line per notification, with the channel text, to a file; rotated
    to ``.1`` ... ``.<backups>`` when it would pass ``max_bytes`` (0 = never)."""

    min_interval_seconds = 0.0

    def __init__(
        self,
        path: str | Path,
        *,
        name: str = "file",
        max_bytes: int = 50 * 1024 * 1024,
        backups: int = 3,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: IO[bytes] | None = None

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open between sends
        return self._file

    def _rotate(self) -> None:
        """``alerts.jsonl`` -> ``alerts.jsonl.1`` -> ... -> ``.N`` (the oldest is dropped)."""
        self.close_now()
        for n in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            if newer.exists():
                os.replace(newer, older)

    async def send(self, notification: Notification) -> Attempt:
        line = orjson.dumps(notification.record) + b"\n"
        try:
            f = self._open()
            if self.max_bytes and f.tell() and f.tell() + len(line) > self.max_bytes:
                self._rotate()
                f = self._open()
            f.write(line)
            f.flush()
        except OSError as exc:
            self.close_now()
            return Attempt(Result.RETRY, "io_error", f"cannot write {self.path}: {exc.strerror}")
        return Attempt(Result.DELIVERED)

    def close_now(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def close(self) -> None:
        self.close_now()
