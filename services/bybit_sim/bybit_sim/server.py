"""The I/O shell: Bybit v5 REST and WebSocket endpoints plus /sim admin endpoints.

All state lives in the exchange core; this module authenticates, rate-limits, routes frames
to sockets, applies transport faults and records what it sent (the ground-truth frame log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import quote

import orjson
from aiohttp import WSMsgType, web
from pydantic import ValidationError

from bybit_sim import metrics
from bybit_sim.auth import AuthError, verify_rest, verify_ws_auth
from bybit_sim.clock import Clock, SystemClock
from bybit_sim.exchange import Exchange, ExchangeError, PrivateFrame
from bybit_sim.faults import FaultState, MalformedVariant, corrupt
from bybit_sim.framelog import FrameLog
from bybit_sim.ratelimit import IpLimiter, RateLimiter
from bybit_sim.rows import Row, account_info_row
from bybit_sim.runner import ScenarioDriver, StepResult, run_scenario
from bybit_sim.scenario import ACTION_ADAPTER, Fault, Scenario
from bybit_sim.state import Account
from riskwatch_common.runtime import Health

log = logging.getLogger(__name__)
_T = TypeVar("_T")

ALL_IN_ONE_TOPICS = frozenset({"position", "order", "execution"})
CATEGORISED_TOPICS = frozenset({"position.linear", "order.linear", "execution.linear"})
# wallet has no categorised form, so it may accompany either form.
PRIVATE_TOPICS = ALL_IN_ONE_TOPICS | CATEGORISED_TOPICS | {"wallet"}
RISK_LIMIT_SYMBOLS_PER_PAGE = 15
# Bybit's max_active_time accepts 30s-600s on private streams (docs/bybit-v5.md §3.4).
_MAX_ACTIVE = re.compile(r"^(\d+)([sm])$")
_CURSOR = re.compile(r"^page_args=([A-Za-z0-9_.-]+)&$")
# /v5/execution/list answers at most 7 days at a time.
EXECUTION_WINDOW_MS = 7 * 24 * 3600 * 1000
# Bybit counts new WebSocket connections per domain over 5 minutes (docs/bybit-v5.md §3.9).
WS_CONNECT_WINDOW_MS = 5 * 60 * 1000
# Bybit's reply to a banned IP: HTTP 403 with this text, no JSON envelope (docs/bybit-v5.md §1.5).
IP_BAN_TEXT = "access too frequent"


@dataclass(frozen=True, slots=True)
class SimOptions:
    # Bybit cuts a link after 10 minutes without ping-pong (docs/bybit-v5.md §3.4).
    idle_timeout_s: float = 600.0
    rate_limit_per_s: int = 50
    frames_ring_size: int = 10_000
    frames_log_path: Path | None = None
    send_queue_size: int = 1024
    run_scenario: bool = True
    # Bybit: 600 REST requests per IP per 5 s, then a ban of at least 10 minutes (§1.5).
    ip_limit_per_5s: int = 600
    ip_ban_s: float = 600.0
    # Bybit: 500 new WebSocket connections per 5 minutes per domain (docs/bybit-v5.md §3.9).
    ws_connect_limit_per_5min: int = 500


class _Connection:
    """One WebSocket client; outbound messages go through a bounded queue and one writer."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        kind: Literal["private", "public"],
        transport: asyncio.Transport | None,
        queue_size: int,
    ) -> None:
        self.ws = ws
        self.kind = kind
        self.id = f"{uuid.uuid4().hex[:20]}-{kind[:3]}"
        self.account: str | None = None
        self.topics: set[str] = set()
        # public: the last full ticker sent per symbol, to build deltas from.
        self.tickers: dict[str, Row] = {}
        self.closing = False
        # Set once a close sentinel is queued: the writer will flush, then close.
        self.flushing = False
        self._transport = transport
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(queue_size)

    def send(self, message: Row) -> None:
        self.send_text(orjson.dumps(message).decode())

    def send_text(self, text: str) -> None:
        if self.closing:
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            # A client that cannot keep up is cut off, as exchanges do; bounded memory.
            log.warning("ws %s send queue full, dropping connection", self.id)
            self.abort()

    def close_after_flush(self) -> None:
        if self.closing:
            return
        self.closing = True
        try:
            self._queue.put_nowait(None)
            self.flushing = True
        except asyncio.QueueFull:
            self.abort()

    def abort(self) -> None:
        """Drop TCP without a close frame, like a network failure."""
        self.closing = True
        if self._transport is not None:
            self._transport.abort()

    def topic_names(self, topic: str) -> list[str]:
        return [t for t in (topic, f"{topic}.linear") if t in self.topics]

    async def write_loop(self) -> None:
        try:
            while (item := await self._queue.get()) is not None:
                await self.ws.send_str(item)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("ws %s writer stopped: %s", self.id, exc)
        finally:
            if not self.ws.closed:
                await self.ws.close()


