"""Market data for a group: mark prices from one public link, and risk-limit tier tables.

The ticker topic pushes every 100 ms per symbol (docs/bybit-v5.md §3.5); the embedded broker
slows down as topics fill (README.md, "Development"), so ticks are coalesced to at
most one MarkPriceUpdated per symbol per interval before Kafka, the latest price winning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from ingestor import metrics, normalize
from ingestor.accounts import Endpoints
from ingestor.bybit.ratelimit import SlidingWindowLimiter
from ingestor.bybit.rest import BybitError, BybitRest, risk_limit_rows
from ingestor.bybit.ws import LinkError, WsLink
from ingestor.publisher import DeadLetter, Publish, Publisher
from ingestor.settings import IngestorSettings
from ingestor.state import Coalesced, Coalescer, Tick, TickerBook
from ingestor.tiers import Units
from riskwatch_common.clock import Clock
from riskwatch_common.logs import excerpt
from riskwatch_common.topics import MARK_PRICES, RISK_LIMITS

log = logging.getLogger(__name__)

_TIER_RETRY_S = 60.0


class MarketData:
    def __init__(
        self,
        endpoints: Endpoints,
        *,
        settings: IngestorSettings,
        session: aiohttp.ClientSession,
        rest: BybitRest,
        publisher: Publisher,
        ws_limiter: Callable[[str], SlidingWindowLimiter],
        source: str,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.endpoints = endpoints
        self._s = settings
        self._session = session
        self._rest = rest
        self._publisher = publisher
        self._ws_limiter = ws_limiter
        self._source = source
        self._clock = clock
        self._mono = monotonic
        self._rng = rng
        self._by_account: dict[str, frozenset[str]] = {}
        self.desired: frozenset[str] = frozenset()
        self._subscribed: set[str] = set()
        self._requests: dict[str, list[str]] = {}  # req_id -> symbols, until replied
        self._retry_singly: set[str] = set()
        self._changed = asyncio.Event()
        self._book = TickerBook()
        self.coalescer = Coalescer(settings.mark_price_interval_ms / 1000)
        self._tier_next: dict[str, float] = {}
        self._tier_published: dict[str, str] = {}
        self._tier_wake = asyncio.Event()
        self.connected = False
        self._failures = 0

    # ------------------------------------------------------------------ interest

    def set_account_symbols(self, account: str, symbols: frozenset[str]) -> None:
        """An account's held or ordered symbols changed (called synchronously)."""
        self._by_account[account] = symbols
        desired = frozenset().union(*self._by_account.values())
        if desired != self.desired:
            new = desired - self.desired
            self.desired = desired
            self._changed.set()
            if new:
                self._tier_wake.set()

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        tasks = [
            asyncio.ensure_future(self._ticker_loop()),
            asyncio.ensure_future(self._flush_loop()),
            asyncio.ensure_future(self._tier_loop()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def flush_pending(self) -> None:
        """Publish every coalesced price still waiting (shutdown: never drop the last one)."""
        await self._emit(self.coalescer.drain(self._mono()))

    # ------------------------------------------------------------------ tickers

    async def _ticker_loop(self) -> None:
        while True:
            while not self.desired:
                self._changed.clear()
                await self._changed.wait()
            try:
                await self._ticker_session()
            except LinkError as exc:
                metrics.LINK_LOST.labels("public", exc.cause).inc()
                log.warning("public link lost", extra={"cause": exc.cause, "error": str(exc)})
            except Exception:
                metrics.LINK_LOST.labels("public", "bug").inc()
                log.exception("public link failed")
            self.connected = False
            self._failures += 1
            cap = min(self._s.reconnect_max_s, self._s.reconnect_min_s * 2 ** (self._failures - 1))
            metrics.RECONNECTS.labels("public").inc()
            await asyncio.sleep(cap / 2 + self._rng() * cap / 2)

    async def _ticker_session(self) -> None:
        link = WsLink(
            self._session,
            self.endpoints.ws_public_url,
            ping_interval_s=self._s.ping_interval_s,
            pong_timeout_s=self._s.pong_timeout_s,
            monotonic=self._mono,
            on_reply=self._on_reply,
        )
        await self._ws_limiter(self.endpoints.ws_public_url).acquire()
        await link.connect(self._s.auth_timeout_s)
        self._subscribed = set()
        self._requests.clear()
        self._retry_singly.clear()
        self._book.clear()  # the first frame of each subscription is a fresh snapshot
        self.connected = True
        syncer = asyncio.ensure_future(self._sync_subscriptions(link))
        try:
            async for raw, frame in link.frames():
                if syncer.done():
                    syncer.result()
                self._failures = 0
                await self._on_frame(raw, frame)
        finally:
            syncer.cancel()
            await asyncio.gather(syncer, return_exceptions=True)
            await link.close()

    async def _sync_subscriptions(self, link: WsLink) -> None:
        while True:
            self._changed.clear()
            wanted = set(self.desired)
            add = sorted(wanted - self._subscribed - self._retry_singly)
            single = sorted((wanted - self._subscribed) & self._retry_singly)
            drop = sorted(self._subscribed - wanted)
            if drop:
                await link.send_subscription("unsubscribe", [f"tickers.{s}" for s in drop])
                self._subscribed -= set(drop)
                for sym in drop:
                    self._book.forget(sym)
            # Bybit caps a connection's args at 21,000 characters (§3.3); chunks keep each
            # request small, and a refused chunk is retried symbol by symbol (_on_reply).
            for i in range(0, len(add), 10):
                await self._subscribe(link, add[i : i + 10])
            for sym in single:
                await self._subscribe(link, [sym])
            self._retry_singly.clear()
            metrics.SYMBOLS_SUBSCRIBED.set(len(self._subscribed))
            if add or drop or single:
                log.info(
                    "ticker subscriptions changed",
                    extra={"added": add + single, "removed": drop},
                )
            await self._changed.wait()

    async def _subscribe(self, link: WsLink, symbols: list[str]) -> None:
        req_id = await link.send_subscription("subscribe", [f"tickers.{s}" for s in symbols])
        self._requests[req_id] = symbols
        self._subscribed.update(symbols)

    def _on_reply(self, reply: dict[str, Any]) -> None:
        symbols = self._requests.pop(str(reply.get("req_id")), None)
        if reply.get("success") is not False:
            return
        metrics.SUBSCRIPTIONS_REFUSED.inc()
        log.error(
            "public link refused a subscription",
            extra={"symbols": symbols, "error": excerpt(str(reply.get("ret_msg")), 300)},
        )
        if symbols and len(symbols) > 1:
            # One bad symbol refuses the whole request: let the syncer retry them singly.
            self._subscribed.difference_update(symbols)
            self._retry_singly.update(symbols)
            self._changed.set()

    async def _on_frame(self, raw: bytes, frame: dict[str, Any]) -> None:
        try:
            if not frame:
                raise normalize.FrameError("malformed_frame", "not a JSON object")
            tf = normalize.ticker_frame(frame)
        except normalize.FrameError as exc:
            metrics.FRAMES_RECEIVED.labels("invalid").inc()
            await self._publisher.put(
                DeadLetter(MARK_PRICES, raw, "", str(exc), "ws:public", exc.reason)
            )
            return
        metrics.frames_received("tickers").inc()
        if tf.symbol not in self._subscribed:
            return  # a late tick after an unsubscribe
        merged = self._book.apply(tf.symbol, tf.data, snapshot=tf.snapshot)
        if "markPrice" not in merged:
            return
        emitted = self.coalescer.offer(Tick(tf.symbol, merged, tf.ts_ms), self._mono())
        if emitted is not None:
            await self._emit([emitted])

    async def _flush_loop(self) -> None:
        # A quarter interval of lateness at most, for four wakeups per interval.
        step = self.coalescer.interval_s / 4
        while True:
            due_at = self.coalescer.next_due()
            now = self._mono()
            wait = step if due_at is None else min(step, max(0.0, due_at - now))
            await asyncio.sleep(wait)
            await self._emit(self.coalescer.due(self._mono()))

    async def _emit(self, items: list[Coalesced]) -> None:
        if not items:
            return
        metrics.TICKS_COALESCED.inc(Coalescer.folded(items))
        now = self._clock()
        for c in items:
            try:
                ev = normalize.mark_price_event(
                    c.tick.symbol,
                    c.tick.ticker,
                    ts_ms=c.tick.ts_ms,
                    ticks=c.ticks,
                    produced_at=now,
                    source=self._source,
                )
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                raw = orjson.dumps(c.tick.ticker)
                await self._publisher.put(
                    DeadLetter(
                        MARK_PRICES, raw, c.tick.symbol, str(exc), "ws:public", "malformed_frame"
                    )
                )
                continue
            await self._publisher.put(
                Publish(MARK_PRICES, c.tick.symbol, ev, c.tick.ts_ms, kind="mark_price")
            )

    # ------------------------------------------------------------------ risk limits

    async def _tier_loop(self) -> None:
        while True:
            now = self._mono()
            due = sorted(s for s in self.desired if self._tier_next.get(s, 0.0) <= now)
            for symbol in due:
                await self.refresh_tiers(symbol)
            upcoming = [self._tier_next[s] for s in self.desired if s in self._tier_next]
            wait = max(0.0, min(upcoming) - self._mono()) if upcoming else None
            self._tier_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tier_wake.wait(), wait)

    async def refresh_tiers(self, symbol: str) -> bool:
        """Fetch one symbol's tier table; publish it if it changed. True when fetched."""
        try:
            rows = await risk_limit_rows(self._rest, self.endpoints.market_rest_url, symbol)
            table = normalize.risk_limit_table(
                symbol, rows, produced_at=self._clock(), source=self._source
            )
        except (BybitError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
            metrics.RISK_LIMIT_FETCHES.labels("failed").inc()
            log.warning("risk-limit table not loaded", extra={"symbol": symbol, "error": str(exc)})
            self._tier_next[symbol] = self._mono() + _TIER_RETRY_S
            return False
        self._tier_next[symbol] = self._mono() + self._s.risk_limit_refresh_s
        metrics.RISK_LIMIT_FETCHES.labels("ok").inc()
        if table.units is Units.PERCENT:
            metrics.RISK_LIMIT_PERCENT_UNITS.inc()
            log.info("risk-limit table came in percent; converted", extra={"symbol": symbol})
        for mm in table.mismatches:
            metrics.RISK_LIMIT_MISMATCHES.labels(symbol).inc()
            log.warning(
                "risk-limit deduction differs from the formula",
                extra={
                    "symbol": symbol,
                    "tier": mm.tier_id,
                    "published": str(mm.published),
                    "expected": str(mm.expected),
                },
            )
        if self._tier_published.get(symbol) == table.event.event_id:
            return True
        self._tier_published[symbol] = table.event.event_id
        await self._publisher.put(Publish(RISK_LIMITS, symbol, table.event))
        return True
