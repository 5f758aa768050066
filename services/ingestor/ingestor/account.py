"""One account's private stream, kept in step with REST: the resync algorithm lives here.

On every (re)connect: connect, auth, subscribe, and only then take the REST snapshot while
the stream frames that keep arriving are buffered. The snapshot is merged first (stale rows
ignored, vanished orders closed, vanished positions flat), then the buffered frames, then
live frames flow straight through. Subscribing before the snapshot leaves no gap in which a
change could be missed; the ordering rules in ``state`` make the overlap harmless.

A snapshot holds no fills, so the resync also reads the execution history from the
account's execution watermark on (``AccountState.begin_backfill``) and publishes the fills the
stream never delivered, oldest first, before the buffered frames.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
import orjson

from ingestor import metrics, normalize
from ingestor.accounts import AccountConfig, PositionMode
from ingestor.bybit.ratelimit import SlidingWindowLimiter
from ingestor.bybit.rest import (
    EXECUTION_BACKFILL_MAX_ROWS,
    AccountRest,
    BybitAuthError,
    BybitError,
    BybitIpBanned,
    BybitRest,
    Snapshot,
)
from ingestor.bybit.ws import AuthRejected, LinkError, SubscribeRejected, WsLink
from ingestor.publisher import DeadLetter, Item, Publish, Publisher
from ingestor.settings import IngestorSettings
from ingestor.state import AccountState, BackfillWindow, SnapshotEvents, Verdict
from riskwatch_common.clock import Clock
from riskwatch_common.contracts import (
    DataOrigin,
    Event,
    OrderUpdated,
    PositionUpdated,
    StreamStatus,
    new_event_id,
)
from riskwatch_common.logs import excerpt, redact
from riskwatch_common.runtime import Health
from riskwatch_common.topics import ACCOUNT_EVENTS

log = logging.getLogger(__name__)

# Categorised topics in one request and the wallet (which has no categorised form) in a
# second: Bybit refuses all-in-one and categorised topics mixed in one request
# (docs/bybit-v5.md §3.3; the § numbers below are that file's).
PRIVATE_SUBSCRIPTIONS: tuple[tuple[str, ...], ...] = (
    ("position.linear", "order.linear", "execution.linear"),
    ("wallet",),
)
# How far before the execution watermark a backfill starts: a fill can reach the stream
# after a later one, and die with the link while the later one moved the watermark on.
# What the overlap reads again is dropped by execId.
BACKFILL_OVERLAP_MS = 5_000


class LinkStatus(StrEnum):
    STARTING = "starting"
    CONNECTING = "connecting"
    RESYNCING = "resyncing"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    AUTH_FAILED = "auth_failed"


class StatusBoard:
    """Every account's link status, for /readyz, /accounts and the accounts gauge."""

    def __init__(self, health: Health) -> None:
        self.health = health
        self._status: dict[str, LinkStatus] = {}
        self._detail: dict[str, str] = {}
        self._resynced: set[str] = set()
        self._counts: Counter[LinkStatus] = Counter()

    def register(self, account: str) -> None:
        self.health.expect(_check_name(account))
        self.set(account, LinkStatus.STARTING)

    def set(self, account: str, status: LinkStatus, detail: str = "") -> None:
        old = self._status.get(account)
        if old is not None:
            self._counts[old] -= 1
            metrics.ACCOUNTS_BY_STATUS.labels(old.value).set(self._counts[old])
        self._counts[status] += 1
        metrics.ACCOUNTS_BY_STATUS.labels(status.value).set(self._counts[status])
        detail = redact(detail)  # error texts from Bybit can echo the API key
        self._status[account] = status
        self._detail[account] = detail
        if status is LinkStatus.STREAMING:
            self._resynced.add(account)
        # Ready once the account has been resynced at least once; an account whose keys are
        # refused does not hold the whole group back, it is reported instead.
        ok = account in self._resynced or status is LinkStatus.AUTH_FAILED
        self.health.set(_check_name(account), ok, status.value + (f": {detail}" if detail else ""))

    def status(self, account: str) -> LinkStatus:
        return self._status[account]

    def detail(self, account: str) -> str:
        return self._detail.get(account, "")

    def has_streamed(self, account: str) -> bool:
        """Whether the account's stream has been up (resynced) at least once."""
        return account in self._resynced

    def report(self) -> dict[str, dict[str, str]]:
        return {
            name: {"status": s.value, "detail": self._detail.get(name, "")}
            for name, s in self._status.items()
        }


