"""Per-UID, per-endpoint rolling 1-second window, as Bybit applies to private REST (§1.5)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW_MS = 1000


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    # When the window frees a slot if refused; otherwise the current time (Bybit's rule).
    reset_ms: int

    def headers(self, *, include_reset: bool = True) -> dict[str, str]:
        out = {"X-Bapi-Limit-Status": str(self.remaining), "X-Bapi-Limit": str(self.limit)}
        if include_reset:
            out["X-Bapi-Limit-Reset-Timestamp"] = str(self.reset_ms)
        return out


class RateLimiter:
    def __init__(self, limit_per_window: int, window_ms: int = WINDOW_MS) -> None:
        if limit_per_window < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit_per_window
        self.window_ms = window_ms
        self._hits: dict[tuple[str, str], deque[int]] = {}

    def hit(self, key: str, endpoint: str, now_ms: int) -> RateDecision:
        hits = self._hits.setdefault((key, endpoint), deque())
        while hits and hits[0] <= now_ms - self.window_ms:
            hits.popleft()
        if len(hits) >= self.limit:
            return RateDecision(False, self.limit, 0, hits[0] + self.window_ms)
        hits.append(now_ms)
        return RateDecision(True, self.limit, self.limit - len(hits), now_ms)

    def forced_refusal(self, now_ms: int) -> RateDecision:
        """A refusal injected by a fault: same headers a real exhaustion would carry."""
        return RateDecision(False, self.limit, 0, now_ms + self.window_ms)
