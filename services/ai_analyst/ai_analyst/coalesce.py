"""Coalescing windows and the answer cache (pure: times are passed in).

Alerts of one account (or of the portfolio) arriving within ``seconds`` of the first one
share one LLM call: a storm of alerts costs one call per account per window instead of
one per alert. A window closes when its time is up or when it holds ``max_items``.

The cache maps an input fingerprint (model and messages) to the answer for ``ttl``
seconds: the same alerts on the same exposure are not paid for twice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
V = TypeVar("V")


@dataclass(slots=True)
class Window(Generic[T]):
    key: str
    opened_at: float
    items: list[T] = field(default_factory=list)


class Windows(Generic[T]):
    def __init__(self, seconds: float, max_items: int) -> None:
        self.seconds = seconds
        self.max_items = max_items
        self._open: dict[str, Window[T]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, key: str, item: T, now: float) -> Window[T] | None:
        """Put ``item`` in ``key``'s window; returns the window if this filled it (closed)."""
        window = self._open.get(key)
        if window is None:
            window = self._open[key] = Window(key, now)
        window.items.append(item)
        if len(window.items) >= self.max_items:
            del self._open[key]
            return window
        return None

    def due(self, now: float) -> list[Window[T]]:
        """Close and return every window whose time is up."""
        ready = [w for w in self._open.values() if now >= w.opened_at + self.seconds]
        for w in ready:
            del self._open[w.key]
        return ready

    def drain(self) -> list[Window[T]]:
        """Close every window now (shutdown)."""
        out = list(self._open.values())
        self._open.clear()
        return out

    def next_due(self) -> float | None:
        if not self._open:
            return None
        return min(w.opened_at for w in self._open.values()) + self.seconds


class AnswerCache(Generic[V]):
    def __init__(self, ttl: float, capacity: int) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if now - stored_at > self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: V, now: float) -> None:
        self._entries[key] = (now, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