class Simulator:
    """Shared state of one running sim: the exchange, sockets, faults and the frame log."""

    def __init__(
        self,
        exchange: Exchange,
        *,
        clock: Clock,
        options: SimOptions,
        health: Health | None = None,
    ) -> None:
        self.exchange = exchange
        self.health = health
        self.clock = clock
        self.options = options
        self.faults = FaultState()
        self.rate_limiter = RateLimiter(options.rate_limit_per_s)
        self.ip_limiter = IpLimiter(options.ip_limit_per_5s, int(options.ip_ban_s * 1000))
        # Keyed by WS path: each path stands for one Bybit domain.
        self.ws_connects = RateLimiter(
            options.ws_connect_limit_per_5min, window_ms=WS_CONNECT_WINDOW_MS
        )
        self.connections: set[_Connection] = set()
        self.frame_log = FrameLog(options.frames_ring_size, options.frames_log_path)
        self.scenario_errors: deque[str] = deque(maxlen=100)
        self.driver: ScenarioDriver | None = None
        self.runner_failure: str | None = None
        self._reorder: dict[str, tuple[int, list[PrivateFrame]]] = {}

    @property
    def scenario(self) -> Scenario:
        return self.exchange.scenario

    def is_silenced(self, conn: _Connection) -> bool:
        return conn.account is not None and self.faults.is_silenced(
            conn.account, self.clock.now_ms()
        )

    def secret_for_key(self, api_key: str) -> str | None:
        account = self.exchange.account_for_key(api_key)
        return account.api_secret if account else None

    # -- frame routing -----------------------------------------------------------------------

    def publish(self, frames: list[PrivateFrame]) -> None:
        for frame in frames:
            self._route(frame)

    def _subscribers(self, frame: PrivateFrame) -> list[_Connection]:
        return [
            c
            for c in self.connections
            if c.kind == "private" and c.account == frame.account and c.topic_names(frame.topic)
        ]

    def _route(self, frame: PrivateFrame) -> None:
        account = frame.account
        subscribers = len(self._subscribers(frame))
        if self.faults.is_silenced(account, self.clock.now_ms()):
            self._record(frame, subscribers, "silenced")
            return
        if account not in self._reorder:
            window = self.faults.take_reorder_window(account)
            if window > 1:
                self._reorder[account] = (window, [])
        if account in self._reorder:
            window, held = self._reorder[account]
            held.append(frame)
            self._record(frame, subscribers, "reordered")
            if len(held) >= window:
                self._flush_reorder(account)
            return
        malformed = self.faults.take_malformed(account)
        if malformed is not None:
            self._deliver(frame, times=1, malformed=malformed)
            self._record(frame, subscribers, f"malformed_{malformed}")
            return
        duplicate = self.faults.take_duplicate(account)
        self._deliver(frame, times=2 if duplicate else 1)
        self._record(frame, subscribers, "duplicated" if duplicate else None)

    def _flush_reorder(self, account: str) -> None:
        _, held = self._reorder.pop(account, (0, []))
        for frame in reversed(held):
            self._deliver(frame, times=1)

    def _deliver(
        self, frame: PrivateFrame, *, times: int, malformed: MalformedVariant | None = None
    ) -> None:
        for conn in self._subscribers(frame):
            for topic in conn.topic_names(frame.topic):
                message = frame.message(topic)
                if malformed is not None:
                    # The corrupted copy goes first and the real frame still follows, so a
                    # client that skips bad frames loses nothing.
                    conn.send_text(corrupt(message, frame.topic, malformed))
                for _ in range(times):
                    conn.send(message)

    def _record(self, frame: PrivateFrame, subscribers: int, fault: str | None) -> None:
        self.frame_log.record(frame, subscribers=subscribers, fault=fault)
        metrics.FRAMES_PRODUCED.labels(frame.topic, fault or "none").inc()

    def publish_tickers(self) -> None:
        now = self.clock.now_ms()
        for conn in self.connections:
            if conn.kind != "public":
                continue
            for symbol, last in conn.tickers.items():
                row = self.exchange.ticker_row(symbol)
                delta = {k: v for k, v in row.items() if last.get(k) != v}
                if not delta:
                    continue
                conn.tickers[symbol] = row
                metrics.TICKER_MESSAGES.labels("delta").inc()
                conn.send(
                    {
                        "topic": f"tickers.{symbol}",
                        "type": "delta",
                        "data": {"symbol": symbol, **delta},
                        "cs": self.exchange.market(symbol).ticker_cs,
                        "ts": now,
                    }
                )

    # -- actions and faults ------------------------------------------------------------------

    def apply_fault(self, fault: Fault) -> None:
        metrics.FAULTS_APPLIED.labels(fault.kind).inc()
        self.faults.arm(fault, self.clock.now_ms())
        if fault.kind == "clear":
            for account in [a for a in self._reorder if fault.account in (None, a)]:
                self._flush_reorder(account)
            if fault.account is None:
                self.ip_limiter.unban_all()
        if fault.kind != "disconnect":
            return
        for conn in list(self.connections):
            if fault.target != "all" and conn.kind != fault.target:
                continue
            if fault.account is not None and conn.account != fault.account:
                continue
            if fault.abrupt:
                conn.abort()
            else:
                conn.close_after_flush()

    async def on_step(self, result: StepResult) -> None:
        self.publish(result.frames)
        for fault in result.faults:
            self.apply_fault(fault)
        self.scenario_errors.extend(result.errors)
        if result.errors:
            metrics.SCENARIO_ACTIONS_REFUSED.inc(len(result.errors))
        if result.ticked:
            self.publish_tickers()

    async def run(self) -> None:
        """The scenario runner task; a crash is logged and reported by /sim/healthz."""
        self.driver = ScenarioDriver(self.scenario, self.exchange, start_ms=self.clock.now_ms())
        self._set_health(True, self.scenario.name)
        try:
            await run_scenario(self.driver, self.clock, self.on_step)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.runner_failure = repr(exc)
            self._set_health(False, self.runner_failure)
            log.exception("scenario runner crashed")

    def _set_health(self, ok: bool, detail: str) -> None:
        if self.health is not None:
            self.health.set("scenario_runner", ok, detail)


