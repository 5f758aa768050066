"""The shell's plain classes on a fake clock, without a broker: snapshot coalescing, the
re-evaluation schedule (market moves and deadlines) and the alert outbox."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from processor_testkit import T0, position
from risk_processor import state
from risk_processor.agents.context import Context, Dedup
from risk_processor.coalesce import Coalescer, Throttle
from risk_processor.config import parse_config
from risk_processor.evaluate import AccountState, evaluate_account
from risk_processor.faust_app import Tables
from risk_processor.outbox import Outbox, PublishedAlerts
from risk_processor.outputs import Cause
from risk_processor.reevaluate import Reevaluator, fingerprint
from risk_processor.settings import RiskProcessorSettings
from riskwatch_common.contracts import RecordDeadLettered, Side
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import FakeClock, make_alert
from riskwatch_common.topics import ACCOUNT_EVENTS

D = Decimal


def exposure(size: int) -> Any:
    """A real account exposure: one BTCUSDT long of ``size``."""
    positions: dict[str, state.PositionEntry] = {}
    state.apply_position(positions, position("main", "BTCUSDT", Side.BUY, size, 70000, 10))
    return evaluate_account(
        AccountState("main", positions),
        marks={"BTCUSDT": D(70000)},
        tiers={},
        config=parse_config({}),
        now=T0,
        cause=Cause("c", T0, T0),
        source="test",
    ).exposure


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def stage(c: Coalescer, key: str, clock: FakeClock, size: int = 1) -> None:
    c.stage(key, 0, exposure(size), state.EMPTY_RISK, Cause("c", clock(), clock()), clock())


class FakeMarket:
    def __init__(self) -> None:
        self.marks: dict[str, state.MarkEntry] = {}

    def __call__(self, symbol: str) -> tuple[state.MarkEntry | None, state.TierEntry | None]:
        return self.marks.get(symbol), None

    def move(self, symbol: str, price: int) -> None:
        self.marks[symbol] = state.MarkEntry(D(price), f"corr-{symbol}-{price}", price)


# --------------------------------------------------------------------------- coalescing


def test_throttle_runs_the_first_change_at_once_and_the_next_after_the_interval(
    clock: FakeClock,
) -> None:
    throttle = Throttle(0.05, monotonic=clock.monotonic)
    assert throttle.ready()
    throttle.ran()
    assert not throttle.ready()
    clock.advance(0.049)
    assert not throttle.ready()
    clock.advance(0.002)
    assert throttle.ready()


def test_coalescer_publishes_a_key_once_per_interval_and_then_only_its_latest(
    clock: FakeClock,
) -> None:
    c = Coalescer(0.25, monotonic=clock.monotonic)
    stage(c, "main", clock, 1)
    assert [k for k, _ in c.take_due()] == ["main"]  # leading edge: at once
    stage(c, "main", clock, 2)
    stage(c, "main", clock, 3)
    clock.advance(0.2)
    assert c.take_due() == []  # inside the interval: waits
    clock.advance(0.06)
    due = c.take_due()
    assert [(k, s.exposure.gross) for k, s in due] == [("main", 3 * 70000)]  # trailing edge: latest
    assert c.take_due() == []


def test_coalescer_skips_a_snapshot_equal_to_the_last_published(
    clock: FakeClock,
) -> None:
    c = Coalescer(0.25, monotonic=clock.monotonic)
    stage(c, "main", clock, 1)
    c.take_due()
    clock.advance(1)
    stage(c, "main", clock, 1)
    assert c.take_due() == []
    assert c.take_due(everything=True) == []


def test_coalescer_hands_each_staged_snapshot_to_one_taker_only(
    clock: FakeClock,
) -> None:
    c = Coalescer(0.25, monotonic=clock.monotonic)
    for key in ("a", "b"):
        stage(c, key, clock)
    first = c.take_due(everything=True)
    second = c.take_due(everything=True)
    assert sorted(k for k, _ in first) == ["a", "b"]
    assert second == []


# --------------------------------------------------------------------------- re-evaluation


def test_reevaluator_requests_holders_of_a_moved_symbol_at_most_once_per_interval(
    clock: FakeClock,
) -> None:
    market = FakeMarket()
    market.move("BTCUSDT", 70000)
    r = Reevaluator(1.0, monotonic=clock.monotonic)
    r.evaluated("main", fingerprint(["BTCUSDT"], market), state.EMPTY_RISK)
    r.evaluated("sub", fingerprint(["ETHUSDT"], market), state.EMPTY_RISK)
    r.moved(["BTCUSDT"], "mark")
    assert r.due() == [("main", "mark")]
    r.moved(["BTCUSDT"], "mark")
    clock.advance(0.5)
    assert r.due() == []  # requested 0.5 s ago
    clock.advance(0.5)
    assert r.due() == [("main", "mark")]


def test_reevaluator_sweep_finds_market_moves_it_was_not_told_about(clock: FakeClock) -> None:
    # Another worker wrote the mark to the GlobalTable: only the sweep sees it.
    market = FakeMarket()
    market.move("BTCUSDT", 70000)
    r = Reevaluator(1.0, monotonic=clock.monotonic)
    r.evaluated("main", fingerprint(["BTCUSDT"], market), state.EMPTY_RISK)
    r.check(["main"], market, clock())
    assert r.due() == []
    market.move("BTCUSDT", 69000)
    r.check(["main", "never-evaluated"], market, clock())
    assert r.due() == [("main", "timer"), ("never-evaluated", "timer")]


def test_reevaluator_requests_an_idle_account_when_its_grace_deadline_passes(
    clock: FakeClock,
) -> None:
    # Nothing about the account changes; only time passes its grace period's end.
    market = FakeMarket()
    market.move("BTCUSDT", 70000)
    deadline = clock() + timedelta(days=10)
    pending = state.PendingChange(
        old=None,  # type: ignore[arg-type]
        new_version="v2",
        changed_at=clock(),
        deadline=deadline,
    )
    risk = state.RiskBook(pending={"BTCUSDT": pending})
    r = Reevaluator(1.0, monotonic=clock.monotonic)
    r.evaluated("main", fingerprint(["BTCUSDT"], market), risk)
    clock.advance(10 * 24 * 3600 - 1)
    r.check(["main"], market, clock())
    assert r.due() == []
    clock.advance(1)
    r.check(["main"], market, clock())
    assert r.due() == [("main", "deadline")]
    # Evaluated after the deadline with no grace period left: no more requests.
    r.evaluated("main", fingerprint(["BTCUSDT"], market), state.EMPTY_RISK)
    clock.advance(5)
    r.check(["main"], market, clock())
    assert r.due() == []


def test_reevaluator_cause_is_the_newest_moved_market_record(clock: FakeClock) -> None:
    market = FakeMarket()
    market.move("BTCUSDT", 70000)
    market.move("ETHUSDT", 4000)
    r = Reevaluator(1.0, monotonic=clock.monotonic)
    r.evaluated("main", fingerprint(["BTCUSDT", "ETHUSDT"], market), state.EMPTY_RISK)
    assert r.market_cause("main", ["BTCUSDT", "ETHUSDT"], clock(), market).correlation_id == (
        "reevaluate-main"
    )
    market.move("ETHUSDT", 3900)
    cause = r.market_cause("main", ["BTCUSDT", "ETHUSDT"], clock(), market)
    assert cause.correlation_id == "corr-ETHUSDT-3900"


# --------------------------------------------------------------------------- outbox


class ScriptedSend:
    """A producer's send: returns a delivery future the test resolves."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes, asyncio.Future[Any]]] = []

    async def __call__(self, topic: str, key: str, value: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value, fut))
        return fut


