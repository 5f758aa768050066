"""Fan-out to channels: dedup, one priority queue and worker per channel, pacing, retries.

Each channel has a bounded priority queue and one worker: CRITICAL and HIGH go first, then
the rest in arrival order (an analysis has its alert's severity, so it stays behind it). A
paced channel (Telegram, Slack) sends at most one message per ``min_interval_seconds`` and,
for a Telegram group, at most ``per_minute`` in any 60 s. When a burst leaves several
lower-severity notifications waiting on a paced channel, they go out as one digest message
("14 alerts on 5 accounts: …") instead of one by one, after every HIGH and CRITICAL. A
retryable attempt waits the server's ``retry_after`` (up to a cap; a longer wait fails the
delivery) or a capped exponential backoff with jitter, up to ``max_attempts``. A delivered
(channel, event id) is recorded in the delivery log before it counts, so it is never sent
again; channels are independent, so a slow Telegram never delays the file or console line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notifier import metrics
from notifier.channels import Attempt, Channel, Result
from notifier.dedup import DeliveryLog
from notifier.messages import Notification, digest
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import NotificationKind

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

PARK_SECONDS = 30.0
"""How long an analysis waits for its alert to reach a channel before going out alone."""
KNOWN_ALERTS = 10_000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 30.0
    max_retry_after_seconds: float = 60.0

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        ceiling = min(self.base_seconds * 2.0 ** (retry_number - 1), self.max_seconds)
        return ceiling * (1 - 0.25 * rng.random())


@dataclass(frozen=True, slots=True)
class Outcome:
    channel: str
    notification: Notification
    delivered: bool
    attempts: int
    error: str = ""
    # not delivered, but a later try may succeed (the outbox keeps it); retry_after is the
    # server's wait when it asked for one
    retryable: bool = False
    retry_after: float | None = None


DIGEST_FROM_RANK = 2
"""WARNING, INFO and resolves may be folded into a digest; HIGH and CRITICAL never are."""


@dataclass(slots=True)
class _Job:
    notification: Notification
    future: asyncio.Future[Outcome]
    queued_at: float
    seq: int = 0

    def __lt__(self, other: _Job) -> bool:
        return (self.notification.rank, self.seq) < (other.notification.rank, other.seq)


def _digestible(job: _Job) -> bool:
    return job.notification.rank >= DIGEST_FROM_RANK


class _JobQueue:
    """A bounded priority queue (severity, then arrival) that can hand over a subset."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._heap: list[_Job] = []
        self._changed = asyncio.Condition()

    def qsize(self) -> int:
        return len(self._heap)

    async def put(self, job: _Job) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._heap) < self.maxsize)
            heapq.heappush(self._heap, job)
            self._changed.notify_all()

    async def get(self) -> _Job:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._heap))
            job = heapq.heappop(self._heap)
            self._changed.notify_all()
            return job

    def count(self, wanted: Callable[[_Job], bool]) -> int:
        return sum(1 for j in self._heap if wanted(j))

    def take(self, wanted: Callable[[_Job], bool]) -> list[_Job]:
        """Remove and return the waiting jobs ``wanted`` picks, in queue order."""
        taken = sorted(j for j in self._heap if wanted(j))
        self._heap = [j for j in self._heap if not wanted(j)]
        heapq.heapify(self._heap)
        # room was made: a producer waiting in put() re-checks at the next put/get
        return taken