SIM_KEY: web.AppKey[Simulator] = web.AppKey("bybit_sim", Simulator)


def build_app(
    source: Scenario | Exchange,
    *,
    clock: Clock | None = None,
    options: SimOptions | None = None,
    run_id: str | None = None,
    health: Health | None = None,
) -> web.Application:
    """The simulator as an aiohttp application.

    `source` is a scenario (a fresh exchange is built on `clock`) or a prepared exchange
    (then pass the clock its `now_ms` reads). With `options.run_scenario` the price path and
    timeline run from app startup until cleanup. `health`, if given, gets a
    "scenario_runner" check that fails if the runner crashes.
    """
    clock = clock or SystemClock()
    options = options or SimOptions()
    if isinstance(source, Exchange):
        exchange = source
    else:
        exchange = Exchange(source, now_ms=clock.now_ms, run_id=run_id)
    app = web.Application()
    app[SIM_KEY] = Simulator(exchange, clock=clock, options=options, health=health)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_sockets)
    app.add_routes(
        [
            web.get("/v5/private", _private_ws),
            web.get("/v5/public/linear", _public_ws),
            web.get("/v5/position/list", _authed("/v5/position/list", _position_list)),
            web.get("/v5/order/realtime", _authed("/v5/order/realtime", _order_realtime)),
            web.get("/v5/execution/list", _authed("/v5/execution/list", _execution_list)),
            web.get(
                "/v5/account/wallet-balance",
                _authed("/v5/account/wallet-balance", _wallet_balance),
            ),
            web.get("/v5/account/info", _authed("/v5/account/info", _account_info)),
            web.get("/v5/user/query-api", _authed("/v5/user/query-api", _query_api)),
            web.get("/v5/market/risk-limit", _public("/v5/market/risk-limit", _risk_limit)),
            web.get("/v5/market/tickers", _public("/v5/market/tickers", _tickers)),
            web.get("/v5/market/time", _public("/v5/market/time", _market_time)),
            web.get("/sim/healthz", _healthz),
            web.get("/sim/ground-truth", _ground_truth),
            web.get("/sim/frames", _frames),
            web.get("/sim/faults", _faults),
            web.post("/sim/action", _action),
            web.post("/sim/fault", _fault),
        ]
    )
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIM_KEY]
    sim.frame_log.open()
    task = asyncio.create_task(sim.run()) if sim.options.run_scenario else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sim.frame_log.close()


async def _close_sockets(app: web.Application) -> None:
    for conn in list(app[SIM_KEY].connections):
        conn.close_after_flush()


# -- JSON helpers --------------------------------------------------------------------------------


