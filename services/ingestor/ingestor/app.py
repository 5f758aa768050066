"""Composition root: one process serves one account group.

Builds the real adapters (Kafka producer, HTTP session, Bybit REST and WebSocket) unless a
test hands in replacements, runs every account stream, the market-data feed and the
publisher, and on shutdown stops reading first, then drains the queue into Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ingestor import metrics
from ingestor.account import AccountStream, Deps, LinkStatus, StatusBoard
from ingestor.accounts import GroupConfig, load_group
from ingestor.bybit.ratelimit import (
    REST_REQUESTS_PER_IP_5S,
    WS_CONNECTS_PER_IP_5MIN,
    SlidingWindowLimiter,
    ip_share,
)
from ingestor.bybit.rest import BybitRest
from ingestor.linkwatch import AccountView, LinkWatch, run_heartbeats, run_key_checks
from ingestor.market import MarketData
from ingestor.publisher import Observer, Publish, Publisher
from ingestor.settings import IngestorSettings
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import AccountEvent
from riskwatch_common.kafka import BrokerProbe, Producer, ensure_topics
from riskwatch_common.runtime import Health, HttpServer, json_response, supervise
from riskwatch_common.topics import ACCOUNT_EVENTS, MARK_PRICES, RISK_LIMITS, dead_letter_of

log = logging.getLogger(__name__)

SERVICE = "ingestor"
_TOPICS = (ACCOUNT_EVENTS, MARK_PRICES, RISK_LIMITS)
_SHUTDOWN_DRAIN_S = 10.0
_REST_CONNECTIONS = 64


def ip_budgets(settings: IngestorSettings, group: GroupConfig) -> tuple[int, int]:
    """REST requests per ``rest_ip_window_s`` and new WebSockets per ``ws_connect_window_s``.

    The settings' values when set; otherwise this group's share of what one egress IP may
    spend, divided among the groups of the accounts file that share the IP, so adding a
    group lowers every group's budget by itself.
    """
    peers = group.egress_peers
    rest = settings.rest_ip_requests or ip_share(
        int(REST_REQUESTS_PER_IP_5S * settings.rest_ip_window_s / 5.0), peers
    )
    ws = settings.ws_connects_per_window or ip_share(
        int(WS_CONNECTS_PER_IP_5MIN * settings.ws_connect_window_s / 300.0), peers
    )
    return rest, ws


class Ingestor:
    """Serves one account group. Tests may hand in ``producer`` (started by them), ``session``
    (used for both REST and WebSockets), ``clock`` and ``monotonic``."""

    def __init__(
        self,
        settings: IngestorSettings,
        *,
        group: GroupConfig | None = None,
        producer: Producer | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        serve_http: bool = True,
        create_topics: bool = True,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.group = group or load_group(settings.accounts_file, settings.group)
        self._own_producer = producer is None
        self.producer = producer or Producer(
            settings.kafka, service=SERVICE, client_id=f"{SERVICE}-{self.group.name}"
        )
        self._own_session = session is None
        self._session = session
        self._clock = clock
        self._mono = monotonic
        self._serve_http = serve_http
        self._create_topics = create_topics
        self.source = f"{SERVICE}/{self.group.name}"
        self.health = Health()
        self.health.expect("producer", "broker")
        self.board = StatusBoard(self.health)
        self.publisher = Publisher(
            self.producer,
            queue_size=settings.queue_size,
            batch_max=settings.publish_batch_max,
            monotonic=monotonic,
            observer=observer,
        )
        self.rest_ip_budget, self.ws_connect_budget = ip_budgets(settings, self.group)
        self._ip_limiter = SlidingWindowLimiter(
            self.rest_ip_budget, settings.rest_ip_window_s, monotonic=monotonic
        )
        self._ws_limiters: dict[str, SlidingWindowLimiter] = {}
        self.streams: list[AccountStream] = []
        self.linkwatch = LinkWatch(
            group=self.group.name,
            source=self.source,
            link_down_after=timedelta(seconds=settings.link_down_alert_s),
            key_warn_before=timedelta(days=settings.key_expiry_warn_days),
            clock=clock,
        )
        self.market: MarketData | None = None
        self.http: HttpServer | None = None
        self.started = asyncio.Event()

    def _ws_limiter(self, url: str) -> SlidingWindowLimiter:
        # Bybit counts new connections per WebSocket domain (docs/bybit-v5.md §3.9).
        host = urlsplit(url).netloc
        limiter = self._ws_limiters.get(host)
        if limiter is None:
            limiter = self._ws_limiters[host] = SlidingWindowLimiter(
                self.ws_connect_budget,
                self.settings.ws_connect_window_s,
                monotonic=self._mono,
            )
        return limiter

    async def run(self) -> None:
        """Serve the group until cancelled, then shut down in order."""
        s = self.settings
        # Two pools: every WebSocket holds its connection for life, so under aiohttp's
        # default cap of 100 connections per session the 101st account (and every REST
        # call behind it) would wait for a slot forever. REST keeps a bounded pool.
        ws_session = self._session or aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        session = self._session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=_REST_CONNECTIONS)
        )
        tasks: list[asyncio.Future[None]] = []
        publisher_task: asyncio.Future[None] | None = None
        try:
            if self._serve_http:
                self.http = HttpServer(
                    s.http_host,
                    s.http_port,
                    self.health,
                    routes=[web.get("/accounts", self._accounts)],
                )
                await self.http.start()
            await self._start_producer()
            rest = BybitRest(
                session,
                ip_limiter=self._ip_limiter,
                recv_window_ms=s.recv_window_ms,
                timeout_s=s.rest_timeout_s,
                ip_ban_s=s.rest_ip_ban_s,
            )
            metrics.REST_IP_BAN_SECONDS.set_function(rest.ip_ban_remaining_s)
            self.market = MarketData(
                self.group.market,
                settings=s,
                session=ws_session,
                rest=rest,
                publisher=self.publisher,
                ws_limiter=self._ws_limiter,
                source=self.source,
                clock=self._clock,
                monotonic=self._mono,
            )
            deps = Deps(
                settings=s,
                session=ws_session,
                rest=rest,
                publisher=self.publisher,
                board=self.board,
                ws_limiter=self._ws_limiter,
                handshakes=asyncio.Semaphore(s.max_concurrent_resyncs),
                source=self.source,
                clock=self._clock,
                monotonic=self._mono,
                rng=random.random,
            )
            self.streams = [
                AccountStream(cfg, deps, on_symbols=self.market.set_account_symbols)
                for cfg in self.group.accounts
            ]
            # Supervised: a loop that raises or ends fails the service (/healthz 503, exit 1)
            # instead of leaving an ingestor that looks up and reads nothing.
            publisher_task = supervise(self.publisher.run(), "publisher", self.health)
            tasks = [
                supervise(self.market.run(), "market data", self.health),
                supervise(
                    BrokerProbe(s.kafka, self._broker_check).run(), "broker probe", self.health
                ),
                supervise(
                    self.publisher.watch(self.health, s.publish_stuck_s),
                    "publisher watch",
                    self.health,
                ),
                supervise(
                    run_heartbeats(self.linkwatch, self._views, self._emit, s.heartbeat_interval_s),
                    "heartbeats",
                    self.health,
                ),
                supervise(
                    run_key_checks(
                        self.linkwatch,
                        lambda: [
                            (st.name, self.board.has_streamed(st.name), st.rest.key_expiry)
                            for st in self.streams
                        ],
                        self._emit,
                        s.key_check_interval_s,
                        self._mono,
                    ),
                    "api key checks",
                    self.health,
                ),
            ]
            tasks += [supervise(st.run(), f"account {st.name}", self.health) for st in self.streams]
            log.info(
                "ingestor started",
                extra={
                    "group": self.group.name,
                    "accounts": len(self.streams),
                    # what this process may spend of the egress IP's Bybit limits
                    "rest_ip_budget": self.rest_ip_budget,
                    "ws_connect_budget": self.ws_connect_budget,
                    "groups_sharing_egress": self.group.egress_peers,
                },
            )
            self.started.set()
            done, _ = await asyncio.wait(
                [publisher_task, *tasks], return_when=asyncio.FIRST_COMPLETED
            )
            for t in done:
                t.result()  # account streams and the market feed never end on their own
            raise RuntimeError(f"ingestor stopped: {self.health.failed}")
        finally:
            await self._shutdown(tasks, publisher_task)
            if self._own_session:
                await ws_session.close()
                await session.close()

    def _views(self) -> list[AccountView]:
        now = self._clock()
        views = []
        for st in self.streams:
            status = self.board.status(st.name)
            views.append(
                AccountView(
                    name=st.name,
                    link_up=status is LinkStatus.STREAMING,
                    auth_failed=status is LinkStatus.AUTH_FAILED,
                    last_message_at=now - timedelta(seconds=st.seconds_since_message())
                    if self.board.has_streamed(st.name)
                    else None,
                    detail=self.board.detail(st.name),
                )
            )
        return views

    async def _emit(self, event: AccountEvent) -> None:
        await self.publisher.put(Publish(ACCOUNT_EVENTS, event.account, event))

    def _broker_check(self, ok: bool, detail: str) -> None:
        self.health.set("broker", ok, detail)

    async def _start_producer(self) -> None:
        attempt = 0
        while True:
            try:
                if self._create_topics:
                    specs = [*_TOPICS, *(dead_letter_of(t) for t in _TOPICS)]
                    await asyncio.wait_for(ensure_topics(self.settings.kafka, specs), 30)
                if self._own_producer:
                    await self.producer.start()
                break
            except Exception as exc:
                attempt += 1
                delay = min(30.0, 0.5 * 2**attempt)
                self.health.set("producer", False, f"broker unavailable: {exc!r}")
                log.warning(
                    "kafka not reachable, retrying", extra={"delay_s": delay, "error": repr(exc)}
                )
                await asyncio.sleep(delay)
        self.health.set("producer", True, "connected")

    async def _shutdown(
        self,
        tasks: list[asyncio.Future[None]],
        publisher_task: asyncio.Future[None] | None,
    ) -> None:
        # Stop reading first (readers close their links), then publish what is queued.
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if publisher_task is not None and not publisher_task.done():
            with contextlib.suppress(Exception):
                if self.market is not None:
                    await asyncio.wait_for(self.market.flush_pending(), _SHUTDOWN_DRAIN_S)
            if not await self.publisher.drain(_SHUTDOWN_DRAIN_S):
                log.error(
                    "shutdown: queue not drained",
                    extra={"left": self.publisher.queue.qsize()},
                )
            publisher_task.cancel()
            await asyncio.gather(publisher_task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.producer.flush()
        if self._own_producer:
            with contextlib.suppress(Exception):
                await self.producer.stop()
        if self.http is not None:
            await self.http.stop()
        log.info("ingestor stopped", extra={"group": self.group.name})

    async def _accounts(self, _: web.Request) -> web.Response:
        market = self.market
        streams = {st.name: st for st in self.streams}
        report = self.board.report()
        for name, row in report.items():
            st = streams.get(name)
            if st is not None:
                row["seconds_since_message"] = f"{st.seconds_since_message():.1f}"
                row["open_orders"] = str(len(st.state.open_orders))
                row["positions"] = str(sum(1 for p in st.state.positions.values() if p.size))
                row["resyncs"] = str(st.resyncs)
        return json_response(
            {
                "group": self.group.name,
                "ready": self.health.ready,
                "accounts": report,
                "market": {
                    "connected": bool(market and market.connected),
                    "symbols": sorted(market.desired) if market else [],
                },
                "queue_depth": self.publisher.queue.qsize(),
            }
        )


async def main(settings: IngestorSettings, group: GroupConfig | None = None) -> None:
    await Ingestor(settings, group=group).run()