def outbox(send: ScriptedSend, clock: FakeClock) -> Outbox:
    published = PublishedAlerts(KafkaSettings(bootstrap_servers="unused:9092"), "alerts", 12, 0)
    return Outbox(published, send, clock=clock)


async def test_outbox_keeps_an_alert_until_acknowledged_then_settles_it(
    clock: FakeClock,
) -> None:
    send = ScriptedSend()
    box = outbox(send, clock)
    alert = make_alert("main")
    risk = await box.publish(3, state.EMPTY_RISK, [alert], clock())
    assert list(risk.outbox) == [alert.event_id]
    assert box.settle(risk) == risk  # not acknowledged yet
    send.sent[0][3].set_result(None)
    assert box.settle(risk).outbox == {}


async def test_outbox_sends_a_failed_publish_again_in_the_running_process(
    clock: FakeClock,
) -> None:
    send = ScriptedSend()
    box = outbox(send, clock)
    alert = make_alert("main")
    risk = await box.publish(3, state.EMPTY_RISK, [alert], clock())
    send.sent[0][3].set_exception(RuntimeError("KafkaTimeoutError"))
    assert box.settle(risk) == risk  # a failed send is not settled
    assert await box.retry_failed() == 1
    assert len(send.sent) == 2
    assert send.sent[1][:3] == send.sent[0][:3]  # the same record, same key
    send.sent[1][3].set_result(None)
    assert box.settle(risk).outbox == {}
    assert await box.retry_failed() == 0