def _check_name(account: str) -> str:
    return f"account:{account}"


class AuthFailure(Exception):
    def __init__(self, where: str, message: str, ret_code: int | None) -> None:
        super().__init__(message)
        self.where = where
        self.ret_code = ret_code


@dataclass
class Deps:
    """What every account stream of a process shares."""

    settings: IngestorSettings
    session: aiohttp.ClientSession  # for WebSockets: a pool without a connection cap
    rest: BybitRest
    publisher: Publisher
    board: StatusBoard
    ws_limiter: Callable[[str], SlidingWindowLimiter]
    handshakes: asyncio.Semaphore
    source: str
    clock: Clock
    monotonic: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random


class AccountStream:
    def __init__(
        self,
        cfg: AccountConfig,
        deps: Deps,
        *,
        on_symbols: Callable[[str, frozenset[str]], None] = lambda _a, _s: None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._d = deps
        self._s = deps.settings
        self.state = AccountState(cfg.name, settle_coins=cfg.settle_coins)
        self.rest = AccountRest(deps.rest, cfg)
        self._on_symbols = on_symbols
        self._symbols: frozenset[str] = frozenset()
        self._buffering = False
        self._buffer: list[tuple[bytes, dict[str, Any]]] = []
        self._link: WsLink | None = None
        self._last_message = deps.monotonic()
        self._failures = 0
        self._auth_reported = False
        self._mode_warned = False
        # Whether consumers were told "connected": "disconnected" is only news after that,
        # not on every failed attempt while the exchange is unreachable.
        self._announced = False
        self.resyncs = 0
        deps.board.register(self.name)
        metrics.SECONDS_SINCE_MESSAGE.labels(self.name).set_function(self.seconds_since_message)

    # ------------------------------------------------------------------ lifecycle

    def seconds_since_message(self) -> float:
        link = self._link
        last = max(self._last_message, link.last_message if link is not None else 0.0)
        return max(0.0, self._d.monotonic() - last)

    async def run(self) -> None:
        """Stream this account until cancelled, reconnecting and resyncing as needed."""
        while True:
            try:
                await self._session()
            except AuthFailure as exc:
                await self._auth_failed(exc)
                await asyncio.sleep(self._s.auth_retry_s)
                continue
            except (LinkError, BybitError, SubscribeRejected, TimeoutError) as exc:
                cause = exc.cause if isinstance(exc, LinkError) else type(exc).__name__
                metrics.LINK_LOST.labels("private", cause).inc()
                log.warning(
                    "account link lost",
                    extra={"account": self.name, "cause": cause, "error": excerpt(str(exc), 300)},
                )
                await self._disconnected(str(exc))
            except Exception as exc:  # supervised: a bug must not end this account's stream
                metrics.LINK_LOST.labels("private", "bug").inc()
                log.exception("account stream failed", extra={"account": self.name})
                await self._disconnected(f"internal error: {exc!r}")
            self._failures += 1
            delay = self._backoff()
            self._d.board.set(self.name, LinkStatus.RECONNECTING, f"retry in {delay:.1f}s")
            metrics.RECONNECTS.labels("private").inc()
            await asyncio.sleep(delay)

    def _backoff(self) -> float:
        cap: float = min(
            self._s.reconnect_max_s, self._s.reconnect_min_s * 2.0 ** (self._failures - 1)
        )
        return cap / 2 + self._d.rng() * cap / 2  # jitter spreads a whole group's reconnects

    async def _session(self) -> None:
        s = self._s
        self._d.board.set(self.name, LinkStatus.CONNECTING)
        link = WsLink(
            self._d.session,
            self.cfg.endpoints.ws_private_url,
            ping_interval_s=s.ping_interval_s,
            pong_timeout_s=s.pong_timeout_s,
            monotonic=self._d.monotonic,
        )
        handshake = self._d.handshakes
        await handshake.acquire()
        holding = True
        self._link = link
        try:
            await self._d.ws_limiter(self.cfg.endpoints.ws_private_url).acquire()
            await link.connect(s.auth_timeout_s)
            creds = self.cfg.credentials
            expires = normalize.to_ms(self._d.clock()) + int(s.auth_expires_s * 1000)
            try:
                await link.authenticate(
                    creds.api_key.get_secret_value(),
                    creds.api_secret.get_secret_value(),
                    expires_ms=expires,
                    timeout_s=s.auth_timeout_s,
                )
            except AuthRejected as exc:
                raise AuthFailure("ws", f"websocket auth rejected: {exc}", exc.ret_code) from None
            await link.subscribe(PRIVATE_SUBSCRIPTIONS, timeout_s=s.auth_timeout_s)
            await self._status_event(StreamStatus.CONNECTED)
            self._announced = True
            self._buffer.clear()
            self._buffering = True
            self._d.board.set(self.name, LinkStatus.RESYNCING)
            reader = asyncio.ensure_future(self._read(link))
            try:
                await _race(reader, self._connect_resync())
                handshake.release()
                holding = False
                self._failures = 0
                self._auth_reported = False
                self._d.board.set(self.name, LinkStatus.STREAMING)
                periodic = asyncio.ensure_future(self._periodic())
                try:
                    await _race(reader, periodic)
                finally:
                    periodic.cancel()
                    await asyncio.gather(periodic, return_exceptions=True)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                self._buffering = False
                self._buffer.clear()
        finally:
            if holding:
                handshake.release()
            self._link = None
            self._last_message = link.last_message or self._last_message
            await link.close()

    async def _read(self, link: WsLink) -> None:
        async for raw, frame in link.frames():
            if self._buffering:
                self._buffer.append((raw, frame))
                continue
            for item in self.process(raw, frame):
                await self._d.publisher.put(item)
        raise LinkError("closed", "stream ended")

    # ------------------------------------------------------------------ frames

    def process(self, raw: bytes, frame: dict[str, Any]) -> list[Item]:
        """Normalize one stream frame and keep what is new. Pure apart from metrics."""
        try:
            if not frame:
                raise normalize.FrameError("malformed_frame", "not a JSON object")
            norm = normalize.private_frame(
                frame, account=self.name, source=self._d.source, produced_at=self._d.clock()
            )
        except normalize.FrameError as exc:
            metrics.FRAMES_RECEIVED.labels("invalid").inc()
            log.warning(
                "frame dead-lettered",
                extra={"account": self.name, "reason": exc.reason, "error": str(exc)},
            )
            return [self._dead_letter(raw, exc.reason, str(exc))]
        metrics.frames_received(norm.kind).inc()
        out: list[Item] = []
        touched = False
        for ev in norm.events:
            verdict = self.state.apply(ev, time_ms=norm.creation_ms)
            if verdict is Verdict.ACCEPTED:
                out.append(Publish(ACCOUNT_EVENTS, self.name, ev, norm.creation_ms))
                touched = True
                if isinstance(ev, PositionUpdated):
                    self._check_position_mode(ev)
            else:
                metrics.rows_dropped(norm.kind, verdict.value).inc()
        if norm.skipped_rows:
            metrics.ROWS_DROPPED.labels(norm.kind, "category").inc(norm.skipped_rows)
        if norm.bad_rows:
            detail = "; ".join(f"row {i}: {err}" for i, err in norm.bad_rows)
            log.warning(
                "frame rows dead-lettered",
                extra={"account": self.name, "error": excerpt(detail, 500)},
            )
            out.append(self._dead_letter(raw, "malformed_frame", detail))
        if touched:
            self._check_symbols()
        return out

    def _check_position_mode(self, ev: PositionUpdated) -> None:
        # positionIdx 0 is one-way, 1/2 hedge (§2.1): a mismatch means the account file is
        # wrong about the account, and exposure per side would be read the wrong way.
        one_way = self.cfg.position_mode is PositionMode.ONE_WAY
        if (ev.position_idx == 0) != one_way and not self._mode_warned:
            self._mode_warned = True
            metrics.POSITION_MODE_MISMATCHES.inc()
            log.warning(
                "position mode differs from the accounts file",
                extra={
                    "account": self.name,
                    "configured": self.cfg.position_mode.value,
                    "symbol": ev.symbol,
                    "position_idx": ev.position_idx,
                },
            )

    def _dead_letter(self, raw: bytes, reason: str, error: str) -> DeadLetter:
        return DeadLetter(ACCOUNT_EVENTS, raw, self.name, error, f"ws:{self.name}", reason)

    def _check_symbols(self) -> None:
        if not self.state.symbols_changed:
            return
        self.state.symbols_changed = False
        self._symbols = self.state.symbols()
        self._on_symbols(self.name, self._symbols)

    # ------------------------------------------------------------------ resync

    async def _connect_resync(self) -> None:
        """The resync after connecting. While Bybit bans the IP (HTTP 403) no REST call can
        succeed: keep the link, let live frames through and resync when the ban is over,
        rather than reconnect into the ban again and again (each reconnect also spends one of
        Bybit's 500 new connections per 5 minutes)."""
        while True:
            try:
                await self._resync("connect")
                return
            except BybitIpBanned as exc:
                wait_s = max(self._d.rest.ip_ban_remaining_s(), 0.1)
                self._d.board.set(
                    self.name,
                    LinkStatus.RESYNCING,
                    f"REST paused by a Bybit IP ban; resync in {wait_s:.0f}s",
                )
                log.error(
                    "account resync waits for the IP ban to lift",
                    extra={"account": self.name, "wait_s": round(wait_s, 1), "error": str(exc)},
                )
                await asyncio.sleep(wait_s)

    async def _resync(self, trigger: str) -> None:
        """REST snapshot and execution history merged with the buffered stream.

        Buffering must already be on for a connect. If it fails, the buffered frames are
        still applied and the backfill stays pending, so the next resync reaches back to
        where this one started.
        """
        self._buffering = True
        window = self._backfill_window()
        try:
            snap = await self.rest.snapshot(
                executions_from_ms=window.start_ms if window is not None else None
            )
        except BybitAuthError as exc:
            metrics.RESYNCS.labels(trigger, "auth_failed").inc()
            raise AuthFailure("rest", str(exc), exc.ret_code) from None
        except Exception as exc:
            outcome = "ip_banned" if isinstance(exc, BybitIpBanned) else "failed"
            metrics.RESYNCS.labels(trigger, outcome).inc()
            # The buffered frames are real updates: apply them rather than lose them.
            await self._drain_buffer()
            raise
        correlation = f"resync:{new_event_id()}"
        meta = normalize.Meta(
            self.name, self._d.source, self._d.clock(), correlation, DataOrigin.SNAPSHOT
        )
        items: list[Item] = []
        backfilled = self._apply_backfill(snap, meta, items)
        positions, bad_p = normalize.snapshot_events(snap.positions, normalize.position_event, meta)
        orders, bad_o = normalize.snapshot_events(snap.orders, normalize.order_event, meta)
        closed_rows = snap.closed_orders or []
        closed, bad_c = normalize.snapshot_events(closed_rows, normalize.order_event, meta)
        wallet = None
        if snap.wallet is not None:
            try:
                wallet = normalize.wallet_event(
                    snap.wallet,
                    meta,
                    time_ms=snap.wallet_time_ms,
                    identity=f"rest:{snap.wallet_time_ms}",
                )
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                items.append(self._rest_dead_letter(snap.wallet, f"wallet: {exc}"))
        for rows, bad in ((snap.positions, bad_p), (snap.orders, bad_o), (closed_rows, bad_c)):
            for i, err in bad:
                items.append(self._rest_dead_letter(rows[i], err))
        before_open = set(self.state.open_orders)
        before_held = {k for k, p in self.state.positions.items() if p.size != 0}
        events = self.state.apply_snapshot(
            SnapshotEvents(
                [p for p in positions if isinstance(p, PositionUpdated)],
                [o for o in orders if isinstance(o, OrderUpdated)],
                wallet,
                snap.wallet_time_ms,
                # Only those closed inside the backfill window: the older ones (Bybit keeps
                # 500) were seen by the stream or predate this process.
                [
                    o
                    for o in closed
                    if isinstance(o, OrderUpdated)
                    and window is not None
                    and normalize.to_ms(o.updated_at) >= window.start_ms
                ],
            ),
            meta,
            on_verdict=_count_snapshot_verdict,
        )
        self._count_corrections(events, before_open, before_held)
        for pos in positions:
            if isinstance(pos, PositionUpdated):
                self._check_position_mode(pos)
        # The fills first: they happened before the state the snapshot shows.
        items.extend(Publish(ACCOUNT_EVENTS, self.name, ev) for ev in backfilled)
        items.extend(Publish(ACCOUNT_EVENTS, self.name, ev) for ev in events)
        for item in items:
            await self._d.publisher.put(item)
        await self._drain_buffer()
        self._check_symbols()
        self.resyncs += 1
        metrics.RESYNCS.labels(trigger, "ok").inc()
        if trigger == "connect":
            await self._status_event(StreamStatus.RESYNCED, correlation_id=correlation)
        log.info(
            "account resynced",
            extra={
                "account": self.name,
                "trigger": trigger,
                "positions": len(snap.positions),
                "orders": len(snap.orders),
                "published": len(events),
                "executions_backfilled": len(backfilled),
            },
        )

    def _backfill_window(self) -> BackfillWindow | None:
        """Where this resync reads the execution history from; None: not at all."""
        state = self.state
        now_ms = normalize.to_ms(self._d.clock())
        if state.execution_watermark_ms is None:
            # The process's first connect to this account. The stream is subscribed, so
            # from now on every fill arrives by stream or by a later backfill; fills from
            # before are read only as far back as configured.
            lookback_ms = int(self._s.execution_backfill_on_start_s * 1000)
            state.executions_known_until(now_ms - lookback_ms)
            if lookback_ms == 0:
                return None
        window = state.begin_backfill(now_ms=now_ms, overlap_ms=BACKFILL_OVERLAP_MS)
        if window is not None and window.clamped:
            log.warning(
                "execution backfill clamped to the 7 days Bybit keeps; older fills are lost",
                extra={
                    "account": self.name,
                    "wanted_ms": window.wanted_ms,
                    "start_ms": window.start_ms,
                },
            )
        return window

    def _apply_backfill(
        self, snap: Snapshot, meta: normalize.Meta, dead_letters: list[Item]
    ) -> list[Event]:
        """The fetched fills the stream has not delivered, oldest first (Bybit lists them
        newest first); rows that do not normalize go to ``dead_letters``."""
        if snap.executions is None:
            return []
        if len(snap.executions) >= EXECUTION_BACKFILL_MAX_ROWS:
            # Only the newest fills were read (Bybit lists newest first): the state is still
            # right (the snapshot), but older missed fills will never be reported. Loudly.
            metrics.EXECUTION_BACKFILLS_TRUNCATED.inc()
            log.error(
                "execution backfill truncated: older missed fills are not reported",
                extra={"account": self.name, "read": len(snap.executions)},
            )
        rows = snap.executions[::-1]
        executions, bad = normalize.snapshot_events(rows, normalize.execution_event, meta)
        for i, err in bad:
            dead_letters.append(self._rest_dead_letter(rows[i], f"execution: {err}"))
        accepted: list[Event] = []
        for ev in executions:
            verdict = self.state.apply(ev)
            _count_snapshot_verdict("execution", verdict)
            if verdict is Verdict.ACCEPTED:
                accepted.append(ev)
        self.state.end_backfill(snap.executions_time_ms)
        if accepted:
            metrics.EXECUTIONS_BACKFILLED.inc(len(accepted))
        return accepted

    async def _drain_buffer(self) -> None:
        """Apply the frames buffered during a snapshot, then let live frames through.

        The flag flips with no await between the last empty check and the flip, so no frame
        can slip between the buffer and the live path.
        """
        while self._buffer:
            pending, self._buffer = self._buffer, []
            for raw, frame in pending:
                for item in self.process(raw, frame):
                    await self._d.publisher.put(item)
        self._buffering = False

    def _count_corrections(
        self, events: list[Event], before_open: set[str], before_held: set[tuple[str, int]]
    ) -> None:
        for ev in events:
            if isinstance(ev, OrderUpdated) and ev.order_id in before_open:
                if ev.order_status == "Deactivated" and ev.origin is DataOrigin.SNAPSHOT:
                    metrics.RESYNC_CORRECTIONS.labels("order_closed").inc()
            elif (
                isinstance(ev, PositionUpdated)
                and ev.size == 0
                and (ev.symbol, ev.position_idx) in before_held
            ):
                metrics.RESYNC_CORRECTIONS.labels("position_flat").inc()

    def _rest_dead_letter(self, row: Any, error: str) -> DeadLetter:
        raw = orjson.dumps(row, default=str)
        return DeadLetter(
            ACCOUNT_EVENTS, raw, self.name, error, f"rest:{self.name}", "malformed_row"
        )

    # ------------------------------------------------------------------ periodic REST

    async def _periodic(self) -> None:
        """Wallet refresh (the wallet stream ignores price moves) and the drift check."""
        s = self._s
        mono = self._d.monotonic
        # Spread a group's polls over the interval instead of firing them all at once.
        next_wallet = mono() + s.wallet_refresh_s * (0.5 + self._d.rng() / 2)
        next_drift = (
            mono() + s.drift_check_s * (0.5 + self._d.rng() / 2) if s.drift_check_s else None
        )
        while True:
            due = next_wallet if next_drift is None else min(next_wallet, next_drift)
            await asyncio.sleep(max(0.0, due - mono()))
            if (banned_s := self._d.rest.ip_ban_remaining_s()) > 0:
                # No REST until Bybit's IP ban is over; the stream goes on meanwhile, and a
                # drift resync would hold it in the buffer for the whole ban.
                await asyncio.sleep(banned_s)
                continue
            try:
                if next_drift is not None and mono() >= next_drift:
                    await self._resync("drift")
                    next_drift = mono() + s.drift_check_s
                    next_wallet = mono() + s.wallet_refresh_s
                elif mono() >= next_wallet:
                    await self._refresh_wallet()
                    next_wallet = mono() + s.wallet_refresh_s
            except BybitAuthError as exc:
                raise AuthFailure("rest", str(exc), exc.ret_code) from None
            except BybitError as exc:
                # A missed poll is recovered by the next one; the stream is still live.
                log.warning(
                    "periodic REST call failed", extra={"account": self.name, "error": str(exc)}
                )
                next_wallet = mono() + s.wallet_refresh_s
                if next_drift is not None and next_drift <= mono():
                    next_drift = next_wallet  # a failed drift check is retried, not spun on

    async def _refresh_wallet(self) -> None:
        row, time_ms = await self.rest.wallet()
        if row is None:
            return
        meta = normalize.Meta(
            self.name,
            self._d.source,
            self._d.clock(),
            f"wallet:{new_event_id()}",
            DataOrigin.SNAPSHOT,
        )
        try:
            ev = normalize.wallet_event(row, meta, time_ms=time_ms, identity=f"rest:{time_ms}")
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            await self._d.publisher.put(self._rest_dead_letter(row, f"wallet: {exc}"))
            return
        verdict = self.state.apply_wallet(ev, time_ms)
        if verdict is Verdict.ACCEPTED:
            await self._d.publisher.put(Publish(ACCOUNT_EVENTS, self.name, ev))
        else:
            metrics.ROWS_DROPPED.labels("wallet_poll", verdict.value).inc()

    # ------------------------------------------------------------------ status

    async def _auth_failed(self, exc: AuthFailure) -> None:
        metrics.AUTH_FAILURES.labels(exc.where).inc()
        code = f" (retCode {exc.ret_code})" if exc.ret_code is not None else ""
        detail = f"{exc}{code}; retrying in {self._s.auth_retry_s:.0f}s"
        self._d.board.set(self.name, LinkStatus.AUTH_FAILED, detail)
        log.error(
            "account credentials rejected",
            extra={
                "account": self.name,
                "where": exc.where,
                "ret_code": exc.ret_code,
                "error": str(exc),
            },
        )
        if not self._auth_reported:
            # Once per failure episode: a retry every few minutes is not news downstream.
            self._auth_reported = True
            await self._status_event(StreamStatus.AUTH_FAILED, str(exc), ret_code=exc.ret_code)

    async def _disconnected(self, reason: str) -> None:
        if self._announced:
            self._announced = False
            await self._status_event(StreamStatus.DISCONNECTED, reason)

    async def _status_event(
        self,
        status: StreamStatus,
        reason: str = "",
        *,
        ret_code: int | None = None,
        correlation_id: str | None = None,
    ) -> None:
        ev = normalize.status_event(
            self.name,
            status,
            now=self._d.clock(),
            source=self._d.source,
            # Bybit's 10004 text echoes the signed string, key included: Kafka is not a log,
            # but the same secrets stay out of it.
            reason=redact(reason),
            ret_code=ret_code,
            correlation_id=correlation_id,
        )
        await self._d.publisher.put(Publish(ACCOUNT_EVENTS, self.name, ev))


def _count_snapshot_verdict(kind: str, verdict: Verdict) -> None:
    if verdict is not Verdict.ACCEPTED:
        metrics.ROWS_DROPPED.labels(f"{kind}_snapshot", verdict.value).inc()


async def _race(reader: asyncio.Future[None], other: Any) -> None:
    """Run ``other`` while ``reader`` streams; whichever fails first ends both.

    Returns when ``other`` completes normally (the reader keeps running).
    """
    task = asyncio.ensure_future(other)
    try:
        done, _ = await asyncio.wait({reader, task}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    if task in done:
        task.result()
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    reader.result()
    raise LinkError("closed", "stream ended")
