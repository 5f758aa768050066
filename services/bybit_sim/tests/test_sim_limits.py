"""Bybit's IP-level limits: the per-IP REST window and its 403 ban, the ip_ban fault, and the
per-domain WebSocket connect limit; over real local sockets, plus the pure window logic."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from bybit_sim.ratelimit import IpLimiter
from bybit_sim.scenario import Scenario

# Fixture types live in conftest.py, which test modules cannot import (importlib mode).
StartSim = Any
WALLET = "/v5/account/wallet-balance"
TIME = "/v5/market/time"


async def raw_get(
    sim: Any, path: str, query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """Status and body text: a banned IP gets a plain-text 403, not a JSON envelope."""
    async with sim.session.get(sim.url(f"{path}?{query}" if query else path), headers=headers) as r:
        return r.status, await r.text()


async def signed_wallet(sim: Any, kit: Any, key: str = "", secret: str = "") -> tuple[int, str]:
    query = "accountType=UNIFIED"
    headers = kit.rest_headers(
        key or kit.MAIN_KEY, secret or kit.MAIN_SECRET, query, ts=sim.clock.now_ms()
    )
    return await raw_get(sim, WALLET, query, headers)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_ip_limit_counts_public_and_signed_calls_of_every_key_then_bans_with_403(
    start_sim: StartSim, sample_scenario: Scenario, kit: Any
) -> None:
    sim = await start_sim(sample_scenario, ip_limit_per_5s=3, ip_ban_s=60)
    bans_before = sample("bybit_sim_rest_ip_bans_total")

    allowed = [
        await raw_get(sim, TIME),
        await signed_wallet(sim, kit),
        await signed_wallet(sim, kit, "sim-sub-hedge-key", "sim-sub-hedge-secret"),
    ]
    breach = await raw_get(sim, TIME)
    signed_while_banned = await signed_wallet(sim, kit)
    admin = await sim.get("/sim/healthz")

    assert [status for status, _ in allowed] == [200, 200, 200]
    assert breach == (403, "access too frequent")
    assert signed_while_banned == (403, "access too frequent")
    assert admin.status == 200
    assert sample("bybit_sim_rest_ip_bans_total") == bans_before + 1


async def test_ip_ban_outlasts_the_window_and_lifts_after_ban_seconds(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario, ip_limit_per_5s=2, ip_ban_s=60)
    for _ in range(3):
        await raw_get(sim, TIME)

    sim.clock.advance(5_000)
    after_window = await raw_get(sim, TIME)
    sim.clock.advance(60_000 - 5_000 - 1)
    last_banned_ms = await raw_get(sim, TIME)
    sim.clock.advance(1)
    lifted = await raw_get(sim, TIME)

    assert after_window[0] == 403
    assert last_banned_ms[0] == 403
    assert lifted[0] == 200


async def test_ip_limit_window_rolls_so_a_steady_rate_under_it_is_never_banned(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario, ip_limit_per_5s=2)

    statuses = []
    for _ in range(6):
        statuses.append((await raw_get(sim, TIME))[0])
        sim.clock.advance(2_500)

    assert statuses == [200] * 6


async def test_ip_ban_fault_refuses_every_rest_call_for_600_s_by_default(
    start_sim: StartSim, sample_scenario: Scenario, kit: Any
) -> None:
    sim = await start_sim(sample_scenario)
    refused_before = sample("bybit_sim_rest_ip_refused_total", cause="ip_ban_fault")

    armed = await sim.post("/sim/fault", {"kind": "ip_ban"})
    public = await raw_get(sim, TIME)
    signed = await signed_wallet(sim, kit)
    faults = await sim.get("/sim/faults")
    sim.clock.advance(600_000 - 1)
    still = await raw_get(sim, TIME)
    sim.clock.advance(1)
    lifted = await raw_get(sim, TIME)

    assert armed.body["ok"]
    assert public == (403, "access too frequent")
    assert signed == (403, "access too frequent")
    assert faults.body["ip_banned_until"] == kit.START_MS + 600_000
    assert still[0] == 403
    assert lifted[0] == 200
    assert sample("bybit_sim_rest_ip_refused_total", cause="ip_ban_fault") == refused_before + 3


async def test_ip_ban_fault_with_duration_and_clear_lifts_it_early(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    await sim.post("/sim/fault", {"kind": "ip_ban", "duration_s": "2"})
    banned = await raw_get(sim, TIME)
    sim.clock.advance(2_000)
    lifted = await raw_get(sim, TIME)
    await sim.post("/sim/fault", {"kind": "ip_ban"})
    await sim.post("/sim/fault", {"kind": "clear", "account": "main"})
    after_account_clear = await raw_get(sim, TIME)
    await sim.post("/sim/fault", {"kind": "clear"})
    after_clear = await raw_get(sim, TIME)

    assert (banned[0], lifted[0]) == (403, 200)
    assert after_account_clear[0] == 403
    assert after_clear[0] == 200


async def test_clear_fault_lifts_a_ban_earned_by_breaching_the_ip_limit(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario, ip_limit_per_5s=1)
    await raw_get(sim, TIME)
    banned = await raw_get(sim, TIME)

    await sim.post("/sim/fault", {"kind": "clear"})
    lifted = await raw_get(sim, TIME)

    assert (banned[0], lifted[0]) == (403, 200)


async def test_ws_connects_past_the_limit_get_429_per_path_until_5_minutes_pass(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario, ws_connect_limit_per_5min=2)
    refused_before = sample("bybit_sim_ws_connects_refused_total", stream="private")
    first = await sim.ws("/v5/private")
    await sim.ws("/v5/private")
    # A closed connection still counted as a new one.
    await first.close()

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await sim.ws("/v5/private")
    public = await sim.ws("/v5/public/linear")
    sim.clock.advance(5 * 60 * 1000)
    again = await sim.ws("/v5/private")
    await again.send_json({"req_id": "up", "op": "ping"})

    assert refused.value.status == 429
    assert not public.closed
    assert (await again.receive_json(timeout=5))["req_id"] == "up"
    assert sample("bybit_sim_ws_connects_refused_total", stream="private") == refused_before + 1


def test_ip_limiter_counts_per_ip_and_refused_requests_do_not_extend_the_ban() -> None:
    limiter = IpLimiter(2, ban_ms=1000, window_ms=5000)

    a = [limiter.hit("a", t) for t in (0, 1, 2)]
    other = limiter.hit("b", 3)
    during = limiter.hit("a", 500)
    after = limiter.hit("a", 1002)

    assert [d.allowed for d in a] == [True, True, False]
    assert (a[2].ban_started, a[2].banned_until) == (True, 1002)
    assert other.allowed
    assert (during.allowed, during.ban_started, during.banned_until) == (False, False, 1002)
    # The window starts empty after the ban, so the next request is allowed.
    assert after.allowed


def test_ip_limiter_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="limit"):
        IpLimiter(0, ban_ms=1000)
    with pytest.raises(ValueError, match="ban"):
        IpLimiter(1, ban_ms=0)
