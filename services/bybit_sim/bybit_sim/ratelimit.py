"""Bybit's request limits as pure window bookkeeping (times are passed in, no clock).

`RateLimiter`: the per-UID, per-endpoint rolling 1-second window of private REST (§1.5); with
another window it also counts WebSocket connects per domain (500 per 5 minutes, §3.9).
`IpLimiter`: the per-IP REST window (600 per 5 s) whose breach bans the IP (docs/bybit-v5.md §1.5).
"""

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


IP_WINDOW_MS = 5000
# IPs idle this long are forgotten once the table grows past _IP_SWEEP_AT entries, so a
# long run with many client addresses stays in bounded memory.
_IP_SWEEP_AT = 10_000


@dataclass(frozen=True, slots=True)
class IpDecision:
    allowed: bool
    # Set when refused: when the ban lifts.
    banned_until: int | None = None
    # True only on the request that breached the window and started the ban.
    ban_started: bool = False


class IpLimiter:
    """Every REST request from one IP, whatever the key or endpoint, counts in one rolling
    window; the request past the limit starts a ban during which every request is refused.
    Refused requests do not count, and the window starts empty when the ban lifts."""

    def __init__(self, limit_per_window: int, ban_ms: int, window_ms: int = IP_WINDOW_MS) -> None:
        if limit_per_window < 1:
            raise ValueError("limit must be at least 1")
        if ban_ms < 1:
            raise ValueError("ban must last at least 1 ms")
        self.limit = limit_per_window
        self.ban_ms = ban_ms
        self.window_ms = window_ms
        self._hits: dict[str, deque[int]] = {}
        self._banned: dict[str, int] = {}

    def hit(self, ip: str, now_ms: int) -> IpDecision:
        until = self._banned.get(ip)
        if until is not None:
            if now_ms < until:
                return IpDecision(False, until)
            del self._banned[ip]
        if ip not in self._hits and len(self._hits) >= _IP_SWEEP_AT:
            self._sweep(now_ms)
        hits = self._hits.setdefault(ip, deque())
        while hits and hits[0] <= now_ms - self.window_ms:
            hits.popleft()
        if len(hits) >= self.limit:
            until = now_ms + self.ban_ms
            self._banned[ip] = until
            del self._hits[ip]
            return IpDecision(False, until, ban_started=True)
        hits.append(now_ms)
        return IpDecision(True)

    def unban_all(self) -> None:
        self._banned.clear()
        self._hits.clear()

    def _sweep(self, now_ms: int) -> None:
        idle = [
            ip for ip, hits in self._hits.items() if not hits or hits[-1] <= now_ms - self.window_ms
        ]
        for ip in idle:
            del self._hits[ip]
