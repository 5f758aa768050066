"""Two workers in one group: a SIGKILL and a restart move accounts both ways, and still
every alert is published exactly once, the portfolio adds up and both workers answer."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from processor_testkit import Worker, mark, position, publish, publish_paced, read_models
from riskwatch_common.contracts import (
    AlertTransition,
    Event,
    ExposureSnapshotted,
    RiskAlertChanged,
    Side,
)
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import wait_until
from riskwatch_common.topics import ALERTS, EXPOSURES

pytestmark = pytest.mark.integration

# Two waves of 60 accounts, each opening 20,000 USD of ETH: one net-exposure alert per
# account; for the portfolio a net-exposure, direction-bias and correlation alert.
FIRST = [f"acc{i:03d}" for i in range(60)]
SECOND = [f"acc{i:03d}" for i in range(60, 120)]
ACCOUNTS = FIRST + SECOND
PORTFOLIO_RULES = {"net_exposure_usd", "direction_bias", "correlation_risk"}
PER_SECOND = 10


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for w in made:
        w.kill(signal.SIGKILL)


async def _alerts(kafka: KafkaSettings) -> list[RiskAlertChanged]:
    return await read_models(kafka, ALERTS, timeout=0.5)


async def _raised_for(kafka: KafkaSettings, accounts: Sequence[str]) -> bool:
    got = {a.account for a in await _alerts(kafka) if a.rule == "net_exposure_usd"}
    return got >= set(accounts)


async def _positions_handled(worker: Worker) -> float:
    """The worker's ``risk_processor_events_processed_total{type="PositionUpdated"}``."""
    status, body = await worker.get("/metrics")
    if status != 200:
        return 0.0
    found = re.search(
        rb'^risk_processor_events_processed_total\{type="PositionUpdated"\} (\S+)$',
        body,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


async def _http_up(worker: Worker) -> bool:
    assert worker.alive, worker.log_tail()
    return (await worker.get("/healthz"))[0] == 200


def _opens(accounts: Sequence[str]) -> list[Event]:
    return [position(a, "ETHUSDT", Side.BUY, 5, 4000, 5) for a in accounts]


@contextlib.asynccontextmanager
async def _feeding(
    kafka: KafkaSettings, accounts: Sequence[str]
) -> AsyncIterator[asyncio.Future[None]]:
    feeder = asyncio.ensure_future(publish_paced(kafka, _opens(accounts), PER_SECOND))
    try:
        yield feeder
        await feeder
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder


def _diagnosis(exc: AssertionError, alerts: list[RiskAlertChanged], ws: list[Worker]) -> str:
    have = {a.account for a in alerts if a.rule == "net_exposure_usd"}
    missing = sorted({*ACCOUNTS, "portfolio"} - have)
    logs = "\n".join(
        f"--- worker {i} (alive: {w.alive}):\n{w.log_tail()}" for i, w in enumerate(ws)
    )
    return f"{exc}; missing net_exposure_usd for {missing[:20]}...; worker logs:\n{logs}"


def _worker(kafka: KafkaSettings, data_dir: Path, log: Path, instance: str) -> Worker:
    w = Worker(kafka, data_dir, log, instance=instance)
    # the alerts counted are net_exposure_usd, whose USD limit is opt-in
    w.env["RISK_PROCESSOR_NET_EXPOSURE_LIMIT_USD"] = "10000"
    return w


async def test_two_workers_share_the_accounts_and_a_sigkill_and_a_rejoin_lose_and_repeat_no_alert(
    kafka: KafkaSettings, tmp_path: Path, workers: list[Worker], broker_kind: str
) -> None:
    if broker_kind == "tansu":
        pytest.skip(
            "Tansu reports a partition's end as its last batch's first offset + 1; a worker "
            "that keeps reading the GlobalTable changelogs through a rebalance is then past "
            "that 'end', and Faust's recovery stops with ConsistencyError"
        )
    a = _worker(kafka, tmp_path / "a", tmp_path / "a.log", "a")
    b = _worker(kafka, tmp_path / "b", tmp_path / "b.log", "b")
    workers.extend([a, b])
    a.start()
    await a.ready()
    b.start()
    await b.ready()
    await a.ready()  # through the rebalance B's join caused
    await publish(kafka, [mark("ETHUSDT", 4000)])

    # Wave 1 with both workers; B is killed mid-stream, once it has handled some accounts.
    async with _feeding(kafka, FIRST):

        async def both_working() -> bool:
            shared = min(await _positions_handled(a), await _positions_handled(b)) > 0
            return shared and len(await _alerts(kafka)) >= 10

        await wait_until(both_working, timeout=30, message="both workers handling accounts")
        b.kill(signal.SIGKILL)
        killed_with = len(await _alerts(kafka))
    assert killed_with < len(FIRST), "the kill came too late to be mid-stream"
    # A takes B's partitions once B's session expires, recovers B's tables and finishes.
    try:
        await wait_until(
            lambda: _raised_for(kafka, FIRST), timeout=60, message="wave 1 after the kill"
        )
    except AssertionError as exc:
        raise AssertionError(_diagnosis(exc, await _alerts(kafka), workers)) from None

    # Wave 2 while B comes back: the rebalance moves partitions from A to B mid-stream.
    b2 = _worker(kafka, tmp_path / "b", tmp_path / "b2.log", "b")
    workers.append(b2)
    b2.start()
    await wait_until(lambda: _http_up(b2), timeout=30, message="rejoining worker up")
    async with _feeding(kafka, SECOND):
        await b2.ready()

    async def complete() -> list[RiskAlertChanged] | None:
        got = await _alerts(kafka)
        accounts = {x.account for x in got if x.rule == "net_exposure_usd"}
        portfolio = {x.rule for x in got if x.account == "portfolio"}
        done = accounts >= {*ACCOUNTS, "portfolio"} and portfolio >= PORTFOLIO_RULES
        return got if done else None

    try:
        alerts = await wait_until(complete, timeout=60, message="every alert after the rejoin")
    except AssertionError as exc:
        raise AssertionError(_diagnosis(exc, await _alerts(kafka), [a, b, b2])) from None
    assert await _positions_handled(b2) > 0, "the rejoined worker got no accounts"

    # Exactly once: no record repeated (not even with the same event id), one transition
    # per alert, nothing resolved or escalated.
    assert len(alerts) == len({x.event_id for x in alerts}), Counter(x.event_id for x in alerts)
    assert Counter(x.alert_id for x in alerts).most_common(1)[0][1] == 1
    assert {x.transition for x in alerts} == {AlertTransition.RAISED}
    per_account = Counter(x.account for x in alerts)
    assert all(per_account[x] == 1 for x in ACCOUNTS)
    assert {x.rule for x in alerts if x.account == "portfolio"} == PORTFOLIO_RULES
    assert len(alerts) == len(ACCOUNTS) + len(PORTFOLIO_RULES)

    # The portfolio is the sum of the accounts' latest snapshots.
    async def whole_portfolio() -> tuple[ExposureSnapshotted, dict[str, ExposureSnapshotted]]:
        latest: dict[str, ExposureSnapshotted] = {}
        for s in await read_models(kafka, EXPOSURES, timeout=0.5):
            latest[s.account] = s
        p = latest.get("portfolio")
        return (p, latest) if p is not None and len(p.accounts) == len(ACCOUNTS) else None  # type: ignore[return-value]

    portfolio, latest = await wait_until(whole_portfolio, timeout=30, message="portfolio")
    assert set(portfolio.accounts) == set(ACCOUNTS)
    for field in ("total_long", "total_short", "net", "gross"):
        total = sum((getattr(latest[x], field) for x in ACCOUNTS), Decimal(0))
        assert getattr(portfolio, field) == total, field
    assert portfolio.net == len(ACCOUNTS) * Decimal(20_000)

    # Either worker's query API answers for every account, the portfolio and the alerts.
    for w in (a, b2):
        await wait_until(lambda w=w: _answers_for_all(w), timeout=30, message="query API")


async def _answers_for_all(w: Worker) -> bool:
    for account in ACCOUNTS:
        status, body = await w.get(f"/exposure/{account}")
        if status != 200 or ExposureSnapshotted.model_validate_json(body).net != 20_000:
            return False
        status, body = await w.get(f"/alerts?account={account}")
        if status != 200 or orjson.loads(body)["count"] != 1:
            return False
    status, body = await w.get("/exposure/portfolio")
    if status != 200:
        return False
    portfolio = ExposureSnapshotted.model_validate_json(body)
    if portfolio.net != len(ACCOUNTS) * 20_000:
        return False
    status, body = await w.get("/alerts")
    return status == 200 and orjson.loads(body)["count"] == len(ACCOUNTS) + len(PORTFOLIO_RULES)
