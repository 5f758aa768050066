"""Bybit v5 REST adapter: signed GETs, pagination, and the rate limits (docs/bybit-v5.md §1, §2).

Every call first takes a slot from the process-wide per-IP limiter. Per-UID limits are
honoured from the response headers: ``retCode 10006`` sleeps until
``X-Bapi-Limit-Reset-Timestamp`` (now + 2 s when the header is missing, pybit #340), and an
exhausted ``X-Bapi-Limit-Status`` pauses that account's endpoint for one window before the
exchange has to refuse it. An HTTP 403 is Bybit's IP ban: from then on every call of the
process fails at once with ``BybitIpBanned`` (no request goes out) until the ban is over, so
callers can keep streaming and retry later instead of blocking for minutes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from yarl import URL

from ingestor import metrics
from ingestor.accounts import AccountConfig
from ingestor.bybit.ratelimit import Sleep, SlidingWindowLimiter
from ingestor.bybit.signing import rest_headers
from riskwatch_common.logs import excerpt, redact

log = logging.getLogger(__name__)

AUTH_RET_CODES = frozenset({10003, 10004, 10005, 10007, 10010, 33004})
_RETRYABLE_RET_CODES = frozenset({10000, 10016, 10429})
_UID_WINDOW_MS = 1000
_MAX_PAGES = 100
# Execution history (docs/bybit-v5.md §1.5: 50 calls/s per UID) at 100 rows a page: 50,000 fills,
# as many as a week of a busy account; beyond that a backfill keeps the newest and says so.
_EXECUTION_MAX_PAGES = 500
EXECUTION_PAGE_ROWS = 100
EXECUTION_BACKFILL_MAX_ROWS = _EXECUTION_MAX_PAGES * EXECUTION_PAGE_ROWS


class BybitError(Exception):
    def __init__(self, path: str, ret_code: int | None, message: str, http_status: int = 200):
        # Bybit's 10004 text echoes the signed string, API key included; the error is shown
        # on /readyz, /accounts and in account events, so it never carries it.
        message = redact(message)
        super().__init__(f"{path}: {ret_code if ret_code is not None else 'HTTP'} {message}")
        self.path = path
        self.ret_code = ret_code
        self.message = message
        self.http_status = http_status


class BybitAuthError(BybitError):
    """The key is wrong, revoked, for another environment, or the signature is bad."""


class BybitIpBanned(BybitError):
    """Bybit banned this IP (HTTP 403), or a ban it announced earlier is still in force."""

    def __init__(self, path: str, message: str, remaining_s: float) -> None:
        super().__init__(path, None, message, 403)
        self.remaining_s = remaining_s


@dataclass(frozen=True, slots=True)
class Response:
    result: dict[str, Any]
    time_ms: int


@dataclass
class UidThrottle:
    """Per-account (per-UID) pause state, one per endpoint, in exchange-clock ms."""

    blocked_until_ms: dict[str, int] = field(default_factory=dict)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BybitRest:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        ip_limiter: SlidingWindowLimiter,
        recv_window_ms: int = 5000,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        ip_ban_s: float = 600.0,
        now_ms: Callable[[], int] = _now_ms,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._ip = ip_limiter
        self._recv_window_ms = recv_window_ms
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_attempts = max_attempts
        # docs/bybit-v5.md §1.5: a 403 IP ban lifts after at least 10 minutes; a setting so that
        # tests (and a deployment that knows better) can choose.
        self._ip_ban_s = ip_ban_s
        self._now_ms = now_ms
        self._sleep = sleep
        self._rng = rng

    async def get(
        self,
        base_url: str,
        path: str,
        params: list[tuple[str, str]],
        *,
        account: AccountConfig | None = None,
        throttle: UidThrottle | None = None,
    ) -> Response:
        """GET ``path``; signed when ``account`` is given. Retries what is worth retrying.

        ``params`` keep their order and their values go on the wire as given: a cursor comes
        back already URL-encoded and must be signed and sent byte for byte (docs/bybit-v5.md §1.3).
        """
        query = "&".join(f"{k}={v}" for k, v in params)
        url = URL(f"{base_url}{path}?{query}" if query else f"{base_url}{path}", encoded=True)
        recv_window = self._recv_window_ms
        attempt = 0
        while True:
            attempt += 1
            if (banned := self.ip_ban_remaining_s()) > 0:
                metrics.REST_CALLS.labels(path, "skipped_ip_ban").inc()
                raise BybitIpBanned(path, f"IP banned by Bybit for {banned:.0f}s more", banned)
            await self._wait_uid(path, throttle)
            try:
                async with self._ip.hold() as ip_waited:
                    if ip_waited > 0:
                        metrics.RATE_LIMIT_WAITS.labels("ip_budget").inc()
                        metrics.RATE_LIMIT_WAIT_SECONDS.labels("ip_budget").inc(ip_waited)
                    headers: dict[str, str] = {}
                    if account is not None:
                        creds = account.credentials
                        headers = rest_headers(
                            api_key=creds.api_key.get_secret_value(),
                            api_secret=creds.api_secret.get_secret_value(),
                            timestamp_ms=self._now_ms(),
                            recv_window_ms=recv_window,
                            query=query,
                        )
                    async with self._session.get(
                        url, headers=headers, timeout=self._timeout
                    ) as resp:
                        status = resp.status
                        body = await resp.read()
                        limit_status = resp.headers.get("X-Bapi-Limit-Status")
                        reset_header = resp.headers.get("X-Bapi-Limit-Reset-Timestamp")
            except (aiohttp.ClientError, TimeoutError) as exc:
                metrics.REST_CALLS.labels(path, "network_error").inc()
                if attempt >= self._max_attempts:
                    raise BybitError(path, None, f"network error: {exc!r}") from exc
                await self._backoff(attempt)
                continue
            self._note_limit_status(path, throttle, limit_status, reset_header)
            if status == 401:
                metrics.REST_CALLS.labels(path, "auth_error").inc()
                raise BybitAuthError(path, None, "HTTP 401 (wrong key or missing auth)", 401)
            if status == 403:
                # Bybit's IP ban: every account of this process shares the IP, so all stop.
                metrics.REST_CALLS.labels(path, "ip_banned").inc()
                self._ip.block_for(self._ip_ban_s)
                log.error(
                    "bybit answered 403: IP rate limit hit, pausing all REST",
                    extra={"path": path, "pause_s": self._ip_ban_s, "body": _excerpt(body, 100)},
                )
                raise BybitIpBanned(
                    path, "HTTP 403 (IP rate limit or region block)", self._ip_ban_s
                )
            if status == 429 or status >= 500:
                metrics.REST_CALLS.labels(path, f"http_{status}").inc()
                if attempt >= self._max_attempts:
                    raise BybitError(path, None, f"HTTP {status}", status)
                await self._backoff(attempt)
                continue
            if status != 200:
                metrics.REST_CALLS.labels(path, f"http_{status}").inc()
                raise BybitError(path, None, f"HTTP {status}: {_excerpt(body)}", status)
            try:
                ret_code, ret_msg, response = decode_body(path, body, self._now_ms())
            except BybitError:
                metrics.REST_CALLS.labels(path, "bad_response").inc()
                raise
            if ret_code == 0:
                metrics.REST_CALLS.labels(path, "ok").inc()
                return response
            if ret_code in AUTH_RET_CODES:
                metrics.REST_CALLS.labels(path, "auth_error").inc()
                raise BybitAuthError(path, ret_code, ret_msg)
            if ret_code == 10006:
                metrics.REST_CALLS.labels(path, "rate_limited").inc()
                await self._sleep_until_reset(path, throttle, reset_header)
                if attempt >= self._max_attempts:
                    raise BybitError(path, ret_code, ret_msg)
                continue
            if ret_code == 10002 and attempt < self._max_attempts:
                # Clock drift against the exchange: widen the window as pybit does (§1.4).
                metrics.REST_CALLS.labels(path, "recv_window").inc()
                recv_window += 2500
                continue
            if ret_code in _RETRYABLE_RET_CODES and attempt < self._max_attempts:
                metrics.REST_CALLS.labels(path, "retry").inc()
                await self._backoff(attempt)
                continue
            metrics.REST_CALLS.labels(path, "error").inc()
            raise BybitError(path, ret_code, ret_msg)

    def ip_ban_remaining_s(self) -> float:
        """Seconds until the IP ban announced by a 403 is over (0 when none)."""
        return self._ip.blocked_for()

    async def _wait_uid(self, path: str, throttle: UidThrottle | None) -> None:
        if throttle is not None:
            until = throttle.blocked_until_ms.get(path, 0)
            wait_s = (until - self._now_ms()) / 1000
            if wait_s > 0:
                metrics.RATE_LIMIT_WAITS.labels("uid").inc()
                metrics.RATE_LIMIT_WAIT_SECONDS.labels("uid").inc(wait_s)
                await self._sleep(wait_s)

    def _note_limit_status(
        self,
        path: str,
        throttle: UidThrottle | None,
        limit_status: str | None,
        reset_header: str | None,
    ) -> None:
        if limit_status is None:
            return
        try:
            remaining = int(limit_status)
        except ValueError:
            return
        metrics.RATE_LIMIT_REMAINING.labels(path).set(remaining)
        if remaining <= 0 and throttle is not None:
            # The next call in this UID window would be refused; wait the window out first.
            now = self._now_ms()
            until = max(now + _UID_WINDOW_MS, _parse_ms(reset_header) or 0)
            throttle.blocked_until_ms[path] = until

    async def _sleep_until_reset(
        self, path: str, throttle: UidThrottle | None, reset_header: str | None
    ) -> None:
        now = self._now_ms()
        reset = _parse_ms(reset_header)
        until = reset if reset is not None and reset > now else now + 2000
        # A reset far in the future is more likely a clock problem than a real window.
        until = min(until, now + 60_000)
        if throttle is not None:
            throttle.blocked_until_ms[path] = until
        wait_s = (until - now) / 1000
        metrics.RATE_LIMIT_WAITS.labels("uid_10006").inc()
        metrics.RATE_LIMIT_WAIT_SECONDS.labels("uid_10006").inc(wait_s)
        log.warning(
            "bybit retCode 10006, waiting for the limit to reset",
            extra={"path": path, "wait_s": wait_s},
        )
        await self._sleep(wait_s)

    async def _backoff(self, attempt: int) -> None:
        base = min(8.0, 0.25 * 2 ** (attempt - 1))
        await self._sleep(base / 2 + self._rng() * base / 2)

    async def paginate(
        self,
        base_url: str,
        path: str,
        params: list[tuple[str, str]],
        *,
        account: AccountConfig | None = None,
        throttle: UidThrottle | None = None,
        max_pages: int = _MAX_PAGES,
        keep_partial: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """Every row of a cursor-paginated list; returns (rows, time of the first page).

        More than ``max_pages`` pages is an error, unless ``keep_partial``: then the rows of
        the first ``max_pages`` pages are returned and the caller tells from their count.
        """
        rows: list[dict[str, Any]] = []
        cursor = ""
        first_time: int | None = None
        seen: set[str] = set()
        for _ in range(max_pages):
            page_params = [*params, ("cursor", cursor)] if cursor else params
            resp = await self.get(base_url, path, page_params, account=account, throttle=throttle)
            if first_time is None:
                first_time = resp.time_ms
            page = resp.result.get("list") or []
            if not isinstance(page, list):
                raise BybitError(path, 0, "result.list is not a list")
            rows.extend(r for r in page if isinstance(r, dict))
            cursor = str(resp.result.get("nextPageCursor") or "")
            if not cursor or not page:
                return rows, first_time
            if cursor in seen:
                raise BybitError(path, 0, "pagination cursor repeated")
            seen.add(cursor)
        if keep_partial and first_time is not None:
            return rows, first_time
        raise BybitError(path, 0, f"more than {max_pages} pages")


def decode_body(path: str, body: bytes, now_ms: int) -> tuple[int, str, Response]:
    """Bybit's JSON envelope: (retCode, retMsg, the result and the exchange time).

    Any body that is not that envelope raises ``BybitError`` (and nothing else): a result
    that is not an object counts as empty, a missing or unreadable ``time`` as ``now_ms``.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BybitError(path, None, f"unreadable response: {_excerpt(body)}") from None
    if not isinstance(doc, dict):
        raise BybitError(path, None, f"unreadable response: {_excerpt(body)}")
    code = doc.get("retCode")
    if isinstance(code, bool) or not isinstance(code, int | str):
        raise BybitError(path, None, f"unreadable response: {_excerpt(body)}")
    try:
        ret_code = int(code)
    except ValueError:
        raise BybitError(path, None, f"unreadable response: {_excerpt(body)}") from None
    ret_msg = str(doc.get("retMsg", ""))
    result = doc.get("result")
    time_ms = doc.get("time")
    if isinstance(time_ms, str) and time_ms.isascii() and time_ms.isdigit():
        time_ms = int(time_ms)
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms <= 0:
        time_ms = now_ms
    return ret_code, ret_msg, Response(result if isinstance(result, dict) else {}, time_ms)