def _json(
    body: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _envelope(now_ms: int, result: object, code: int = 0, message: str = "OK") -> Row:
    return {"retCode": code, "retMsg": message, "result": result, "retExtInfo": {}, "time": now_ms}


def _reply(
    endpoint: str,
    now_ms: int,
    result: object,
    code: int = 0,
    message: str = "OK",
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    metrics.REST_REQUESTS.labels(endpoint, str(code)).inc()
    return _json(_envelope(now_ms, result, code, message), status=status, headers=headers)


Query = Mapping[str, str]


def _category(query: Query) -> None:
    category = query.get("category")
    if not category:
        raise ExchangeError(10001, "params error: category is required")
    if category != "linear":
        # The sim lists USDT perpetuals only.
        raise ExchangeError(10001, f"params error: category {category} not supported by sim")


def _limit(query: Query, low: int, high: int, default: int) -> int:
    text = query.get("limit")
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ExchangeError(10001, "params error: limit must be an integer") from None
    if not low <= value <= high:
        raise ExchangeError(10001, f"params error: limit must be in [{low}, {high}]")
    return value


def encode_cursor(key: str) -> str:
    """Bybit hands cursors out already URL-encoded (`page_args%3D...%26`); so do we."""
    return quote(f"page_args={key}&", safe="")


def _paginate(
    items: list[_T], key: Callable[[_T], str], cursor: str | None, limit: int, *, descending: bool
) -> tuple[list[_T], str]:
    start = 0
    if cursor:
        # aiohttp has decoded the query once, which undoes the encoding a client that
        # passes the cursor through unchanged leaves in place.
        match = _CURSOR.match(cursor)
        if match is None:
            raise ExchangeError(10001, "params error: cursor invalid")
        after = match.group(1)
        keys = [key(item) for item in items]
        if after in keys:
            start = keys.index(after) + 1
        else:
            # The row the cursor points at is gone; resume at the next one in sort order.
            start = next(
                (i for i, k in enumerate(keys) if (k < after if descending else k > after)),
                len(items),
            )
    page = items[start : start + limit]
    more = start + limit < len(items)
    return page, encode_cursor(key(page[-1])) if more and page else ""


def _ip_gate(sim: Simulator, request: web.Request, now_ms: int) -> web.Response | None:
    """The per-IP limit comes before auth and the per-UID limit, and a refusal is a bare
    HTTP 403 without the JSON envelope, as Bybit answers a banned IP (docs/bybit-v5.md §1.5)."""
    if sim.faults.ip_ban_until(now_ms) is not None:
        cause = "ip_ban_fault"
    else:
        ip = request.remote or "unknown"
        decision = sim.ip_limiter.hit(ip, now_ms)
        if decision.allowed:
            return None
        if decision.ban_started:
            metrics.REST_IP_BANS.inc()
            log.warning("ip %s breached the REST limit, banned until %s", ip, decision.banned_until)
        cause = "ip_limit"
    metrics.REST_IP_REFUSED.labels(cause).inc()
    return web.Response(status=403, text=IP_BAN_TEXT)


# -- REST: private ---------------------------------------------------------------------------------

PrivateHandler = Callable[[Simulator, Account, Query], object]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _authed(endpoint: str, handler: PrivateHandler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        sim = request.app[SIM_KEY]
        now = sim.clock.now_ms()
        if (refusal := _ip_gate(sim, request, now)) is not None:
            return refusal
        body = "" if request.method == "GET" else await request.text()
        try:
            auth = verify_rest(
                request.headers,
                method=request.method,
                raw_query=request.rel_url.raw_query_string,
                body=body,
                now_ms=now,
                secret_for_key=sim.secret_for_key,
            )
        except AuthError as exc:
            return _reply(endpoint, now, {}, exc.code, exc.message, status=exc.http_status)
        account = sim.exchange.account_for_key(auth.api_key)
        assert account is not None  # verify_rest found its secret
        if sim.faults.take_sign_fail(account.name):
            signed = request.headers.get("X-BAPI-TIMESTAMP", "") + auth.api_key
            signed += request.headers.get("X-BAPI-RECV-WINDOW", "")
            signed += request.rel_url.raw_query_string if request.method == "GET" else body
            return _reply(endpoint, now, {}, 10004, f"error sign! origin_string[{signed}]")
        refuse, omit_reset = sim.faults.take_rate_limit(account.name)
        if refuse:
            decision = sim.rate_limiter.forced_refusal(now)
        else:
            decision = sim.rate_limiter.hit(account.name, endpoint, now)
        headers = decision.headers(include_reset=not omit_reset)
        if not decision.allowed:
            return _reply(endpoint, now, {}, 10006, "Too many visits!", headers=headers)
        try:
            result = handler(sim, account, request.rel_url.query)
        except ExchangeError as exc:
            return _reply(endpoint, now, {}, exc.code, exc.message, headers=headers)
        return _reply(endpoint, now, result, headers=headers)

    return handle


def _position_list(sim: Simulator, account: Account, query: Query) -> object:
    _category(query)
    symbol = query.get("symbol")
    settle = query.get("settleCoin")
    if not symbol and not settle:
        raise ExchangeError(
            10001, "Missing some parameters that must be filled in, symbol or settleCoin"
        )
    limit = _limit(query, 1, 200, 20)
    if symbol:
        rows = sim.exchange.position_rows(account, symbol=symbol)
    else:
        rows = sim.exchange.position_rows(account) if settle == "USDT" else []
    page, cursor = _paginate(
        rows,
        lambda r: f"{r['symbol']}_{r['positionIdx']}",
        query.get("cursor"),
        limit,
        descending=False,
    )
    return {"list": page, "nextPageCursor": cursor, "category": "linear"}


def _order_realtime(sim: Simulator, account: Account, query: Query) -> object:
    _category(query)
    symbol, base, settle = query.get("symbol"), query.get("baseCoin"), query.get("settleCoin")
    if not (symbol or base or settle):
        raise ExchangeError(
            10001,
            "Missing some parameters that must be filled in, symbol or settleCoin or baseCoin",
        )
    limit = _limit(query, 1, 50, 20)
    open_only = query.get("openOnly", "0")
    if open_only not in ("0", "1"):
        raise ExchangeError(10001, "params error: openOnly must be 0 or 1")
    rows = sim.exchange.order_rows(account, open_only=open_only == "0")
    if symbol:
        rows = [r for r in rows if r["symbol"] == symbol]
    elif base:
        rows = [r for r in rows if r["symbol"] == f"{base}USDT"]
    elif settle != "USDT":
        rows = []
    if order_id := query.get("orderId"):
        rows = [r for r in rows if r["orderId"] == order_id]
    if link_id := query.get("orderLinkId"):
        rows = [r for r in rows if r["orderLinkId"] == link_id]
    page, cursor = _paginate(
        rows,
        lambda r: f"{r['createdTime']}_{r['orderId']}",
        query.get("cursor"),
        limit,
        descending=True,
    )
    return {"list": page, "nextPageCursor": cursor, "category": "linear"}


def _execution_list(sim: Simulator, account: Account, query: Query) -> object:
    _category(query)
    limit = _limit(query, 1, 100, 50)
    start, end = _time_window(query, sim.clock.now_ms())
    symbol = query.get("symbol") or None
    if symbol is not None:
        sim.exchange.market(symbol)
    rows = sim.exchange.execution_rows(
        account,
        start_ms=start,
        end_ms=end,
        symbol=symbol,
        order_id=query.get("orderId") or None,
        exec_type=query.get("execType") or None,
    )
    page, cursor = _paginate(
        rows,
        lambda r: f"{r['execTime']}_{r['execId']}",
        query.get("cursor"),
        limit,
        descending=True,
    )
    return {"list": page, "nextPageCursor": cursor, "category": "linear"}


def _time_window(query: Query, now_ms: int) -> tuple[int, int]:
    """Bybit's execution-list window: neither bound gives the last 7 days, one bound gives the
    7 days from or up to it, both must lie at most 7 days apart."""
    start, end = _optional_ms(query, "startTime"), _optional_ms(query, "endTime")
    if start is None:
        upto = now_ms if end is None else end
        return upto - EXECUTION_WINDOW_MS, upto
    if end is None:
        return start, start + EXECUTION_WINDOW_MS
    if end < start:
        raise ExchangeError(10001, "params error: endTime is before startTime")
    if end - start > EXECUTION_WINDOW_MS:
        raise ExchangeError(
            10001, "params error: the time range between startTime and endTime exceeds 7 days"
        )
    return start, end


def _optional_ms(query: Query, name: str) -> int | None:
    text = query.get(name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ExchangeError(10001, f"params error: {name} must be ms since the epoch") from None


def _wallet_balance(sim: Simulator, account: Account, query: Query) -> object:
    expected = account.wallet_account_type
    if query.get("accountType") != expected:
        raise ExchangeError(10001, f"accountType only support {expected}.")
    row = sim.exchange.wallet_row(account)
    coins = query.get("coin")
    if coins is not None and "USDT" not in coins.split(","):
        row["coin"] = []
    return {"list": [row]}


def _account_info(sim: Simulator, account: Account, query: Query) -> object:
    return {
        # docs/bybit-v5.md §2.3: 1 classic (our standard accounts), 5 UTA 2.0.
        "unifiedMarginStatus": 5 if account.account_type == "unified" else 1,
        "marginMode": "REGULAR_MARGIN",
        "isMasterTrader": False,
        "spotHedgingStatus": "OFF",
        "updatedTime": str(sim.exchange.now_ms()),
        "dcpStatus": "OFF",
        "timeWindow": 0,
        "smpGroup": 0,
    }


def _query_api(sim: Simulator, account: Account, query: Query) -> object:
    info = account_info_row(account)
    key = account.key
    now = datetime.fromtimestamp(sim.clock.now_ms() / 1000, UTC)
    created = key.created_at or now
    return {
        "id": str(account.uid),
        "note": info["note"],
        "apiKey": info["apiKey"],
        "readOnly": 1 if key.read_only else 0,
        "secret": "",
        "permissions": {group: list(perms) for group, perms in key.permissions.items()},
        "ips": list(key.ips),
        "type": 1,
        # Bybit: days left before expiry, -1 for a key that never expires
        "deadlineDay": -1 if key.expires_at is None else max((key.expires_at - now).days, 0),
        "expiredAt": "" if key.expires_at is None else _iso(key.expires_at),
        "createdAt": _iso(created),
        "unified": 0,
        "uta": 1 if account.account_type == "unified" else 0,
        "userID": info["userID"],
        "inviterID": 0,
        "vipLevel": "No VIP",
        "mktMakerLevel": "0",
        "affiliateID": 0,
        "rsaPublicKey": "",
        "isMaster": info["isMaster"],
        "parentUid": info["parentUid"],
    }


def _iso(moment: datetime) -> str:
    """Bybit's form: `2026-01-28T09:27:36Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- REST: public ----------------------------------------------------------------------------------

PublicHandler = Callable[[Simulator, Query], object]


def _public(endpoint: str, handler: PublicHandler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        sim = request.app[SIM_KEY]
        now = sim.clock.now_ms()
        if (refusal := _ip_gate(sim, request, now)) is not None:
            return refusal
        try:
            result = handler(sim, request.rel_url.query)
        except ExchangeError as exc:
            return _reply(endpoint, now, {}, exc.code, exc.message)
        return _reply(endpoint, now, result)

    return handle


def _risk_limit(sim: Simulator, query: Query) -> object:
    _category(query)
    symbol = query.get("symbol")
    if symbol:
        return {
            "category": "linear",
            "list": sim.exchange.risk_limit_rows(symbol),
            "nextPageCursor": "",
        }
    symbols = sorted(sim.exchange.markets)
    page, cursor = _paginate(
        symbols, lambda s: s, query.get("cursor"), RISK_LIMIT_SYMBOLS_PER_PAGE, descending=False
    )
    rows = [row for s in page for row in sim.exchange.risk_limit_rows(s)]
    return {"category": "linear", "list": rows, "nextPageCursor": cursor}


def _tickers(sim: Simulator, query: Query) -> object:
    _category(query)
    symbol = query.get("symbol")
    symbols = [symbol] if symbol else sorted(sim.exchange.markets)
    return {"category": "linear", "list": [sim.exchange.ticker_row(s) for s in symbols]}


def _market_time(sim: Simulator, query: Query) -> object:
    now = sim.clock.now_ms()
    return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}


# -- WebSocket -------------------------------------------------------------------------------------


def _idle_timeout(request: web.Request, default: float) -> float:
    text = request.rel_url.query.get("max_active_time")
    match = _MAX_ACTIVE.match(text or "")
    if match is None:
        return default
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1)
    return float(min(max(seconds, 30), 600))


async def _serve_ws(
    request: web.Request,
    kind: Literal["private", "public"],
    on_message: Callable[[Simulator, _Connection, Row], None],
) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    if not sim.ws_connects.hit(request.path, "connect", sim.clock.now_ms()).allowed:
        # Bybit's exact reply past 500 connects per 5 minutes is undocumented; 429 is ours.
        metrics.WS_CONNECTS_REFUSED.labels(kind).inc()
        return web.Response(status=429, text="too many new connections")
    idle_s = _idle_timeout(request, sim.options.idle_timeout_s)
    # Protocol pings are answered by hand so a silenced link ignores them too (pybit relies
    # on protocol-level ping/pong as well as JSON pings).
    ws = web.WebSocketResponse(autoping=False)
    await ws.prepare(request)
    transport = request.transport
    conn = _Connection(ws, kind, transport, sim.options.send_queue_size)
    sim.connections.add(conn)
    metrics.WS_CONNECTIONS.labels(kind).inc()
    writer = asyncio.create_task(conn.write_loop())
    loop = asyncio.get_running_loop()
    last_ping = loop.time()
    try:
        while not conn.closing:
            remaining = last_ping + idle_s - loop.time()
            if remaining <= 0:
                # No ping within the idle window: Bybit closes the link (docs/bybit-v5.md §3.4).
                conn.close_after_flush()
                break
            try:
                msg = await ws.receive(timeout=remaining)
            except TimeoutError:
                continue
            if msg.type == WSMsgType.PING:
                if not sim.is_silenced(conn):
                    await ws.pong(msg.data)
                continue
            if msg.type != WSMsgType.TEXT:
                if msg.type in (
                    WSMsgType.CLOSE,
                    WSMsgType.CLOSING,
                    WSMsgType.CLOSED,
                    WSMsgType.ERROR,
                ):
                    break
                continue
            try:
                request_body = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                request_body = None
            if not isinstance(request_body, dict):
                conn.send(
                    {"success": False, "ret_msg": "Invalid request", "conn_id": conn.id, "op": ""}
                )
                continue
            if request_body.get("op") == "ping":
                last_ping = loop.time()
            on_message(sim, conn, request_body)
    finally:
        sim.connections.discard(conn)
        metrics.WS_CONNECTIONS.labels(kind).dec()
        if not conn.flushing:
            # The client went away or the link was aborted: nothing left worth flushing.
            writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        if not ws.closed:
            await ws.close()
    return ws


async def _private_ws(request: web.Request) -> web.StreamResponse:
    return await _serve_ws(request, "private", _on_private_message)


async def _public_ws(request: web.Request) -> web.StreamResponse:
    return await _serve_ws(request, "public", _on_public_message)


def _private_ack(conn: _Connection, op: str, req_id: object, success: bool, ret_msg: str) -> Row:
    ack: Row = {"success": success, "ret_msg": ret_msg, "op": op, "conn_id": conn.id}
    if req_id is not None:
        ack["req_id"] = req_id
    return ack


def _public_ack(conn: _Connection, op: str, req_id: object, success: bool, ret_msg: str) -> Row:
    return {
        "success": success,
        "ret_msg": ret_msg,
        "conn_id": conn.id,
        "req_id": req_id if req_id is not None else "",
        "op": op,
    }


def _topic_args(request_body: Row) -> list[str] | None:
    args = request_body.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        return None
    return [str(a) for a in args]


def _on_private_message(sim: Simulator, conn: _Connection, request_body: Row) -> None:
    op = str(request_body.get("op", ""))
    req_id = request_body.get("req_id")
    if op == "ping":
        if sim.is_silenced(conn):
            return
        pong: Row = {"op": "pong", "args": [str(sim.clock.now_ms())], "conn_id": conn.id}
        if req_id is not None:
            pong = {"req_id": req_id, **pong}
        conn.send(pong)
    elif op == "auth":
        _private_auth(sim, conn, request_body, req_id)
    elif op in ("subscribe", "unsubscribe"):
        _private_subscribe(sim, conn, op, request_body, req_id)
    else:
        conn.send(_private_ack(conn, op, req_id, False, f"error:unsupported op {op}"))


def _private_auth(sim: Simulator, conn: _Connection, request_body: Row, req_id: object) -> None:
    if conn.account is not None:
        conn.send(_private_ack(conn, "auth", req_id, False, "Repeat auth"))
        return
    try:
        api_key = verify_ws_auth(
            request_body.get("args"), now_ms=sim.clock.now_ms(), secret_for_key=sim.secret_for_key
        )
        account = sim.exchange.account_for_key(api_key)
        assert account is not None
        if sim.faults.take_auth_fail(account.name):
            raise AuthError(10003, "Invalid apikey")
    except AuthError as exc:
        metrics.WS_AUTHS.labels(str(exc.code)).inc()
        conn.send(_private_ack(conn, "auth", req_id, False, exc.message))
        # Bybit closes the socket after a failed auth.
        conn.close_after_flush()
        return
    conn.account = account.name
    metrics.WS_AUTHS.labels("ok").inc()
    conn.send(_private_ack(conn, "auth", req_id, True, ""))


def _private_subscribe(
    sim: Simulator, conn: _Connection, op: str, request_body: Row, req_id: object
) -> None:
    topics = _topic_args(request_body)
    if topics is None:
        conn.send(_private_ack(conn, op, req_id, False, "Params Error"))
        return
    if conn.account is None:
        conn.send(_private_ack(conn, op, req_id, False, "Request not authorized"))
        return
    if op == "unsubscribe":
        conn.topics.difference_update(topics)
        conn.send(_private_ack(conn, op, req_id, True, ""))
        return
    unknown = [t for t in topics if t not in PRIVATE_TOPICS]
    if unknown:
        conn.send(
            _private_ack(conn, op, req_id, False, f"error:handler not found,topic:{unknown[0]}")
        )
        return
    if ALL_IN_ONE_TOPICS.intersection(topics) and CATEGORISED_TOPICS.intersection(topics):
        # docs/bybit-v5.md §3.3: the two forms cannot be mixed in one subscribe request.
        conn.send(
            _private_ack(
                conn,
                op,
                req_id,
                False,
                "error:all-in-one and categorised topics cannot be in the same request",
            )
        )
        return
    conn.topics.update(topics)
    conn.send(_private_ack(conn, op, req_id, True, ""))


def _on_public_message(sim: Simulator, conn: _Connection, request_body: Row) -> None:
    op = str(request_body.get("op", ""))
    req_id = request_body.get("req_id")
    if op == "ping":
        conn.send(_public_ack(conn, "ping", req_id, True, "pong"))
        return
    if op not in ("subscribe", "unsubscribe"):
        conn.send(_public_ack(conn, op, req_id, False, f"error:unsupported op {op}"))
        return
    topics = _topic_args(request_body)
    if topics is None:
        conn.send(_public_ack(conn, op, req_id, False, "Params Error"))
        return
    symbols = []
    for topic in topics:
        symbol = topic.removeprefix("tickers.")
        if not topic.startswith("tickers.") or symbol not in sim.exchange.markets:
            conn.send(
                _public_ack(conn, op, req_id, False, f"error:handler not found,topic:{topic}")
            )
            return
        if op == "subscribe" and topic in conn.topics:
            conn.send(
                _public_ack(conn, op, req_id, False, f"error:already subscribed,topic:{topic}")
            )
            return
        symbols.append(symbol)
    if op == "unsubscribe":
        for symbol in symbols:
            conn.topics.discard(f"tickers.{symbol}")
            conn.tickers.pop(symbol, None)
        conn.send(_public_ack(conn, op, req_id, True, ""))
        return
    conn.send(_public_ack(conn, op, req_id, True, ""))
    now = sim.clock.now_ms()
    for symbol in symbols:
        row = sim.exchange.ticker_row(symbol)
        conn.topics.add(f"tickers.{symbol}")
        conn.tickers[symbol] = row
        metrics.TICKER_MESSAGES.labels("snapshot").inc()
        # The first message of a subscription is the full snapshot; deltas follow.
        conn.send(
            {
                "topic": f"tickers.{symbol}",
                "type": "snapshot",
                "data": row,
                "cs": sim.exchange.market(symbol).ticker_cs,
                "ts": now,
            }
        )


# -- /sim admin ------------------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    body = {
        "status": "ok" if sim.runner_failure is None else "runner_failed",
        "scenario": sim.scenario.name,
        "runId": sim.exchange.run_id,
        "time": sim.clock.now_ms(),
        "cycle": sim.driver.cycle if sim.driver else None,
        "connections": len(sim.connections),
        "runnerFailure": sim.runner_failure,
        "scenarioErrors": list(sim.scenario_errors)[-10:],
    }
    return _json(body, status=200 if sim.runner_failure is None else 503)


async def _ground_truth(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    name = request.rel_url.query.get("account")
    accounts = sim.exchange.accounts
    if name is not None and name not in accounts:
        return _json({"error": f"unknown account {name!r}"}, status=404)
    chosen = [accounts[name]] if name is not None else list(accounts.values())
    return _json(
        {
            "time": sim.clock.now_ms(),
            "runId": sim.exchange.run_id,
            "scenario": sim.scenario.name,
            "marks": {s: str(m.mark_price) for s, m in sim.exchange.markets.items()},
            "accounts": [sim.exchange.ground_truth(a) for a in chosen],
        }
    )


async def _frames(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    query = request.rel_url.query
    try:
        since = int(query.get("since", "0"))
        limit = int(query.get("limit", "1000"))
    except ValueError:
        return _json({"error": "since and limit are integers"}, status=400)
    full = query.get("full") in ("1", "true")
    logged = sim.frame_log.query(
        account=query.get("account"), topic=query.get("topic"), since=since, limit=limit
    )
    return _json(
        {
            "frames": [entry.entry(full=full) for entry in logged],
            "lastIndex": sim.frame_log.last_index,
        }
    )


async def _faults(request: web.Request) -> web.StreamResponse:
    return _json(request.app[SIM_KEY].faults.snapshot())


async def _action(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    try:
        action = ACTION_ADAPTER.validate_python(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        return _json({"ok": False, "error": str(exc)}, status=400)
    if isinstance(action, Fault):
        sim.apply_fault(action)
        return _json({"ok": True, "frames": []})
    try:
        result = sim.exchange.apply(action)
    except ExchangeError as exc:
        return _json({"ok": False, "retCode": exc.code, "error": exc.message}, status=400)
    sim.publish(result.frames)
    if action.action == "set_price":
        sim.publish_tickers()
    return _json({"ok": True, "orderId": result.order_id, "frames": [f.id for f in result.frames]})


async def _fault(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    try:
        fault = Fault.model_validate(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        return _json({"ok": False, "error": str(exc)}, status=400)
    if fault.account is not None and fault.account not in sim.exchange.accounts:
        return _json({"ok": False, "error": f"unknown account {fault.account!r}"}, status=400)
    sim.apply_fault(fault)
    return _json({"ok": True, "faults": sim.faults.snapshot()})
