"""The what-if with two workers: reads are answered by either (the views GlobalTable),
a what-if only by the worker that owns the account's partition; the other answers 503
naming the partition."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from processor_testkit import (
    BRIEF_BTC_TIERS,
    Worker,
    mark,
    order,
    position,
    publish,
    tier_table,
)
from riskwatch_common.contracts import Side
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import wait_until

pytestmark = pytest.mark.integration

ACCOUNTS = [f"bob{i:02d}" for i in range(8)]


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for w in made:
        w.kill(signal.SIGKILL)


async def post(w: Worker, doc: object) -> tuple[int, dict[str, object]]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{w.port}/v1/what-if", json=doc) as r,
    ):
        return r.status, orjson.loads(await r.read())


async def test_what_if_is_answered_by_the_owner_and_refused_with_the_partition_elsewhere(
    kafka: KafkaSettings, tmp_path: Path, workers: list[Worker]
) -> None:
    a = Worker(kafka, tmp_path / "a", tmp_path / "a.log", instance="a")
    b = Worker(kafka, tmp_path / "b", tmp_path / "b.log", instance="b")
    workers += [a, b]
    a.start()
    await a.ready()
    b.start()
    await b.ready()
    await a.ready()
    events = [tier_table("BTCUSDT", BRIEF_BTC_TIERS), mark("BTCUSDT", 50000)]
    for account in ACCOUNTS:
        events.append(position(account, "BTCUSDT", Side.BUY, 20, 50000, 90))
        events.append(order(account, "BTCUSDT", f"o-{account}", Side.BUY, 20, 50000))
    await publish(kafka, events)

    async def every_account_listed() -> bool:
        for w in (a, b):
            status, body = await w.get("/v1/accounts")
            if status != 200 or orjson.loads(body)["count"] != len(ACCOUNTS):
                return False
        return True

    await wait_until(every_account_listed, timeout=60, message="both workers list every account")

    async def answers() -> dict[str, tuple[int, int]] | None:
        got: dict[str, tuple[int, int]] = {}
        for account in ACCOUNTS:
            ask = {"account": account, "symbol": "BTCUSDT", "side": "Buy", "qty": "20",
                   "price": "50000"}  # fmt: skip
            (sa, da), (sb, db) = await post(a, ask), await post(b, ask)
            if sorted((sa, sb)) != [200, 503]:
                return None  # a rebalance under way, or the order not in yet
            answer, refusal = (da, db) if sa == 200 else (db, da)
            if Decimal(str(answer["effective_value_before"])) != 2_000_000:
                return None
            assert answer["rejected"] is True
            assert "owned by another worker" in str(refusal["error"])
            got[account] = (0 if sa == 200 else 1, int(str(refusal["partition"])))
        return got

    owners = await wait_until(answers, timeout=60, message="one owner per account")
    # both workers own some of the accounts, and the partition named is the account's
    assert {owner for owner, _ in owners.values()} == {0, 1}
    by_partition: dict[int, set[int]] = {}
    for owner, partition in owners.values():
        by_partition.setdefault(partition, set()).add(owner)
    assert all(len(o) == 1 for o in by_partition.values())
