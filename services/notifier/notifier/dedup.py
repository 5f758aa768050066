"""The record of what was delivered where: nothing is sent twice, even across restarts.

Each delivery appends ``{"channel", "event_id", "at"}`` (and ``ref``, what the channel
calls the message, e.g. a Telegram message_id, so a follow-up can reply to it after a
restart) to a JSON-lines file (flushed and
fsynced before the delivery counts as done). At startup the file is read back into a bounded
LRU, so Kafka redelivering records after a restart does not re-send them. A torn last line
from a crash is skipped. The file is compacted to the newest ``capacity`` entries whenever
it has grown past twice that, at startup and while running. A crash between a channel
accepting a message and this record being written can still re-send that one message:
at-least-once, never at-most-once.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import IO

import orjson

log = logging.getLogger(__name__)

Key = tuple[str, str]
Ref = int | str


class DeliveryLog:
    def __init__(self, path: str | Path | None, *, capacity: int = 100_000) -> None:
        self.path = Path(path) if path else None
        self.capacity = capacity
        self._seen: OrderedDict[Key, Ref | None] = OrderedDict()
        self._file: IO[bytes] | None = None
        self._lines = 0

    def open(self) -> None:
        """Load earlier deliveries and open the file for appending."""
        if self.path is None:
            log.warning("delivery log disabled: deduplication does not survive a restart")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load(self.path)
            if self._lines > 2 * self.capacity:
                self._compact(self.path)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the process lifetime
        log.info("delivery log loaded", extra={"path": str(self.path), "entries": len(self._seen)})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _load(self, path: Path) -> None:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            # a crash mid-append: drop the torn tail so the next line starts clean
            data = data[: data.rfind(b"\n") + 1]
            with open(path, "r+b") as f:
                f.truncate(len(data))
            log.warning("delivery log had a torn last line", extra={"path": str(path)})
        skipped = 0
        for line in data.splitlines():
            self._lines += 1
            try:
                doc = orjson.loads(line)
                key = (str(doc["channel"]), str(doc["event_id"]))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                skipped += 1
                continue
            ref = doc.get("ref")
            self._remember(key, ref if isinstance(ref, int | str) else None)
        if skipped:
            log.warning("delivery log lines skipped", extra={"path": str(path), "lines": skipped})

    def _compact(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            for (channel, event_id), ref in self._seen.items():
                line: dict[str, Ref] = {"channel": channel, "event_id": event_id}
                if ref is not None:
                    line["ref"] = ref
                f.write(orjson.dumps(line) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._lines = len(self._seen)

    def _remember(self, key: Key, ref: Ref | None = None) -> None:
        self._seen[key] = ref
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def delivered(self, channel: str, event_id: str) -> bool:
        return (channel, event_id) in self._seen

    def ref(self, channel: str, event_id: str) -> Ref | None:
        """What ``channel`` called the delivered message of ``event_id``, if it said."""
        return self._seen.get((channel, event_id))

    def record(self, channel: str, event_id: str, at: datetime, ref: Ref | None = None) -> None:
        """Remember a delivery durably (the line is on disk when this returns)."""
        self._remember((channel, event_id), ref)
        if self._file is None:
            return
        line: dict[str, Ref] = {"channel": channel, "event_id": event_id, "at": at.isoformat()}
        if ref is not None:
            line["ref"] = ref
        self._file.write(orjson.dumps(line) + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._lines += 1
        if self._lines > 2 * self.capacity and self.path is not None:
            # compacted while running, not only at startup: the file never grows for ever
            self._file.close()
            self._compact(self.path)
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the process lifetime
