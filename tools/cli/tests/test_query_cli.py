"""``riskwatch watch / exposure / alerts / what-if`` as the trader runs them: the command
as a child process against the query API's real routes on a local port (over a plain-dict
live state), the token from the environment."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from risk_processor.query.testing import demo_state, serving, snapshot

TOKEN = "cli-test-token-0123456789"


async def riskwatch(
    base: str, *args: str, token: str | None = TOKEN, timeout: float = 30
) -> tuple[int, str, str]:
    env = {**os.environ, "RISKWATCH_API_URL": base, "COLUMNS": "160", "NO_COLOR": "1"}
    env.pop("RISKWATCH_API_TOKEN", None)
    env.pop("RISK_PROCESSOR_QUERY_TOKEN", None)
    if token:
        env["RISKWATCH_API_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "riskwatch_cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_exposure_shows_every_account_and_the_portfolio_row() -> None:
    async with serving(demo_state(), token=TOKEN) as base:
        code, out, err = await riskwatch(base, "exposure")
    assert code == 0, err
    for text in ("main", "sub_trading", "sub_hedge", "PORTFOLIO", "+$46,630", "BTCUSDT 8.2%"):
        assert text in out, text


async def test_exposure_of_one_account_lists_its_positions_and_json_keeps_exact_figures() -> None:
    async with serving(demo_state(), token=TOKEN) as base:
        code, out, _ = await riskwatch(base, "exposure", "main")
        jcode, jout, _ = await riskwatch(base, "exposure", "main", "--json")
    assert code == 0
    assert "BTCUSDT" in out
    assert "ETHUSDT" in out
    assert "+$52,600" in out
    assert jcode == 0
    assert orjson.loads(jout)["exposure"]["net"] == "52600"


async def test_alerts_lists_active_alerts_with_values() -> None:
    async with serving(demo_state(), token=TOKEN) as base:
        code, out, _ = await riskwatch(base, "alerts")
        jcode, jout, _ = await riskwatch(base, "alerts", "--account", "main", "--json")
    assert code == 0
    assert "net_exposure_usd" in out
    assert "$52,600" in out
    assert jcode == 0
    assert [a["account"] for a in orjson.loads(jout)["alerts"]] == ["main"]


async def test_what_if_prints_bobs_verdict_and_the_fix() -> None:
    async with serving(demo_state(), token=TOKEN) as base:
        code, out, _ = await riskwatch(
            base, "what-if", "--account", "bob", "--symbol", "btcusdt", "--side", "buy",
            "--qty", "20", "--price", "50000",
        )  # fmt: skip
        jcode, jout, _ = await riskwatch(
            base, "what-if", "--account", "bob", "--symbol", "BTCUSDT", "--side", "Buy",
            "--qty", "20", "--price", "50000", "--leverage", "80", "--json",
        )  # fmt: skip
    assert code == 0
    assert "REJECTED at 90x: $3.00M of positions and orders > $2.60M allowed" in out
    assert "tier 2 -> 3" in out
    assert "fix: lower leverage to 80x or less (allows $3.20M)" in out
    assert jcode == 0
    assert orjson.loads(jout)["rejected"] is False


async def test_watch_redraws_on_each_new_snapshot() -> None:
    state = demo_state()
    env = {**os.environ, "RISKWATCH_API_TOKEN": TOKEN}
    async with serving(state, token=TOKEN) as base:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "riskwatch_cli", "watch", "--url", base, "--json",
            "--count", "2", env=env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        first = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        state.put_snapshot("sub_hedge", snapshot("sub_hedge", net="777"))
        second = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    docs: list[Any] = [first, second]
    nets = [{r["account"]: r["net"] for r in d["accounts"]}["sub_hedge"] for d in docs]
    assert nets == ["11680", "777"]


async def test_without_the_token_the_command_says_which_variable_to_set() -> None:
    async with serving(demo_state(), token=TOKEN) as base:
        code, _, err = await riskwatch(base, "alerts", token=None)
        unreachable = await riskwatch("http://127.0.0.1:9", "alerts")
    assert code == 1
    assert "set RISKWATCH_API_TOKEN" in err
    assert unreachable[0] == 1
    assert "cannot reach the query API at http://127.0.0.1:9" in unreachable[2]


async def test_the_token_riskwatch_init_wrote_to_env_is_read_with_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"# written by riskwatch init\nRISK_PROCESSOR_QUERY_TOKEN={TOKEN}\n")
    async with serving(demo_state(), token=TOKEN) as base:
        code, out, err = await riskwatch(base, "alerts", "--env-file", str(env_file), token=None)
    assert code == 0, err
    assert "net_exposure_usd" in out
