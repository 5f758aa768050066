"""The ingestor against the simulator's harder faults: corrupted frames, Bybit's IP ban and
per-IP / connect limits, and a standard (CONTRACT wallet) account. Real HTTP, WebSocket and
broker, as in ``test_ingestor_sim.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from riskwatch_common.contracts import StreamStatus, WalletUpdated
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import read_topic, wait_until
from riskwatch_common.topics import ACCOUNT_EVENTS, dead_letter_of

pytestmark = pytest.mark.integration

StartSim = Any
RunIngestor = Any
H = Any
SCENARIOS = Path(__file__).resolve().parents[2] / "bybit_sim" / "scenarios"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def place_and_fill(sim: Any, account: str, symbol: str = "BTCUSDT") -> str:
    placed = await sim.action(
        action="place_order", account=account, symbol=symbol, side="Buy", qty="0.1",
        price="70000" if symbol == "BTCUSDT" else "3500",
    )  # fmt: skip
    await sim.action(action="fill_order", account=account, order_id=placed["orderId"])
    return str(placed["orderId"])


async def test_malformed_frames_are_dead_lettered_and_the_real_frames_after_them_stream_on(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", ["main"])
    running = await run_ingestor(h.fast_settings(kafka, path), h.load(path, env))
    main = running.stream("main")
    await wait_until(lambda: running.app.health.ready)
    lettered_before = sum(
        metric("ingestor_frames_dead_lettered_total", reason=r)
        for r in ("malformed_frame", "unknown_frame")
    )

    # truncated JSON, an unknown topic, rows without their identity: each then the real frame
    await sim.fault(kind="malformed_next", account="main", count=3)
    order_id = await place_and_fill(sim, "main")

    await wait_until(lambda: order_id not in main.state.open_orders and main.state.order(order_id))
    dlq = dead_letter_of(ACCOUNT_EVENTS)
    letters = [dlq.decode(v) for _, v in await read_topic(kafka, dlq, min_records=3, timeout=20)]
    assert sorted(d.error_type for d in letters) == [
        "malformed_frame",
        "malformed_frame",
        "unknown_frame",
    ]
    assert {(d.source, d.key) for d in letters} == {("ws:main", "main")}
    truncated, unknown, missing = letters  # the simulator's cycle order
    assert "JSON" in truncated.error
    assert '"sim.unknown"' in unknown.value
    assert "-malformed" in missing.value
    assert "row 0" in missing.error
    lettered = sum(
        metric("ingestor_frames_dead_lettered_total", reason=r)
        for r in ("malformed_frame", "unknown_frame")
    )
    assert lettered - lettered_before == 3

    assert await running.app.publisher.drain(10)
    folded = await h.read_folded(kafka)
    truth = await sim.ground_truth()
    assert h.mismatches(truth, folded, ["main"]) == []
    assert h.execution_mismatches(truth, folded, ["main"]) == []
    assert folded.orders[("main", order_id)].order_status == "Filled"
    assert running.app.board.status("main").value == "streaming"


async def test_ip_ban_pauses_rest_without_losing_anything_and_the_backfill_recovers_its_fills(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", ["main"])
    settings = h.fast_settings(kafka, path, rest_ip_ban_s=1.0)
    running = await run_ingestor(settings, h.load(path, env))
    app = running.app
    main = running.stream("main")
    await wait_until(lambda: app.health.ready)
    resyncs_before = main.resyncs
    banned_before = metric("ingestor_resyncs_total", trigger="connect", outcome="ip_banned")
    bugs_before = metric("ingestor_links_lost_total", link="private", cause="bug")

    await sim.fault(kind="ip_ban", duration_s="4")
    # Fills the stream loses (frames dropped, then the link) while every REST call gets 403.
    await sim.fault(kind="silence", account="main")
    await place_and_fill(sim, "main")
    await sim.fault(kind="disconnect", account="main", abrupt=True)
    await sim.fault(kind="clear", account="main")  # the frames again; the IP ban stays

    await wait_until(
        lambda: "IP ban" in app.health.report()["checks"]["account:main"]["detail"],
        message="the account reports the ban",
    )
    assert metric("ingestor_resyncs_total", trigger="connect", outcome="ip_banned") > banned_before
    assert metric("ingestor_rest_calls_total", endpoint="/v5/position/list", outcome="ip_banned")
    # The link stays open through the ban: a fill made now streams live.
    live_fill = await place_and_fill(sim, "main", "ETHUSDT")
    await wait_until(lambda: main.state.order(live_fill) is not None, message="live fill")
    assert main.resyncs == resyncs_before

    await wait_until(lambda: main.resyncs > resyncs_before, timeout=20, message="resync after ban")
    assert app.board.status("main").value == "streaming"
    assert metric("ingestor_links_lost_total", link="private", cause="bug") == bugs_before
    assert await app.publisher.drain(10)
    folded = await h.read_folded(kafka)
    truth = await sim.ground_truth()
    assert h.mismatches(truth, folded, ["main"]) == []
    assert h.execution_mismatches(truth, folded, ["main"]) == []
    gt_main = next(a for a in truth["accounts"] if a["account"] == "main")
    assert len(gt_main["executions"]) == 2  # the lost one and the live one, both on Kafka
    statuses = [s.status for s in folded.statuses if s.account == "main"]
    assert statuses[-2:] == [StreamStatus.CONNECTED, StreamStatus.RESYNCED]


async def test_cold_start_paced_below_the_exchange_limits_is_never_refused(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    # Bybit's 600 REST per 5 s per IP and 500 connects per 5 min, scaled down so that 20
    # accounts' cold start (3 REST calls each, wallet polls, tier tables) runs into them.
    sim = await start_sim(
        "many_accounts.yaml", ip_limit_per_5s=60, ip_ban_s=600, ws_connect_limit_per_5min=30
    )
    names = ["main"] + [f"bulk_{i:03d}" for i in range(1, 20)]
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", names)
    settings = h.fast_settings(
        kafka,
        path,
        rest_ip_requests=50,
        rest_ip_window_s=5.0,
        ws_connects_per_window=25,
        ws_connect_window_s=300.0,
        wallet_refresh_s=2.0,
    )
    refused_before = metric("bybit_sim_rest_ip_refused_total", cause="ip_limit")
    ws_refused_before = metric("bybit_sim_ws_connects_refused_total", stream="private")
    waits_before = metric("ingestor_rest_rate_limit_waits_total", reason="ip_budget")
    bans_before = metric("bybit_sim_rest_ip_bans_total")
    running = await run_ingestor(settings, h.load(path, env))
    app = running.app

    await wait_until(lambda: app.health.ready, timeout=20, message="every account streaming")
    # a few more seconds of wallet polls at the paced rate
    await asyncio.sleep(3)

    assert {app.board.status(n).value for n in names} == {"streaming"}
    assert metric("bybit_sim_rest_ip_refused_total", cause="ip_limit") == refused_before
    assert metric("bybit_sim_rest_ip_bans_total") == bans_before
    assert metric("bybit_sim_ws_connects_refused_total", stream="private") == ws_refused_before
    assert metric("bybit_sim_ws_connects_refused_total", stream="public") == 0
    # the budget was what paced the start, so the test ran into the limits it claims to
    assert metric("ingestor_rest_rate_limit_waits_total", reason="ip_budget") > waits_before
    assert all(st.resyncs == 1 for st in app.streams)


async def test_standard_account_reads_the_contract_wallet(
    kafka: KafkaSettings, start_sim: StartSim, run_ingestor: RunIngestor, h: H, tmp_path: Path
) -> None:
    text = (SCENARIOS / "sample_portfolio.yaml").read_text()
    standard = "- name: sub_trading\n    account_type: standard\n"
    text = text.replace("- name: sub_trading\n", standard)
    sim = await start_sim(text)
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", ["sub_trading"])
    assert "account_type: standard" in path.read_text()
    running = await run_ingestor(h.fast_settings(kafka, path), h.load(path, env))

    await wait_until(lambda: running.app.health.ready)
    assert running.app.board.status("sub_trading").value == "streaming"
    assert await running.app.publisher.drain(10)
    folded = await h.read_folded(kafka)
    wallet = folded.wallets["sub_trading"]
    assert isinstance(wallet, WalletUpdated)
    assert wallet.account_type == "CONTRACT"
    assert h.mismatches(await sim.ground_truth(), folded, ["sub_trading"]) == []