class ChannelWorker:
    """Sends one channel's notifications in order with rate limiting and retries."""

    def __init__(
        self,
        channel: Channel,
        *,
        policy: RetryPolicy,
        on_delivered: Callable[[str, Notification, Any], None],
        queue_size: int = 1000,
        digest_threshold: int = 4,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.channel = channel
        self.name = channel.name
        self.policy = policy
        self._on_delivered = on_delivered
        self._queue = _JobQueue(queue_size)
        self._seq = itertools.count()
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._last_send: float | None = None
        self._recent: deque[float] = deque()
        self.per_minute: int | None = getattr(channel, "per_minute", None)
        # only paced channels (phones) digest; console and file write every line
        self.digest_threshold = digest_threshold if channel.min_interval_seconds > 0 else 0
        if hasattr(channel, "pace"):
            channel.pace = self._pace  # further parts of a split message are paced too

    async def submit(self, notification: Notification) -> asyncio.Future[Outcome]:
        """Queue a notification (waits while the queue is full); the future is its outcome."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(notification, future, self._monotonic(), next(self._seq)))
        metrics.QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
        return future

    def _take_burst(self, job: _Job) -> list[_Job]:
        """``job`` and every other waiting digestible job, when they are a burst."""
        if not self.digest_threshold or job.notification.rank < DIGEST_FROM_RANK:
            return [job]
        if self._queue.count(_digestible) + 1 < self.digest_threshold:
            return [job]
        return [job, *self._queue.take(_digestible)]

    async def run(self) -> None:
        while True:
            job = await self._queue.get()
            jobs = self._take_burst(job)
            metrics.QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
            members = [j.notification for j in jobs]
            n = members[0] if len(jobs) == 1 else digest(members)
            try:
                outcome = await self._deliver(n, members)
            except asyncio.CancelledError:
                for j in jobs:
                    j.future.cancel()
                raise
            except Exception as exc:  # a bug in a channel must not stop the others
                log.error(
                    "channel send crashed",
                    extra={"channel": self.name, "error_type": type(exc).__name__},
                )
                outcome = Outcome(self.name, n, False, 1, f"internal error ({type(exc).__name__})")
            for j in jobs:
                metrics.DELIVERY_SECONDS.labels(self.name).observe(self._monotonic() - j.queued_at)
                if not j.future.done():
                    j.future.set_result(dataclasses.replace(outcome, notification=j.notification))

    async def _pace(self) -> None:
        interval = self.channel.min_interval_seconds
        if interval > 0 and self._last_send is not None:
            wait = self._last_send + interval - self._monotonic()
            if wait > 0:
                await self._sleep(wait)
        if self.per_minute:
            # Telegram: at most 20 messages a minute in a group
            while len(self._recent) >= self.per_minute:
                wait = self._recent[0] + 60.0 - self._monotonic()
                if wait <= 0:
                    self._recent.popleft()
                    continue
                await self._sleep(wait)
            self._recent.append(self._monotonic())
        self._last_send = self._monotonic()

    async def _deliver(self, n: Notification, members: list[Notification]) -> Outcome:
        """Send ``n`` (one notification, or the digest of ``members``) with retries."""
        attempt: Attempt | None = None
        number = 0
        for number in range(1, self.policy.max_attempts + 1):
            await self._pace()
            attempt = await self.channel.send(n)
            metrics.SEND_ATTEMPTS.labels(self.name, attempt.detail).inc()
            if attempt.result == Result.DELIVERED:
                for m in members:
                    self._on_delivered(self.name, m, attempt.ref)
                    metrics.NOTIFICATIONS.labels(self.name, m.kind.value, "delivered").inc()
                    if m.kind is NotificationKind.ALERT:
                        # wall clock, not monotonic: occurred_at comes from another process
                        since = datetime.fromisoformat(m.record["occurred_at"])
                        metrics.ALERT_TO_DELIVERY_SECONDS.labels(self.name).observe(
                            max((utc_now() - since).total_seconds(), 0.0)
                        )
                return Outcome(self.name, n, True, number)
            if attempt.result == Result.FAILED or number == self.policy.max_attempts:
                break
            retry_after = attempt.retry_after
            if retry_after is not None:
                if retry_after > self.policy.max_retry_after_seconds:
                    # not waited here (it would hold up every later message); the
                    # outbox retries it once the wait is over
                    attempt = Attempt(
                        Result.RETRY,
                        attempt.detail,
                        f"{attempt.error} (asked to wait {retry_after:g} s, over the "
                        f"{self.policy.max_retry_after_seconds:g} s in-line cap)",
                        retry_after=retry_after,
                    )
                    break
                delay = retry_after
            else:
                delay = self.policy.backoff(number, self._rng)
            log.warning(
                "send failed, retrying",
                extra={
                    "channel": self.name,
                    "event_id": n.source_event_id,
                    "problem": attempt.error,
                    "attempt": number,
                    "delay_s": round(delay, 3),
                },
            )
            await self._sleep(delay)
        assert attempt is not None
        retryable = attempt.result == Result.RETRY
        for m in members:
            metrics.NOTIFICATIONS.labels(
                self.name, m.kind.value, "deferred" if retryable else "failed"
            ).inc()
        log.error(
            "notification not delivered" + (" yet" if retryable else ""),
            extra={
                "channel": self.name,
                "event_id": n.source_event_id,
                "alert_id": n.alert_id,
                "correlation_id": n.correlation_id,
                "problem": attempt.error,
                "attempts": number,
            },
        )
        return Outcome(
            self.name,
            n,
            False,
            number,
            attempt.error,
            retryable=retryable,
            retry_after=attempt.retry_after,
        )


@dataclass(slots=True)
class _Parked:
    worker: ChannelWorker
    notification: Notification
    since: float


class Dispatcher:
    """Sends a notification to every channel it has not yet been delivered to.

    An analysis is a reply to its alert, so on each channel it goes out only after its
    alert was queued there (the worker sends in order) or delivered before a restart. An
    analysis whose alert has not been seen (the two topics are read independently) is
    parked until the alert is dispatched, at most ``park_seconds``; then it goes out alone,
    still as its own message, never instead of the alert.
    """

    def __init__(
        self,
        channels: list[Channel],
        *,
        delivery_log: DeliveryLog,
        policy: RetryPolicy | None = None,
        queue_size: int = 1000,
        digest_threshold: int = 4,
        targets: Callable[[Notification], set[str]] | None = None,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        park_seconds: float = PARK_SECONDS,
    ) -> None:
        self.delivery_log = delivery_log
        self._targets = targets
        self._clock = clock
        self._monotonic = monotonic
        self.park_seconds = park_seconds
        self._alerts_queued: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._parked: dict[str, list[_Parked]] = {}
        self.workers = [
            ChannelWorker(
                c,
                policy=policy or RetryPolicy(),
                on_delivered=self._record,
                queue_size=queue_size,
                digest_threshold=digest_threshold,
                sleep=sleep,
                monotonic=monotonic,
                rng=rng,
            )
            for c in channels
        ]
        self._in_flight: set[tuple[str, str]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def channel_names(self) -> list[str]:
        return [w.name for w in self.workers]

    def start(self) -> list[asyncio.Task[None]]:
        self._tasks = [
            asyncio.create_task(w.run(), name=f"notifier-worker-{w.name}") for w in self.workers
        ]
        return self._tasks

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for worker in self.workers:
            await worker.channel.close()

    def _record(self, channel: str, n: Notification, ref: Any) -> None:
        self.delivery_log.record(
            channel, n.source_event_id, self._clock(), ref if isinstance(ref, int | str) else None
        )

    @property
    def parked(self) -> int:
        return sum(len(v) for v in self._parked.values())

    def _alert_seen(self, channel: str, alert_event_id: str) -> bool:
        key = (channel, alert_event_id)
        return key in self._alerts_queued or self.delivery_log.delivered(*key)

    async def release_overdue(self) -> list[asyncio.Future[Outcome]]:
        """Send the parked analyses whose alert did not come within ``park_seconds``."""
        now = self._monotonic()
        futures: list[asyncio.Future[Outcome]] = []
        for alert_event_id in list(self._parked):
            waiting = self._parked[alert_event_id]
            due = [p for p in waiting if now - p.since >= self.park_seconds]
            if not due:
                continue
            rest = [p for p in waiting if p not in due]
            if rest:
                self._parked[alert_event_id] = rest
            else:
                del self._parked[alert_event_id]
            for p in due:
                log.warning(
                    "analysis sent without its alert",
                    extra={"channel": p.worker.name, "alert_event_id": alert_event_id},
                )
                futures.append(await self._submit(p.worker, p.notification))
        return futures

    def _done_callback(self, key: tuple[str, str]) -> Callable[[asyncio.Future[Outcome]], None]:
        def done(_: asyncio.Future[Outcome]) -> None:
            self._in_flight.discard(key)

        return done

    def worker(self, name: str) -> ChannelWorker | None:
        return next((w for w in self.workers if w.name == name), None)

    async def resend(self, channel: str, n: Notification) -> asyncio.Future[Outcome] | None:
        """Queue ``n`` on ``channel`` again (the outbox's retry); None when it was delivered
        already or is queued there now."""
        worker = self.worker(channel)
        key = (channel, n.source_event_id)
        if worker is None or key in self._in_flight or self.delivery_log.delivered(*key):
            return None
        return await self._submit(worker, n)

    async def _submit(self, worker: ChannelWorker, n: Notification) -> asyncio.Future[Outcome]:
        key = (worker.name, n.source_event_id)
        self._in_flight.add(key)
        future = await worker.submit(n)
        future.add_done_callback(self._done_callback(key))
        return future

    async def dispatch(
        self, n: Notification, only: set[str] | None = None
    ) -> list[asyncio.Future[Outcome]]:
        """Queue ``n`` on each channel it is routed to (``only`` these when given) that has
        not had it; duplicates are skipped.

        An analysis whose alert this channel has not seen is parked (no future for it yet);
        dispatching the alert queues the parked analyses right behind it.
        """
        futures = []
        wanted = only if only is not None else self._targets(n) if self._targets else None
        for worker in self.workers:
            if wanted is not None and worker.name not in wanted:
                metrics.NOTIFICATIONS.labels(worker.name, n.kind.value, "not_routed").inc()
                continue
            key = (worker.name, n.source_event_id)
            if key in self._in_flight or self.delivery_log.delivered(*key):
                metrics.NOTIFICATIONS.labels(worker.name, n.kind.value, "duplicate").inc()
                if n.kind == NotificationKind.ALERT:
                    futures.extend(await self._unpark(worker, n.source_event_id))
                continue
            if n.kind == NotificationKind.ANALYSIS and not self._alert_seen(
                worker.name, n.alert_event_id
            ):
                self._parked.setdefault(n.alert_event_id, []).append(
                    _Parked(worker, n, self._monotonic())
                )
                continue
            futures.append(await self._submit(worker, n))
            if n.kind == NotificationKind.ALERT:
                self._alerts_queued[key] = None
                while len(self._alerts_queued) > KNOWN_ALERTS:
                    self._alerts_queued.popitem(last=False)
                futures.extend(await self._unpark(worker, n.source_event_id))
        return futures

    async def _unpark(
        self, worker: ChannelWorker, alert_event_id: str
    ) -> list[asyncio.Future[Outcome]]:
        waiting = self._parked.get(alert_event_id)
        if not waiting:
            return []
        mine = [p for p in waiting if p.worker is worker]
        rest = [p for p in waiting if p.worker is not worker]
        if rest:
            self._parked[alert_event_id] = rest
        else:
            del self._parked[alert_event_id]
        return [await self._submit(worker, p.notification) for p in mine]