def parse_key_expiry(result: dict[str, Any]) -> datetime | None:
    """``expiredAt`` of a ``/v5/user/query-api`` result: None when empty (the key never
    expires); anything but an ISO time is a BybitError."""
    raw = result.get("expiredAt")
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise BybitError("/v5/user/query-api", 0, f"expiredAt is not a time: {raw!r:.60}")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise BybitError("/v5/user/query-api", 0, f"expiredAt is not a time: {raw!r:.60}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _parse_ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One account's REST state: rows as Bybit sent them, and when (exchange clock)."""

    positions: list[dict[str, Any]]
    positions_time_ms: int
    orders: list[dict[str, Any]]
    orders_time_ms: int
    wallet: dict[str, Any] | None
    wallet_time_ms: int
    # Execution history since the requested start, newest first as Bybit lists it; None
    # when none was asked for. Every fill up to ``executions_time_ms`` is in it.
    executions: list[dict[str, Any]] | None = None
    executions_time_ms: int = 0
    # Recently closed orders (fetched with the executions): the real end of orders that
    # closed, or opened and closed, while the stream was away.
    closed_orders: list[dict[str, Any]] | None = None


class AccountRest:
    """The calls one account needs, signed with its key."""

    def __init__(self, rest: BybitRest, account: AccountConfig) -> None:
        self._rest = rest
        self.account = account
        self.throttle = UidThrottle()

    async def positions(self) -> tuple[list[dict[str, Any]], int]:
        return await self._per_settle_coin("/v5/position/list", "200")

    async def open_orders(self) -> tuple[list[dict[str, Any]], int]:
        return await self._per_settle_coin("/v5/order/realtime", "50")

    async def recently_closed_orders(self) -> tuple[list[dict[str, Any]], int]:
        """Orders closed lately: ``openOnly=1`` lists the last 500 per account (§2.2), with
        their real final status (Filled, Cancelled, ...)."""
        return await self._per_settle_coin("/v5/order/realtime", "50", [("openOnly", "1")])

    async def _per_settle_coin(
        self, path: str, limit: str, extra: list[tuple[str, str]] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Every page of ``path`` for each settle coin; the earliest response time with them."""
        rows: list[dict[str, Any]] = []
        first: int | None = None
        for coin in self.account.settle_coins:
            page_rows, t = await self._rest.paginate(
                self.account.endpoints.rest_url,
                path,
                [("category", "linear"), ("settleCoin", coin), *(extra or []), ("limit", limit)],
                account=self.account,
                throttle=self.throttle,
            )
            rows.extend(page_rows)
            first = t if first is None else min(first, t)
        return rows, first or 0

    async def wallet(self) -> tuple[dict[str, Any] | None, int]:
        resp = await self._rest.get(
            self.account.endpoints.rest_url,
            "/v5/account/wallet-balance",
            [("accountType", self.account.wallet_account_type)],
            account=self.account,
            throttle=self.throttle,
        )
        rows = resp.result.get("list") or []
        row = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None
        return row, resp.time_ms

    async def key_expiry(self) -> datetime | None:
        """When this account's API key expires (``/v5/user/query-api`` ``expiredAt``), None
        for a key that never does."""
        resp = await self._rest.get(
            self.account.endpoints.rest_url,
            "/v5/user/query-api",
            [],
            account=self.account,
            throttle=self.throttle,
        )
        return parse_key_expiry(resp.result)

    async def executions(self, start_ms: int) -> tuple[list[dict[str, Any]], int]:
        """Every linear execution with ``execTime >= start_ms``, newest first, and the time of
        the first page (nothing up to it is missing: later pages only reach further back).

        One call covers every settle coin: ``/v5/execution/list`` takes no ``settleCoin``,
        and ``startTime`` alone asks for the 7 days from it, Bybit's longest window.
        """
        return await self._rest.paginate(
            self.account.endpoints.rest_url,
            "/v5/execution/list",
            [
                ("category", "linear"),
                ("startTime", str(start_ms)),
                ("limit", str(EXECUTION_PAGE_ROWS)),
            ],
            account=self.account,
            throttle=self.throttle,
            max_pages=_EXECUTION_MAX_PAGES,
            # The newest fills, when there are more than a backfill reads: better than a
            # resync that fails every time and leaves the account never streaming.
            keep_partial=True,
        )

    async def snapshot(self, *, executions_from_ms: int | None = None) -> Snapshot:
        """Positions, open orders, wallet and, when ``executions_from_ms`` is given, the
        execution history from then on and the recently closed orders."""
        # Concurrent to keep the resync window (and the buffered stream) short; a failure
        # cancels the siblings instead of leaving them running against a dead session.
        calls: list[Any] = [self.positions(), self.open_orders(), self.wallet()]
        if executions_from_ms is not None:
            calls.append(self.executions(executions_from_ms))
            calls.append(self.recently_closed_orders())
        tasks = [asyncio.ensure_future(c) for c in calls]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        positions, pt = tasks[0].result()
        orders, ot = tasks[1].result()
        wallet, wt = tasks[2].result()
        if executions_from_ms is None:
            return Snapshot(positions, pt, orders, ot, wallet, wt)
        executions, et = tasks[3].result()
        closed, _ = tasks[4].result()
        return Snapshot(positions, pt, orders, ot, wallet, wt, executions, et, closed)


async def risk_limit_rows(rest: BybitRest, base_url: str, symbol: str) -> list[dict[str, Any]]:
    """A symbol's tier rows from the public ``/v5/market/risk-limit`` (paginated)."""
    rows, _ = await rest.paginate(
        base_url, "/v5/market/risk-limit", [("category", "linear"), ("symbol", symbol)]
    )
    return [r for r in rows if r.get("symbol") in (None, symbol)]


def _excerpt(body: bytes, limit: int = 200) -> str:
    return repr(excerpt(body.decode("utf-8", "replace"), limit))