async def test_outbox_does_not_send_a_transition_already_on_the_topic(clock: FakeClock) -> None:
    send = ScriptedSend()
    box = outbox(send, clock)
    alert = make_alert("main")
    await box.publish(3, state.EMPTY_RISK, [alert], clock())
    again = await box.publish(3, state.EMPTY_RISK, [alert], clock())
    assert len(send.sent) == 1
    assert again.outbox == {}


# --------------------------------------------------------------------------- dead letters


class ScriptedProducer:
    """The Faust producer's ``send``: a delivery future per record, resolved by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, asyncio.Future[Any]]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, *_: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value, fut))
        return fut


def context(producer: ScriptedProducer, clock: FakeClock) -> Context:
    kafka = KafkaSettings(bootstrap_servers="unused:9092", topic_namespace="t.")
    send = ScriptedSend()
    return Context(
        settings=RiskProcessorSettings(kafka=kafka),
        config=parse_config({}),
        clock=clock,
        app=SimpleNamespace(producer=producer),
        tables=Tables(*({} for _ in range(8))),
        writer=None,  # type: ignore[arg-type]
        outbox=outbox(send, clock),
        coalescer=Coalescer(0.25, monotonic=clock.monotonic),
        portfolio_throttle=Throttle(0.05, monotonic=clock.monotonic),
        reevaluator=Reevaluator(1.0, monotonic=clock.monotonic),
        names={},
        source="test",
        dedup=Dedup(16),
    )


async def test_a_dead_letter_whose_send_failed_is_sent_again_by_the_timer(
    clock: FakeClock,
) -> None:
    producer = ScriptedProducer()
    ctx = context(producer, clock)
    message = SimpleNamespace(
        topic="t.bybit.account-events.v1", partition=2, offset=7, key=b"main", value=b"{oops"
    )
    await ctx.dead_letter(ACCOUNT_EVENTS, message, ValueError("bad json"), "decode")
    [(topic, key, body, fut)] = producer.sent
    assert topic == "t.bybit.account-events.dlq.v1"
    assert key == b"main"
    assert RecordDeadLettered.model_validate_json(body).source == ("t.bybit.account-events.v1[2]@7")
    assert await ctx.retry_failed_dead_letters() == 0  # still in flight: nothing to do
    fut.set_exception(RuntimeError("KafkaTimeoutError"))
    assert await ctx.retry_failed_dead_letters() == 1
    assert producer.sent[1][:3] == (topic, key, body)
    producer.sent[1][3].set_result(None)
    assert await ctx.retry_failed_dead_letters() == 0
    assert ctx.dead_letters_pending == []
