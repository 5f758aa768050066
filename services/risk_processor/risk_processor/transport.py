"""Faust's aiokafka transport, adjusted for correctness, latency and per-event cost.

Four changes, each by subclassing (no global monkeypatch, so other Faust apps in the same
process keep stock behaviour):

1. **Rewinding partitions never committed.** Faust drops the rest of a fetched batch when
   the flow stops or the generation changes mid-batch (``Consumer.getmany``), and relies on
   the ``perform_seek`` that every rebalance and recovery ends with to read them again.
   aiokafka's ``seek_to_committed`` leaves a partition *without* a committed offset (or at
   offset 0) where it is: past the dropped records, which were then never processed. A
   worker restarted before its first commit of a partition (a crash in its first seconds,
   a fresh deployment) sat idle with every alert of those records missing. The consumer
   thread below seeks such partitions of the topics Faust commits to their beginning (our
   ``auto_offset_reset``); replays are recognised by the ordering keys and the alert
   ledger, as after any crash.

2. **Fetch wait.** Faust builds its worker consumer with ``fetch_max_wait_ms=1500``
   hard-coded (``faust/transport/drivers/aiokafka.py``, ``_create_worker_consumer``). Apache
   Kafka answers a waiting fetch as soon as data arrives, so there it only bounds idle polls;
   Tansu never wakes a waiting fetch, so every hop would cost up to 1.5 s. The consumer
   thread below sets the wait from ``KafkaSettings.fetch_max_wait_ms`` on the consumer
   before it starts (the fetcher reads it in ``start()``), and fails loudly if aiokafka
   ever renames the attribute instead of silently keeping 1.5 s.
3. **Delivery loop.** Faust's ``Consumer._drain_messages`` races *every* message against
   the flow-suspension event with ``wait_first``: four tasks and an ``asyncio.wait`` per
   record, which is about half of Faust's per-event CPU. ``BatchDrainConsumer`` keeps the
   loop's semantics (read offsets, gap tracking for compacted topics, commit_every, yield
   every 100 records, abandoning delivery the moment a rebalance suspends the flow) but
   races once per fetched batch. ``FAUST_DRAIN_FINGERPRINT`` pins the upstream source it
   mirrors; a test fails when a Faust upgrade changes it, so the copy is reviewed.
4. **No lost fetches.** Faust's ``Consumer.getmany`` drops the records it fetched when the
   flow is stopped, the generation changed, or the partition was paused meanwhile, but
   aiokafka has already moved the fetch position past them. For input partitions the
   next seek to the committed offset hides it; a *changelog* partition is sought only
   when recovery starts, so a table recovering then misses those records for good and
   recovery waits forever for its highwater (seen with two workers: a rebalance while a
   fetch was waiting). ``getmany`` below is upstream's, and it moves the position of a
   partition back to its first dropped record, unless something sought it since.
   ``FAUST_GETMANY_FINGERPRINT`` pins the upstream source.
5. **Producer idempotence.** Faust turns idempotence on only inside exactly-once
   transactions; ours follows ``KafkaSettings.enable_idempotence`` (on for Apache Kafka,
   off for Tansu, which rejects ``InitProducerId`` v0).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, cast

import faust
from faust.transport.consumer import Consumer as FaustBaseConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka

# sha256 of the source of faust.transport.consumer.Consumer._drain_messages (0.15.3) that
# BatchDrainConsumer._drain_messages mirrors.
FAUST_DRAIN_FINGERPRINT = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


# Per input partition: records Faust's consumer got from aiokafka, records it handed to the
# conductor, and records skipped as already read. Their difference is what a rebalance or
# a flow stop dropped; the task dump (SIGUSR1) shows them.
DELIVERY: dict[str, Counter[Any]] = {
    "fetched": Counter(),
    "delivered": Counter(),
    "skipped": Counter(),
}

# sha256 of the source of faust.transport.consumer.Consumer.getmany (0.15.3), which
# _TunedConsumer.getmany mirrors.
FAUST_GETMANY_FINGERPRINT = "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e"


FAUST_LOGGER = "risk_processor.faust"
"""Logger of the Faust services we subclass (the app, consumer, producer)."""


def drain_fingerprint() -> str:
    """sha256 of Faust's own delivery loop, to notice upstream changes."""
    source = inspect.getsource(FaustBaseConsumer._drain_messages)
    return hashlib.sha256(source.encode()).hexdigest()


