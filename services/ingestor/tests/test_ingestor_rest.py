"""The REST adapter against the simulator over real HTTP: signing, pagination, rate limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingestor.bybit.ratelimit import SlidingWindowLimiter
from ingestor.bybit.rest import (
    AccountRest,
    BybitAuthError,
    BybitError,
    BybitRest,
    decode_body,
    risk_limit_rows,
)
from riskwatch_common.testkit import wait_until

StartSim = Any
H = Any


class Sleeps:
    """Records requested sleeps and returns at once, so waits are checked, not waited."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


def rest(session: aiohttp.ClientSession, sleeps: Sleeps | None = None) -> BybitRest:
    return BybitRest(
        session,
        ip_limiter=SlidingWindowLimiter(500, 5.0),
        sleep=sleeps or Sleeps(),
    )


async def account_rest(
    sim: Any, h: H, tmp_path: Path, session: aiohttp.ClientSession, name: str = "main", **kw: Any
) -> AccountRest:
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", [name], **kw)
    (cfg,) = h.load(path, env).accounts
    return AccountRest(rest(session), cfg)


async def test_signed_snapshot_of_the_sample_portfolio(
    start_sim: StartSim, h: H, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    acc = await account_rest(sim, h, tmp_path, session)

    snap = await acc.snapshot()

    assert sorted((p["symbol"], p["size"]) for p in snap.positions) == [
        ("BTCUSDT", "0.5"),
        ("ETHUSDT", "5"),
    ]
    assert snap.orders == []
    assert snap.wallet is not None
    assert snap.wallet["accountType"] == "UNIFIED"
    assert snap.wallet_time_ms > 0


async def test_open_orders_are_paged_by_cursor_passed_through_as_received(
    start_sim: StartSim, h: H, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    for i in range(57):
        await sim.action(
            action="place_order", account="main", symbol="BTCUSDT", side="Buy",
            qty="0.001", price=str(60000 + i),
        )  # fmt: skip
    acc = await account_rest(sim, h, tmp_path, session)

    rows, _ = await acc.open_orders()

    # 50 + 7 over two pages: the second page's signature covered the encoded cursor
    assert len(rows) == 57
    assert len({r["orderId"] for r in rows}) == 57


async def test_too_many_pages_is_an_error_unless_the_caller_keeps_the_first_pages(
    start_sim: StartSim, h: H, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    for i in range(5):
        await sim.action(
            action="place_order", account="main", symbol="BTCUSDT", side="Buy",
            qty="0.001", price=str(60000 + i),
        )  # fmt: skip
    acc = await account_rest(sim, h, tmp_path, session)
    params = [("category", "linear"), ("settleCoin", "USDT"), ("limit", "2")]
    base = acc.account.endpoints.rest_url
    client = rest(session)

    with pytest.raises(BybitError, match="more than 2 pages"):
        await client.paginate(base, "/v5/order/realtime", params, account=acc.account, max_pages=2)
    # the execution backfill's way: the newest rows (first pages) rather than nothing
    rows, first_time = await client.paginate(
        base, "/v5/order/realtime", params, account=acc.account, max_pages=2, keep_partial=True
    )

    assert len(rows) == 4
    assert first_time > 0


async def test_wrong_secret_is_an_auth_error_with_ret_code(
    start_sim: StartSim, h: H, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    acc = await account_rest(sim, h, tmp_path, session, secrets={"main": "wrong-secret"})

    with pytest.raises(BybitAuthError) as err:
        await acc.wallet()

    assert err.value.ret_code == 10004


@pytest.mark.parametrize("omit_header", [False, True])
async def test_10006_waits_for_the_reset_timestamp_or_two_seconds(
    start_sim: StartSim, h: H, tmp_path: Path, session: aiohttp.ClientSession, omit_header: bool
) -> None:
    sim = await start_sim("sample_portfolio.yaml")
    await sim.fault(kind="rate_limit", account="main", count=1, omit_reset_header=omit_header)
    sleeps = Sleeps()
    path, env = sim.accounts_yaml(tmp_path / "a.yaml", ["main"])
    (cfg,) = h.load(path, env).accounts
    acc = AccountRest(rest(session, sleeps), cfg)

    row, _ = await acc.wallet()

    assert row is not None
    # (the fake sleep does not move the clock, so the account's pause is seen again after)
    waited = sleeps.calls[0]
    if omit_header:
        assert 1.9 <= waited <= 2.1  # pybit #340: no header, now + 2 s
    else:
        assert 0 < waited <= 1.1  # the sim's window resets within a second


async def test_risk_limit_rows_are_public(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    sim = await start_sim("sample_portfolio.yaml")

    rows = await risk_limit_rows(rest(session), sim.base, "BTCUSDT")

    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]


async def test_ip_limiter_admits_at_most_limit_per_window() -> None:
    now = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    limiter = SlidingWindowLimiter(3, 5.0, monotonic=lambda: now[0], sleep=fake_sleep)
    for _ in range(3):
        assert await limiter.acquire() == 0
    waited = await limiter.acquire()

    assert waited == pytest.approx(5.0)
    assert now[0] == pytest.approx(5.0)
    limiter.block_for(600)
    assert limiter.delay() == pytest.approx(600)


async def test_ip_limiter_serves_waiters_in_order() -> None:
    limiter = SlidingWindowLimiter(2, 0.2)
    order: list[int] = []

    async def take(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    tasks = [asyncio.create_task(take(i)) for i in range(5)]
    await wait_until(lambda: len(order) == 5, timeout=5)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_ip_limiter_counts_a_held_slot_until_a_window_after_the_request_ends() -> None:
    # The exchange counts a request when it arrives, anywhere between send and response.
    now = [0.0]

    async def fake_sleep(s: float) -> None:
        now[0] += s

    limiter = SlidingWindowLimiter(2, 5.0, monotonic=lambda: now[0], sleep=fake_sleep)
    async with limiter.hold():
        now[0] = 4.0  # a slow response
    async with limiter.hold():
        pass

    assert limiter.delay() == pytest.approx(5.0)  # the first slot counts until 4 + 5 s
    async with limiter.hold() as waited:
        assert waited == pytest.approx(5.0)


@pytest.mark.parametrize(
    "body",
    [
        b'{"retCode":0,"retMsg":"OK","result":{},"time":"soon"}',
        b'{"retCode":0,"retMsg":"OK","result":{},"time":[1]}',
        b'{"retCode":0,"retMsg":"OK","result":[],"time":-5}',
    ],
)
def test_ok_body_with_an_unreadable_time_uses_the_local_clock(body: bytes) -> None:
    code, _, response = decode_body("/v5/x", body, now_ms=42)

    assert code == 0
    assert response.time_ms == 42
    assert response.result == {}


@pytest.mark.parametrize(
    "body", [b"[1]", b'"x"', b"{}", b'{"retCode":null}', b'{"retCode":"x"}', b'{"retCode":true}']
)
def test_body_that_is_not_bybits_envelope_is_a_bybit_error(body: bytes) -> None:
    with pytest.raises(BybitError, match="unreadable response"):
        decode_body("/v5/x", body, now_ms=1)
