"""Ground-truth log of private frames: a bounded ring for /sim/frames plus an optional JSONL file.

Every frame the exchange produced is logged once, with how many sockets were subscribed and
which fault (if any) changed its delivery, so a test can check that the pipeline's
correlation id (the frame `id`) points at a frame the exchange really sent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from bybit_sim.exchange import PrivateFrame
from bybit_sim.rows import Row


@dataclass(frozen=True, slots=True)
class LoggedFrame:
    index: int
    frame: PrivateFrame
    subscribers: int
    fault: str | None

    def entry(self, *, full: bool) -> Row:
        row: Row = {
            "index": self.index,
            "id": self.frame.id,
            "account": self.frame.account,
            "topic": self.frame.topic,
            "time": self.frame.creation_time,
            "rows": self.frame.row_keys(),
            "subscribers": self.subscribers,
            "fault": self.fault,
        }
        if full:
            row["frame"] = self.frame.message()
        return row


class FrameLog:
    def __init__(self, size: int, path: Path | None = None) -> None:
        self._ring: deque[LoggedFrame] = deque(maxlen=size)
        self._path = path
        self._file: IO[bytes] | None = None
        self.last_index = 0

    def open(self) -> None:
        if self._path is not None and self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._path.open("ab")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def record(self, frame: PrivateFrame, *, subscribers: int, fault: str | None) -> None:
        self.last_index += 1
        logged = LoggedFrame(self.last_index, frame, subscribers, fault)
        self._ring.append(logged)
        if self._file is not None:
            # Small lines, flushed at once so `tail -f` and a crashed run both see them.
            self._file.write(orjson.dumps(logged.entry(full=True)) + b"\n")
            self._file.flush()

    def query(
        self,
        *,
        account: str | None = None,
        topic: str | None = None,
        since: int = 0,
        limit: int = 1000,
    ) -> list[LoggedFrame]:
        out = []
        for logged in self._ring:
            if logged.index <= since:
                continue
            if account not in (None, logged.frame.account):
                continue
            if topic not in (None, logged.frame.topic):
                continue
            out.append(logged)
            if len(out) >= limit:
                break
        return out