def getmany_fingerprint() -> str:
    """sha256 of Faust's own ``Consumer.getmany``, to notice upstream changes."""
    source = inspect.getsource(FaustBaseConsumer.getmany)
    return hashlib.sha256(source.encode()).hexdigest()


class _TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The aiokafka consumer thread with a configurable fetch wait and a seek that also
    rewinds partitions never committed (see module doc)."""

    fetch_max_wait_ms: int = 1500

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError(
                "aiokafka no longer has AIOKafkaConsumer._fetch_max_wait_ms; "
                "update risk_processor.transport"
            )
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher, which has not
        # happened yet: on_start() creates the consumer and only then starts it.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

    async def seek_to_committed(self) -> Mapping[Any, Any]:
        return cast(Mapping[Any, Any], await self.call_thread(self._seek_to_committed_or_beginning))

    async def _seek_to_committed_or_beginning(self) -> Mapping[Any, Any]:
        # Runs on the consumer thread, like Faust's own seek_to_committed.
        client = self._ensure_consumer()
        committed = await client.seek_to_committed()
        acked = self.consumer.app.topics.acks_enabled_for
        uncommitted = [
            tp for tp, offset in committed.items() if (not offset or offset < 0) and acked(tp.topic)
        ]
        if uncommitted:
            await client.seek_to_beginning(*uncommitted)
        return cast(Mapping[Any, Any], committed)

    async def rewind(self, dropped: Mapping[Any, tuple[int, int]]) -> None:
        """For each ``tp: (first, after)`` of records fetched but not delivered: seek back
        to ``first`` if the position is still ``after`` (nobody sought since)."""
        consumer = self._ensure_consumer()
        subscription = consumer._subscription.subscription
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None:
            return
        for tp, (first, after) in dropped.items():
            if tp not in assignment.tps:
                continue
            state = assignment.state_value(tp)
            if state.has_valid_position and state.position == after:
                consumer.seek(tp, first)


class _TunedConsumer(faust_aiokafka.Consumer):
    thread_class: type[_TunedConsumerThread] = _TunedConsumerThread

    def _new_consumer_thread(self) -> _TunedConsumerThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """Upstream's ``getmany`` (round-robin over partitions, stop on a stopped flow or a
        new generation), plus: records not handed out are fetched again (module doc, 3)."""
        fetched = await self._wait_next_records(timeout)
        async for item in self._hand_out(*fetched):
            yield item

    async def _hand_out(
        self, records: Any, active_partitions: Any
    ) -> AsyncGenerator[tuple[Any, Any], None]:
        """The records of one fetch, as upstream's ``getmany`` hands them out; on exit
        (however early), partitions with records not handed out are rewound to them."""
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        # tp -> [offset of the first record not handed out, offset after the last]
        undelivered = {
            tp: [recs[0].offset, recs[-1].offset + 1] for tp, recs in records.items() if recs
        }
        try:
            if not self.flow_active:
                try:
                    await self.perform_seek()
                except Exception as exc:
                    self.log.warning(f"exception performing seek when flow not active {exc}")
                return
            to_message = self._to_message
            skipped: set[Any] = set()
            for tp, record in self.scheduler.iterate(records):
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    break
                if tp not in skipped and (
                    active_partitions is None
                    or tp in active_partitions
                    or tp in self._buffered_partitions
                ):
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    undelivered[tp][0] = record.offset + 1
                    yield tp, to_message(tp, record)
                else:
                    # Paused meanwhile: the rest of this partition's records wait too.
                    skipped.add(tp)
        finally:
            dropped = {tp: (a, b) for tp, (a, b) in undelivered.items() if a < b}
            if dropped and not self.should_stop:
                thread = cast(_TunedConsumerThread, self._thread)
                await thread.call_thread(thread.rewind, dropped)


class _BatchDrainConsumer(_TunedConsumer):
    """Faust's consumer with one flow-suspension race per fetched batch (see module doc)."""

    async def _wait_next_records(self, timeout: float) -> Any:
        records, active = await super()._wait_next_records(timeout)
        if records:
            fetched = DELIVERY["fetched"]
            for tp, recs in records.items():
                fetched[tp] += len(recs)
        return records, active

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - hot loop
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        flag_consumer_fetching = "FETCHING"
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                # The fetch is not raced against a suspended flow: cancelled, it would
                # still drain records in the consumer thread (moving the position past
                # them) and lose them; it returns within its timeout anyway.
                fetched = await self._wait_next_records(1.0)
                # As upstream: getmany may return at once in a loop, so give others a turn.
                await self.sleep(0)
                if not self.should_stop:
                    # Abandon the rest of the batch when a rebalance suspends the flow,
                    # exactly as upstream abandons the one message it was delivering;
                    # records not handed out are rewound (_hand_out), and the rebalance
                    # seeks inputs to their committed offsets anyway.
                    ait = self._hand_out(*fetched)
                    deliver = asyncio.ensure_future(self._deliver(ait))
                    try:
                        await self.wait_first(deliver, self.suspend_flow.wait())
                    finally:
                        # The generator can only be closed once its consumer has stopped.
                        deliver.cancel()
                        await asyncio.wait([deliver])
                        await ait.aclose()
                    if not deliver.cancelled() and (error := deliver.exception()):
                        raise error
                unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

    async def _deliver(self, ait: AsyncIterator[Any]) -> None:  # pragma: no cover - hot loop
        callback = self.callback
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        delivered, skipped = DELIVERY["delivered"], DELIVERY["skipped"]
        since_yield = 0
        async for tp, message in ait:
            since_yield += 1
            if since_yield > 100:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = get_read_offset(tp)
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                # A gap (compaction, transaction markers) must be acked explicitly or
                # the committed offset would stop below it forever.
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                set_read_offset(tp, offset)
                delivered[tp] += 1
            else:
                skipped[tp] += 1


