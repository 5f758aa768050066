"""The query API (v1) over real HTTP, on a plain-dict live state: documents, display
blocks, the bearer token, the what-if, the live stream, the OpenAPI document and a
schemathesis run against it. The same routes over a running processor:
test_query_processor.py."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from risk_processor.query.openapi import document
from risk_processor.query.openapi import main as openapi_main
from risk_processor.query.testing import (
    FakeState,
    alert_state,
    demo_state,
    serving,
    snapshot,
)

D = Decimal
TOKEN = "query-token-for-tests-0123456789"


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        body = await r.read()
        return r.status, orjson.loads(body) if r.content_type == "application/json" else body


async def post(url: str, doc: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=doc, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


BOB_ORDER = {"account": "bob", "symbol": "BTCUSDT", "side": "Buy", "qty": "20", "price": "50000"}


async def test_accounts_keep_exact_decimals_and_add_a_display_block() -> None:
    async with serving(demo_state()) as base:
        status, body = await get(f"{base}/v1/accounts")
    assert status == 200
    assert body["count"] == 3
    rows = {r["account"]: r for r in body["accounts"]}
    main = rows["main"]
    assert main["net"] == "52600"
    assert main["nearest_liquidation"] == {"symbol": "BTCUSDT", "side": "Buy", "value": "8.25"}
    assert main["tier_headroom"]["value"] == "965000"
    assert main["link"] == {"status": "ok", "reason": None, "since": None}
    assert main["active_alerts"] == 1
    assert main["display"]["net"] == "+$52,600"
    assert main["display"]["mm_rate"] == "5.0%"
    assert (
        main["display"]["nearest_liquidation"] == "BTCUSDT 8.2%"
    )  # rounded down: never safer than it is
    assert rows["sub_trading"]["display"]["net"] == "-$17,650"
    assert rows["sub_hedge"]["nearest_liquidation"] is None


async def test_an_active_account_link_alert_shows_the_link_down() -> None:
    state = demo_state()
    state.put_alerts(
        "sub_hedge",
        [alert_state("sub_hedge", "account_link", severity="HIGH", reason="stream down 95 s")],
    )
    async with serving(state) as base:
        _, body = await get(f"{base}/v1/accounts")
    hedge = next(r for r in body["accounts"] if r["account"] == "sub_hedge")
    assert hedge["link"]["status"] == "down"
    assert hedge["link"]["reason"] == "stream down 95 s"
    assert hedge["display"]["link"] == "down"


async def test_an_expiring_key_alone_shows_the_link_expiring_not_down() -> None:
    state = demo_state()
    reason = "the API key of sub_hedge expires on 2026-03-05 (in 4 day(s))"
    state.put_alerts(
        "sub_hedge", [alert_state("sub_hedge", "account_link", severity="WARNING", reason=reason)]
    )
    async with serving(state) as base:
        _, body = await get(f"{base}/v1/accounts")
    hedge = next(r for r in body["accounts"] if r["account"] == "sub_hedge")
    assert hedge["link"]["status"] == "expiring"
    assert hedge["link"]["reason"] == reason
    assert hedge["display"]["link"] == "expiring"


async def test_overview_has_the_portfolio_row_with_the_nearest_liquidation_of_all() -> None:
    async with serving(demo_state()) as base:
        _, body = await get(f"{base}/v1/overview")
    assert body["portfolio"]["net"] == "46630"
    assert body["portfolio"]["link"] is None
    assert body["portfolio"]["nearest_liquidation"]["symbol"] == "BTCUSDT"
    assert [a["account"] for a in body["alerts"]] == ["main", "portfolio"]


async def test_exposure_serves_the_snapshot_as_published_with_display() -> None:
    state = demo_state()
    async with serving(state) as base:
        status, one = await get(f"{base}/v1/exposure/main")
        _, all_ = await get(f"{base}/v1/exposure")
        missing, problem = await get(f"{base}/v1/exposure/nobody")
        legacy_status, legacy = await get(f"{base}/exposure/main")
    assert status == 200
    assert one["exposure"]["net"] == "52600"
    assert one["exposure"]["unrealised_pnl"] == "125.5"
    assert one["display"]["unrealised_pnl"] == "+$126"
    assert one["display"]["positions"][0] == "BTCUSDT Buy 1 $35,000 liq 8.2%"
    assert all_["portfolio"]["exposure"]["net"] == "46630"
    assert [e["exposure"]["account"] for e in all_["accounts"]] == [
        "main",
        "sub_hedge",
        "sub_trading",
    ]
    assert (missing, problem) == (404, {"error": "no exposure for 'nobody' yet"})
    # the unversioned path of before v1 is kept as an alias: the raw snapshot
    assert legacy_status == 200
    assert legacy == orjson.loads(state.views_["exposure/main"])


async def test_alerts_carry_current_values_worst_first() -> None:
    state = demo_state()
    state.put_alerts(
        "sub_trading",
        [alert_state("sub_trading", "liquidation_distance", severity="HIGH", value="4.2",
                     threshold="5", subject="SOLUSDT")],
    )  # fmt: skip
    async with serving(state) as base:
        _, body = await get(f"{base}/v1/alerts")
        _, only = await get(f"{base}/v1/alerts?account=portfolio")
    assert body["count"] == 3
    first = body["alerts"][0]
    assert (first["account"], first["severity"], first["value"]) == ("sub_trading", "HIGH", "4.2")
    # the figure now, from the account's latest snapshot (SOLUSDT is 40.1 % away there)
    assert first["current"] == "40.1"
    assert first["display"]["value"] == "40.1%"
    main = next(a for a in body["alerts"] if a["account"] == "main")
    assert (main["value"], main["current"]) == ("52600", "52600")  # |net|
    assert [a["account"] for a in only["alerts"]] == ["portfolio"]
    assert only["alerts"][0]["current"] == "46630"


async def test_what_if_reproduces_bobs_90x_example() -> None:
    async with serving(demo_state()) as base:
        status, at_90 = await post(f"{base}/v1/what-if", BOB_ORDER)
        _, at_80 = await post(f"{base}/v1/what-if", {**BOB_ORDER, "leverage": "80"})
    assert status == 200
    assert at_90["rejected"] is True
    assert at_90["leverage"] == "90"
    assert (at_90["tier_before"]["tier_id"], at_90["tier_after"]["tier_id"]) == (2, 3)
    assert D(at_90["effective_value_after"]) == 3_000_000
    assert D(at_90["leverage_cap"]) == 2_600_000
    assert D(at_90["max_leverage_allowing"]) == 80
    assert D(at_90["cap_at_max_leverage"]) == 3_200_000
    assert D(at_90["portfolio_net_after"]) == D(46630) + 1_000_000
    assert at_90["display"]["verdict"].startswith("REJECTED at 90x")
    assert at_90["display"]["fix"] == "lower leverage to 80x or less (allows $3.20M)"
    assert at_80["rejected"] is False
    assert D(at_80["leverage_cap"]) == 3_200_000


async def test_what_if_errors_are_one_clear_line() -> None:
    async with serving(demo_state()) as base:
        elsewhere = await post(f"{base}/v1/what-if", {**BOB_ORDER, "account": "far_away"})
        unknown = await post(f"{base}/v1/what-if", {**BOB_ORDER, "account": "nobody"})
        bad = await post(f"{base}/v1/what-if", {**BOB_ORDER, "qty": "-1"})
        no_table = await post(f"{base}/v1/what-if", {**BOB_ORDER, "symbol": "ETHUSDT"})
    assert elsewhere[0] == 503
    assert elsewhere[1]["partition"] == 7
    assert "owned by another worker" in elsewhere[1]["error"]
    assert unknown == (404, {"error": "no state for account 'nobody'"})
    assert bad[0] == 422
    assert bad[1]["error"].startswith("qty: ")
    assert no_table == (409, {"error": "no risk-limit table for ETHUSDT yet"})


async def test_with_a_token_every_data_route_needs_it_and_the_page_does_not() -> None:
    async with serving(demo_state(), token=TOKEN) as base:
        for path in ("/v1/accounts", "/v1/overview", "/v1/exposure", "/v1/alerts",
                     "/v1/stream", "/exposure/main", "/alerts"):  # fmt: skip
            status, body = await get(base + path)
            assert status == 401, path
            assert TOKEN not in str(body)
            wrong, _ = await get(base + path, {"Authorization": "Bearer not-the-token"})
            assert wrong == 401, path
        denied, _ = await post(f"{base}/v1/what-if", BOB_ORDER)
        ok, _ = await get(f"{base}/v1/accounts", {"Authorization": f"Bearer {TOKEN}"})
        page, html = await get(f"{base}/")
        spec, _ = await get(f"{base}/v1/openapi.json")
    assert denied == 401
    assert ok == 200
    assert page == 200
    assert b"riskwatch" in html
    assert TOKEN.encode() not in html
    assert spec == 200


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    buffer = b""
    while len(events) < n:
        buffer += await resp.content.readany()
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    events.append(orjson.loads(line[6:]))
    return events


async def test_stream_sends_the_overview_now_and_again_on_a_new_snapshot() -> None:
    state = demo_state()
    async with (
        serving(state) as base,
        aiohttp.ClientSession() as s,
        s.get(f"{base}/v1/stream") as resp,
    ):
        assert resp.headers["Content-Type"] == "text/event-stream"
        [first] = await asyncio.wait_for(read_events(resp, 1), 5)
        state.put_snapshot("sub_hedge", snapshot("sub_hedge", net="999"))
        [second] = await asyncio.wait_for(read_events(resp, 1), 5)
    net = {r["account"]: r["net"] for r in first["accounts"]}
    assert net["sub_hedge"] == "11680"
    assert {r["account"]: r["net"] for r in second["accounts"]}["sub_hedge"] == "999"


COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "openapi.v1.json"


async def test_served_openapi_document_is_the_committed_one_and_lists_every_route() -> None:
    assert openapi_main(["--check"]) == 0
    committed = orjson.loads(COMMITTED.read_bytes())
    async with serving(FakeState()) as base:
        _, served = await get(f"{base}/v1/openapi.json")
    assert served == committed == orjson.loads(orjson.dumps(document()))
    from risk_processor.query.http import routes

    served_paths = {
        (r.method.lower(), r.path)  # type: ignore[attr-defined]
        for r in routes(FakeState())
        if r.path.startswith("/v1/") and r.path != "/v1/openapi.json"  # type: ignore[attr-defined]
    }
    documented = {(m, p) for p, ops in committed["paths"].items() for m in ops}
    assert served_paths == documented


def test_openapi_check_fails_when_the_committed_file_drifted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import risk_processor.query.openapi as openapi

    stale = tmp_path / "openapi.v1.json"
    stale.write_bytes(openapi.rendered().replace(b"Active alerts", b"Alerts"))
    monkeypatch.setattr(openapi, "COMMITTED", stale)
    assert openapi.main(["--check"]) == 1


SCHEMATHESIS_EXAMPLES = int(os.environ.get("QUERY_SCHEMATHESIS_EXAMPLES", "40"))


async def test_schemathesis_finds_no_response_that_breaks_the_openapi_document(
    tmp_path: Path,
) -> None:
    """Bounded property-based run: every operation, SCHEMATHESIS_EXAMPLES cases each
    (a few hundred in all), every check; the stream is excluded (it never ends)."""
    async with serving(demo_state(), token=TOKEN) as base:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{base}/v1/openapi.json",
            "--checks", "all",
            "--max-examples", str(SCHEMATHESIS_EXAMPLES),
            "--exclude-path", "/v1/stream",
            "--header", f"Authorization: Bearer {TOKEN}",
            "--seed", "1",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
            cwd=tmp_path,  # its example database
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
    text = out.decode()
    print(text[-3000:])
    assert proc.returncode == 0, text[-3000:]
    cases = re.search(r"(\d+) generated", text)
    assert cases is not None, text[-3000:]
    assert int(cases.group(1)) >= 100


def test_binding_beyond_loopback_without_a_token_stops_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from risk_processor.settings import RiskProcessorSettings
    from riskwatch_common.settings import ConfigError, load_settings

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("RISK_PROCESSOR_HTTP_HOST", "0.0.0.0")
    for unset in (None, "", "  "):  # compose passes ${RISK_PROCESSOR_QUERY_TOKEN:-}
        if unset is not None:
            monkeypatch.setenv("RISK_PROCESSOR_QUERY_TOKEN", unset)
        with pytest.raises(ConfigError, match="RISK_PROCESSOR_QUERY_TOKEN") as raised:
            load_settings(RiskProcessorSettings)
        assert "beyond loopback" in str(raised.value)
    monkeypatch.setenv("RISK_PROCESSOR_QUERY_TOKEN", f"  {TOKEN}\n")
    settings = load_settings(RiskProcessorSettings)
    assert settings.query_token is not None
    assert settings.query_token.get_secret_value() == TOKEN  # stripped
    assert TOKEN not in repr(settings)
    monkeypatch.setenv("RISK_PROCESSOR_HTTP_HOST", "127.0.0.1")
    monkeypatch.delenv("RISK_PROCESSOR_QUERY_TOKEN")
    assert load_settings(RiskProcessorSettings).query_token is None


async def test_an_open_stream_does_not_hold_up_the_server_when_it_stops() -> None:
    state = demo_state()
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession()
    try:
        # aiohttp's default shutdown timeout: the server would wait 60 s for the stream
        async with serving(state, shutdown_timeout=60) as base:
            resp = await session.get(f"{base}/v1/stream")
            await asyncio.wait_for(read_events(resp, 1), 5)
            stopping_at = loop.time()
        assert loop.time() - stopping_at < 5
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("rule", "value", "shown"),
    [
        ("tier_cap_proximity", "0.95", "95.0%"),
        ("account_mm_rate", "0.517", "51.7%"),
        ("liquidation_distance", "4.99", "4.9%"),
        ("unrealized_loss", "-1430.95", "-$1,431"),
        ("order_blocked_by_leverage", "3000000", "3000000"),
    ],
)
async def test_alert_values_are_shown_in_their_rules_unit(
    rule: str, value: str, shown: str
) -> None:
    state = FakeState()
    state.put_alerts("main", [alert_state("main", rule, value=value)])
    async with serving(state) as base:
        _, body = await get(f"{base}/v1/alerts")
    assert body["alerts"][0]["display"]["value"] == shown


async def test_requests_are_counted_by_operation_and_status_without_the_token() -> None:
    from prometheus_client import REGISTRY, generate_latest

    def seen(operation: str, status: str) -> float:
        value = REGISTRY.get_sample_value(
            "risk_processor_query_requests_total", {"operation": operation, "status": status}
        )
        return value or 0.0

    before = (seen("what_if", "401"), seen("what_if", "200"), seen("exposure", "404"))
    async with serving(demo_state(), token=TOKEN) as base:
        await post(f"{base}/v1/what-if", BOB_ORDER)
        await post(f"{base}/v1/what-if", BOB_ORDER, {"Authorization": f"Bearer {TOKEN}"})
        await get(f"{base}/v1/exposure/nobody", {"Authorization": f"Bearer {TOKEN}"})
    after = (seen("what_if", "401"), seen("what_if", "200"), seen("exposure", "404"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    assert TOKEN.encode() not in generate_latest(REGISTRY)
