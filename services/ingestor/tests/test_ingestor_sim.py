"""The ingestor against the Bybit simulator (real HTTP and WebSocket) and a real broker."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from riskwatch_common.contracts import (
    MarkPriceUpdated,
    OrderUpdated,
    RiskLimitTableUpdated,
    StreamStatus,
)
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import read_topic, wait_until
from riskwatch_common.topics import ACCOUNT_EVENTS, MARK_PRICES, RISK_LIMITS, dead_letter_of

pytestmark = pytest.mark.integration

StartSim = Any
RunIngestor = Any
H = Any
SAMPLE = ["main", "sub_trading", "sub_hedge"]


async def test_sample_portfolio_streams_into_kafka_and_matches_ground_truth(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml", run_scenario=True)
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", SAMPLE)
    running = await run_ingestor(h.fast_settings(kafka, path), h.load(path, env))
    app = running.app
    await wait_until(lambda: app.health.ready, timeout=20, message="ready")

    placed = await sim.action(
        action="place_order", account="main", symbol="ETHUSDT", side="Buy", qty="1", price="3400"
    )
    await wait_until(
        lambda: placed["orderId"] in running.stream("main").state.open_orders,
        message="order streamed",
    )
    assert await app.publisher.drain(10)

    folded = await h.read_folded(kafka)
    truth = await sim.ground_truth()
    assert h.mismatches(truth, folded, SAMPLE) == []
    assert {s.status for s in folded.statuses} >= {StreamStatus.CONNECTED, StreamStatus.RESYNCED}
    order = folded.orders[("main", placed["orderId"])]
    assert isinstance(order, OrderUpdated)
    assert order.order_status == "New"
    assert order.correlation_id in {f["id"] for f in await frames(sim, "main", "order")}

    # mark prices for every held symbol, coalesced; a tier table per symbol
    await wait_until(lambda: app.market is not None and len(app.market.desired) == 4)
    marks = await read_topic(kafka, MARK_PRICES, min_records=4, timeout=20)
    symbols = {MARK_PRICES.decode(v).symbol for _, v in marks}
    assert symbols == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"}
    assert all(isinstance(MARK_PRICES.decode(v), MarkPriceUpdated) for _, v in marks)
    tables = [RISK_LIMITS.decode(v) for _, v in await read_topic(kafka, RISK_LIMITS, min_records=4)]
    btc = next(t for t in tables if t.symbol == "BTCUSDT")
    assert isinstance(btc, RiskLimitTableUpdated)
    assert [t.mm_deduction for t in btc.tiers][:3] == [D(0), D(600), D(2160)]

    async with aiohttp.ClientSession() as client:
        base = f"http://127.0.0.1:{app.http.port}"  # type: ignore[union-attr]
        async with client.get(base + "/readyz") as resp:
            ready = orjson.loads(await resp.read())
        async with client.get(base + "/metrics") as resp:
            text = await resp.text()
    assert resp.status == 200
    assert ready["ready"] is True
    assert ready["checks"]["account:main"]["ok"] is True
    assert "ingestor_frames_received_total" in text
    assert 'ingestor_seconds_since_last_message{account="main"}' in text


async def frames(sim: Any, account: str, topic: str) -> list[dict[str, Any]]:
    async with sim.session.get(
        f"{sim.base}/sim/frames", params={"account": account, "topic": topic}
    ) as resp:
        return orjson.loads(await resp.read())["frames"]  # type: ignore[no-any-return]


async def test_wrong_secret_on_one_of_five_accounts_is_reported_and_the_rest_stream(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("many_accounts.yaml")
    names = ["main", "bulk_001", "bulk_002", "bulk_003", "bulk_004"]
    path, env = sim.accounts_yaml(
        tmp_path / "a.yaml", names, secrets={"bulk_002": "not-the-right-secret"}
    )
    running = await run_ingestor(h.fast_settings(kafka, path), h.load(path, env))
    app = running.app

    await wait_until(lambda: app.health.ready, timeout=20, message="ready despite one bad key")
    report = app.health.report()["checks"]
    assert report["account:bulk_002"]["detail"].startswith("auth_failed")
    assert all(report[f"account:{n}"]["detail"] == "streaming" for n in names if n != "bulk_002")

    placed = await sim.action(
        action="place_order", account="bulk_003", symbol="BTCUSDT", side="Buy", qty="0.01",
        price="60000",
    )  # fmt: skip
    await wait_until(lambda: placed["orderId"] in running.stream("bulk_003").state.open_orders)
    assert await app.publisher.drain(10)
    folded = await h.read_folded(kafka)
    failed = [s for s in folded.statuses if s.status is StreamStatus.AUTH_FAILED]
    assert [s.account for s in failed] == ["bulk_002"]
    assert "auth" in failed[0].reason
    assert "sim-bulk-002-key" not in failed[0].reason
    assert (
        h.mismatches(await sim.ground_truth(), folded, [n for n in names if n != "bulk_002"]) == []
    )


async def test_auth_failure_is_retried_slowly_and_recovers(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    await sim.fault(kind="auth_fail", account="sub_trading", count=1)
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", SAMPLE)
    running = await run_ingestor(h.fast_settings(kafka, path, auth_retry_s=1.0), h.load(path, env))
    app = running.app

    await wait_until(
        lambda: app.board.status("sub_trading").value == "auth_failed", message="auth failed"
    )
    await wait_until(
        lambda: app.board.status("sub_trading").value == "streaming", message="recovered"
    )
    assert await app.publisher.drain(10)
    folded = await h.read_folded(kafka)
    statuses = [s.status for s in folded.statuses if s.account == "sub_trading"]
    assert statuses[0] is StreamStatus.AUTH_FAILED
    assert statuses[-1] is StreamStatus.RESYNCED


async def test_changes_missed_while_disconnected_are_recovered_by_resync(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    old = await sim.action(
        action="place_order", account="main", symbol="BTCUSDT", side="Buy", qty="0.1", price="60000"
    )
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", SAMPLE)
    running = await run_ingestor(h.fast_settings(kafka, path), h.load(path, env))
    app = running.app
    main = running.stream("main")
    await wait_until(lambda: app.health.ready)
    assert old["orderId"] in main.state.open_orders
    resyncs_before = main.resyncs

    # Frames are lost from here on: the stream cannot see any of this.
    await sim.fault(kind="silence", account="main")
    new = await sim.action(
        action="place_order", account="main", symbol="ETHUSDT", side="Sell", qty="1", price="4000"
    )
    await sim.action(action="cancel_order", account="main", order_id=old["orderId"])
    filled = await sim.action(
        action="place_order", account="main", symbol="BTCUSDT", side="Buy", qty="0.2", price="70000"
    )
    await sim.action(action="fill_order", account="main", order_id=filled["orderId"])
    await sim.fault(kind="disconnect", account="main")
    await wait_until(lambda: main.resyncs > resyncs_before, message="reconnect and resync")
    await sim.fault(kind="clear", account="main")

    await wait_until(lambda: new["orderId"] in main.state.open_orders)
    assert await app.publisher.drain(10)
    folded = await h.read_folded(kafka)
    assert h.mismatches(await sim.ground_truth(), folded, SAMPLE) == []
    # Both orders closed unseen reach Kafka with the exchange's own status (the resync reads
    # the recently closed orders), not the inferred "Deactivated".
    cancelled = folded.orders[("main", old["orderId"])]
    assert (cancelled.order_status, cancelled.origin.value) == ("Cancelled", "snapshot")
    placed_and_filled = folded.orders[("main", filled["orderId"])]
    assert (placed_and_filled.order_status, placed_and_filled.cum_exec_qty) == ("Filled", D("0.2"))
    assert folded.open_positions("main")[("BTCUSDT", 0)].size == D("0.7")
    assert len(folded.event_ids) == len(set(folded.event_ids)), "an event was published twice"


async def test_dead_link_is_detected_when_pongs_stop(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", ["main"])
    settings = h.fast_settings(kafka, path, ping_interval_s=0.3, pong_timeout_s=1.0)
    running = await run_ingestor(settings, h.load(path, env))
    main = running.stream("main")
    await wait_until(lambda: running.app.health.ready)

    await sim.fault(kind="silence", account="main", duration_s="3")
    placed = await sim.action(
        action="place_order", account="main", symbol="BTCUSDT", side="Buy", qty="0.1", price="1000"
    )

    # no pong for 1 s -> dead -> reconnect -> resync finds the order the stream never sent
    await wait_until(lambda: placed["orderId"] in main.state.open_orders, timeout=15)
    assert await running.app.publisher.drain(10)
    folded = await h.read_folded(kafka)
    disconnected = [s for s in folded.statuses if s.status is StreamStatus.DISCONNECTED]
    assert disconnected
    assert "pong" in disconnected[0].reason


async def test_duplicated_and_reordered_frames_publish_each_change_once(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", SAMPLE)
    running = await run_ingestor(h.fast_settings(kafka, path), h.load(path, env))
    await wait_until(lambda: running.app.health.ready)
    main = running.stream("main")

    await sim.fault(kind="duplicate_next", account="main", count=20)
    first = await sim.action(
        action="place_order", account="main", symbol="BTCUSDT", side="Buy", qty="0.3", price="69000"
    )
    await sim.action(action="fill_order", account="main", order_id=first["orderId"], qty="0.1")
    await sim.fault(kind="reorder_next", account="main", count=4)
    await sim.action(action="fill_order", account="main", order_id=first["orderId"])
    await sim.fault(kind="clear", account="main")  # releases any frames still held

    await wait_until(lambda: first["orderId"] not in main.state.open_orders)
    assert await running.app.publisher.drain(10)
    folded = await h.read_folded(kafka)
    assert h.mismatches(await sim.ground_truth(), folded, SAMPLE) == []
    assert folded.orders[("main", first["orderId"])].order_status == "Filled"
    assert len(folded.event_ids) == len(set(folded.event_ids)), "a duplicate reached Kafka"


async def test_malformed_and_unknown_frames_go_to_the_dead_letter_topic(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", ["main"])
    running = await run_ingestor(h.fast_settings(kafka, path), h.load(path, env))
    await wait_until(lambda: running.app.health.ready)

    # The sim has no "malformed frame" fault yet: write to its socket directly.
    (conn,) = sim.private_connections("main")
    conn._queue.put_nowait("this is not json")
    conn.send({"id": "bad-1", "topic": "order.linear", "creationTime": 1, "data": [{"orderId": 1}]})
    conn.send({"id": "bad-2", "topic": "greeks", "data": []})
    placed = await sim.action(
        action="place_order", account="main", symbol="BTCUSDT", side="Buy", qty="0.1", price="1000"
    )

    await wait_until(lambda: placed["orderId"] in running.stream("main").state.open_orders)
    dlq = dead_letter_of(ACCOUNT_EVENTS)
    records = await read_topic(kafka, dlq, min_records=3, timeout=20)
    letters = [dlq.decode(v) for _, v in records]
    assert sorted(d.error_type for d in letters) == [
        "malformed_frame",
        "malformed_frame",
        "unknown_frame",
    ]
    assert {d.source for d in letters} == {"ws:main"}
    assert {d.key for d in letters} == {"main"}
    assert any(d.value == "this is not json" for d in letters)
    assert any('"bad-1"' in d.value and "row 0" in d.error for d in letters)


async def test_ticker_subscriptions_follow_holdings(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", ["sub_hedge"])
    running = await run_ingestor(h.fast_settings(kafka, path), h.load(path, env))
    market = running.app.market
    assert market is not None
    await wait_until(lambda: market.desired == {"BNBUSDT"})

    def public_topics() -> set[str]:
        return {t for c in sim.sim.connections if c.kind == "public" for t in c.topics}

    await wait_until(lambda: public_topics() == {"tickers.BNBUSDT"}, message="subscribed")
    await sim.action(action="place_order", account="sub_hedge", symbol="SOLUSDT", side="Buy",
                     qty="1", price="100")  # fmt: skip
    await wait_until(lambda: public_topics() == {"tickers.BNBUSDT", "tickers.SOLUSDT"})
    await sim.action(action="set_position", account="sub_hedge", symbol="BNBUSDT", size="0")
    await wait_until(lambda: public_topics() == {"tickers.SOLUSDT"}, message="unsubscribed")


async def test_a_refused_symbol_does_not_cost_the_others_their_prices(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", ["sub_hedge"])
    running = await run_ingestor(h.fast_settings(kafka, path), h.load(path, env))
    market = running.app.market
    assert market is not None
    await wait_until(lambda: market.desired == {"BNBUSDT"})

    # a symbol the exchange does not list, in one request with a good one
    market.set_account_symbols("elsewhere", frozenset({"NOPEUSDT", "SOLUSDT"}))

    def public_topics() -> set[str]:
        return {t for c in sim.sim.connections if c.kind == "public" for t in c.topics}

    await wait_until(lambda: public_topics() == {"tickers.BNBUSDT", "tickers.SOLUSDT"})