class _IdempotenceProducer(faust_aiokafka.Producer):
    enable_idempotence: bool = False

    def _settings_extra(self) -> Mapping[str, Any]:
        extra = dict(super()._settings_extra())
        if self.enable_idempotence:
            extra.update(acks="all", enable_idempotence=True)
        return extra


def transport_class(
    *, fetch_max_wait_ms: int, enable_idempotence: bool, batch_drain: bool
) -> type[Any]:
    """A Faust aiokafka ``Transport`` class with our consumer and producer.

    Classes are built per app (not module globals) so two apps in one process, as in tests
    and the benchmark, can differ.
    """
    # mode names each service's logger after its class's module; classes built by type()
    # over ABCMeta bases would say "abc". One name for all of Faust's own services.
    mod = {"__module__": FAUST_LOGGER}
    thread = type(
        "TunedConsumerThread",
        (_TunedConsumerThread,),
        {**mod, "fetch_max_wait_ms": fetch_max_wait_ms},
    )
    base = _BatchDrainConsumer if batch_drain else _TunedConsumer
    consumer = type("TunedConsumer", (base,), {**mod, "thread_class": thread})
    producer = type(
        "TunedProducer",
        (_IdempotenceProducer,),
        {**mod, "enable_idempotence": enable_idempotence},
    )
    return type(
        "TunedTransport",
        (faust_aiokafka.Transport,),
        {**mod, "Consumer": consumer, "Producer": producer},
    )


class TunedApp(faust.App):
    """A Faust app whose consumer and producer transports are ``transport_cls``.

    Faust picks its transport from the broker URL scheme through a global registry;
    overriding the two factory methods keeps the choice local to this app.
    """

    transport_cls: type[Any] = faust_aiokafka.Transport

    def _new_transport(self) -> Any:
        return self.transport_cls(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return self.transport_cls(self.conf.broker_producer, self)


def quiet_faust_logs(level: int) -> None:
    """Faust logs every service start/stop and recovery tables at INFO, many lines each;
    keep them at WARNING unless the service itself runs at DEBUG."""
    if level > logging.DEBUG:
        for name in ("faust", "mode", FAUST_LOGGER):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
