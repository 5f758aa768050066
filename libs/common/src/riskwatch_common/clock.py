"""Time as a dependency: domain code takes a clock, so tests control time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock: timezone-aware UTC now."""
    return datetime.now(UTC)


def from_ms(ms: int | str) -> datetime:
    """An exchange millisecond timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)
