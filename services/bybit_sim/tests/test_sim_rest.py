"""REST over a real local socket: auth, envelopes, pagination, rate limits, admin endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bybit_sim.scenario import Scenario

# Fixture types live in conftest.py, which test modules cannot import (importlib mode).
StartSim = Any

POSITIONS = "/v5/position/list"
ORDERS = "/v5/order/realtime"
WALLET = "/v5/account/wallet-balance"


def envelope_ok(body: dict[str, object]) -> None:
    assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
    assert (body["retCode"], body["retMsg"], body["retExtInfo"]) == (0, "OK", {})


async def test_position_list_with_valid_signature_returns_envelope_and_rate_headers(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get_private(POSITIONS, "category=linear&settleCoin=USDT")

    assert resp.status == 200
    envelope_ok(resp.body)
    result = resp.body["result"]
    assert [r["symbol"] for r in result["list"]] == ["BTCUSDT", "ETHUSDT"]
    assert result["nextPageCursor"] == ""
    assert result["category"] == "linear"
    assert resp.headers["X-Bapi-Limit"] == "50"
    assert resp.headers["X-Bapi-Limit-Status"] == "49"
    assert resp.headers["X-Bapi-Limit-Reset-Timestamp"] == str(sim.clock.now_ms())


async def test_rest_with_unknown_key_returns_10003(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get_private(POSITIONS, "category=linear&settleCoin=USDT", key="nope")

    assert resp.body["retCode"] == 10003
    assert "X-Bapi-Limit" not in resp.headers


async def test_rest_with_bad_signature_returns_10004(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get_private(POSITIONS, "category=linear&settleCoin=USDT", secret="wrong")

    assert resp.body["retCode"] == 10004
    assert str(resp.body["retMsg"]).startswith("error sign!")


async def test_rest_with_stale_timestamp_returns_10002(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get_private(
        POSITIONS, "category=linear&settleCoin=USDT", ts=sim.clock.now_ms() - 6000
    )

    assert resp.body["retCode"] == 10002


async def test_rest_without_auth_headers_is_http_401(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get(POSITIONS, "category=linear&settleCoin=USDT")

    assert resp.status == 401


async def test_position_cursor_passed_back_unchanged_returns_the_next_page(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    first = await sim.get_private(POSITIONS, "category=linear&limit=1&settleCoin=USDT")
    cursor = first.body["result"]["nextPageCursor"]
    second = await sim.get_private(
        POSITIONS, f"category=linear&cursor={cursor}&limit=1&settleCoin=USDT"
    )

    assert "%3D" in cursor
    assert cursor.endswith("%26")
    assert [r["symbol"] for r in first.body["result"]["list"]] == ["BTCUSDT"]
    envelope_ok(second.body)
    assert [r["symbol"] for r in second.body["result"]["list"]] == ["ETHUSDT"]
    assert second.body["result"]["nextPageCursor"] == ""


async def test_position_cursor_re_encoded_by_client_is_refused_as_invalid(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    first = await sim.get_private(POSITIONS, "category=linear&limit=1&settleCoin=USDT")
    double_encoded = first.body["result"]["nextPageCursor"].replace("%", "%25")

    resp = await sim.get_private(
        POSITIONS, f"category=linear&cursor={double_encoded}&limit=1&settleCoin=USDT"
    )

    assert resp.body["retCode"] == 10001


async def test_position_list_with_limit_out_of_range_returns_10001(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get_private(POSITIONS, "category=linear&limit=201&settleCoin=USDT")

    assert resp.body["retCode"] == 10001


async def test_order_realtime_pages_newest_first_through_the_cursor(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    for n in range(3):
        sim.clock.advance(10)
        placed = await sim.post(
            "/sim/action",
            {"action": "place_order", "account": "main", "symbol": "ETHUSDT", "side": "Buy",
             "qty": "1", "price": str(3000 + n), "order_link_id": f"o{n}"},
        )  # fmt: skip
        assert placed.body["ok"], placed.body

    first = await sim.get_private(ORDERS, "category=linear&limit=2&settleCoin=USDT")
    cursor = first.body["result"]["nextPageCursor"]
    second = await sim.get_private(
        ORDERS, f"category=linear&cursor={cursor}&limit=2&settleCoin=USDT"
    )

    assert [o["orderLinkId"] for o in first.body["result"]["list"]] == ["o2", "o1"]
    assert [o["orderLinkId"] for o in second.body["result"]["list"]] == ["o0"]
    assert second.body["result"]["nextPageCursor"] == ""
    row = second.body["result"]["list"][0]
    assert (row["orderStatus"], row["leavesQty"], row["leavesValue"]) == ("New", "1", "3000")


async def test_rate_limit_exceeded_returns_10006_with_headers_until_the_window_rolls(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario, rate_limit_per_s=3)
    first_ms = sim.clock.now_ms()

    statuses = []
    for _ in range(4):
        resp = await sim.get_private(WALLET, "accountType=UNIFIED")
        statuses.append((resp.body["retCode"], resp.headers["X-Bapi-Limit-Status"]))
        sim.clock.advance(1)
    other_endpoint = await sim.get_private(POSITIONS, "category=linear&settleCoin=USDT")
    sim.clock.set(first_ms + 1000)
    after_window = await sim.get_private(WALLET, "accountType=UNIFIED")

    assert statuses == [(0, "2"), (0, "1"), (0, "0"), (10006, "0")]
    assert resp.body["retMsg"] == "Too many visits!"
    assert resp.headers["X-Bapi-Limit"] == "3"
    assert resp.headers["X-Bapi-Limit-Reset-Timestamp"] == str(first_ms + 1000)
    assert other_endpoint.body["retCode"] == 0
    assert after_window.body["retCode"] == 0


async def test_rate_limit_fault_refuses_next_calls_and_can_omit_the_reset_header(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)
    armed = await sim.post(
        "/sim/fault",
        {"kind": "rate_limit", "account": "main", "count": 1, "omit_reset_header": True},
    )

    refused = await sim.get_private(WALLET, "accountType=UNIFIED")
    allowed = await sim.get_private(WALLET, "accountType=UNIFIED")

    assert armed.body["ok"]
    assert refused.body["retCode"] == 10006
    assert "X-Bapi-Limit-Reset-Timestamp" not in refused.headers
    assert allowed.body["retCode"] == 0


async def test_wallet_balance_unified_returns_one_account_row(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get_private(WALLET, "accountType=UNIFIED")
    wrong = await sim.get_private(WALLET, "accountType=CONTRACT")

    (row,) = resp.body["result"]["list"]
    assert (row["accountType"], row["totalPerpUPL"], row["totalWalletBalance"]) == (
        "UNIFIED",
        "1600",
        "20000",
    )
    assert wrong.body["retCode"] == 10001


async def test_risk_limit_without_symbol_pages_15_symbols_per_cursor(
    start_sim: StartSim, kit: Any
) -> None:
    names = [f"C{n:02d}USDT" for n in range(20)]
    symbols = kit.symbol_yaml("BTCUSDT", "70000") + "".join(kit.symbol_yaml(s) for s in names)
    sim = await start_sim(kit.scenario_yaml(symbols=symbols))

    first = await sim.get("/v5/market/risk-limit", "category=linear")
    cursor = first.body["result"]["nextPageCursor"]
    second = await sim.get("/v5/market/risk-limit", f"category=linear&cursor={cursor}")

    def symbols_of(resp: Any) -> list[str]:
        return sorted({r["symbol"] for r in resp.body["result"]["list"]})

    assert len(symbols_of(first)) == 15
    assert len(symbols_of(second)) == 6
    assert set(symbols_of(first)) | set(symbols_of(second)) == {"BTCUSDT", *names}
    assert "%3D" in cursor
    assert second.body["result"]["nextPageCursor"] == ""


async def test_risk_limit_for_one_symbol_returns_bybit_rows(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get("/v5/market/risk-limit", "category=linear&symbol=BTCUSDT")

    rows = resp.body["result"]["list"]
    assert rows[0] == {
        "id": 1, "symbol": "BTCUSDT", "riskLimitValue": "1000000", "maintenanceMargin": "0.005",
        "initialMargin": "0.01", "isLowestRisk": 1, "maxLeverage": "100.00", "mmDeduction": "",
    }  # fmt: skip
    assert (rows[1]["maxLeverage"], rows[1]["mmDeduction"]) == ("90.00", "600")
    assert (rows[2]["maxLeverage"], rows[2]["mmDeduction"]) == ("80.00", "2160")


async def test_market_time_and_tickers_are_public(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    time = await sim.get("/v5/market/time")
    tickers = await sim.get("/v5/market/tickers", "category=linear&symbol=SOLUSDT")

    now = sim.clock.now_ms()
    assert time.body["result"] == {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}
    assert time.body["time"] == now
    (row,) = tickers.body["result"]["list"]
    assert (row["symbol"], row["markPrice"]) == ("SOLUSDT", "176.5")


async def test_query_api_names_the_account_uid_and_master(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    main = await sim.get_private("/v5/user/query-api", "")
    sub = await sim.get_private(
        "/v5/user/query-api", "", key="sim-sub-hedge-key", secret="sim-sub-hedge-secret"
    )

    assert (main.body["result"]["isMaster"], main.body["result"]["parentUid"]) == (True, "0")
    assert sub.body["result"]["isMaster"] is False
    assert sub.body["result"]["parentUid"] == str(main.body["result"]["userID"])


async def test_query_api_reports_the_scenario_key_permissions_whitelist_and_expiry(
    start_sim: StartSim, kit: Any
) -> None:
    # START_MS is 2025-06-15T15:06:40Z; the key expires 10 days and a few hours later
    accounts = """
  - name: trader
    api_key: sim-trader-key
    api_secret: sim-trader-secret
    wallet_balance: 1000
    key:
      read_only: false
      permissions: {ContractTrade: [Order, Position], Wallet: [AccountTransfer, Withdraw]}
      ips: [203.0.113.7]
      expires_at: 2025-06-26T00:00:00Z
"""
    sim = await start_sim(kit.scenario_yaml(accounts=accounts))

    default = (await sim.get_private("/v5/user/query-api", "")).body["result"]
    trader = (
        await sim.get_private(
            "/v5/user/query-api", "", key="sim-trader-key", secret="sim-trader-secret"
        )
    ).body["result"]

    assert (default["readOnly"], default["ips"], default["expiredAt"]) == (1, ["*"], "")
    assert default["deadlineDay"] == -1
    assert default["permissions"] == {"ContractTrade": ["Order", "Position"]}
    assert (trader["readOnly"], trader["ips"]) == (0, ["203.0.113.7"])
    assert trader["permissions"]["Wallet"] == ["AccountTransfer", "Withdraw"]
    assert (trader["expiredAt"], trader["deadlineDay"]) == ("2025-06-26T00:00:00Z", 10)


async def test_ground_truth_reports_bybit_rows_and_risk_per_account(
    start_sim: StartSim, drift_scenario: Scenario
) -> None:
    sim = await start_sim(drift_scenario)

    resp = await sim.get("/sim/ground-truth", "account=sub_90x")
    missing = await sim.get("/sim/ground-truth", "account=nobody")

    (account,) = resp.body["accounts"]
    assert account["account"] == "sub_90x"
    assert account["positions"][0]["avgPrice"] == "62500"
    assert account["wallet"]["accountType"] == "UNIFIED"
    assert account["risk"][0]["maxPositionValue"] == "2600000"
    assert resp.body["marks"]["BTCUSDT"] == "64000"
    assert missing.status == 404


async def test_sim_action_fill_is_logged_in_frames_and_jsonl_file(
    start_sim: StartSim, sample_scenario: Scenario, tmp_path: Path
) -> None:
    log_path = tmp_path / "frames.jsonl"
    sim = await start_sim(sample_scenario, frames_log_path=log_path)
    placed = await sim.post(
        "/sim/action",
        {
            "action": "place_order",
            "account": "main",
            "symbol": "BTCUSDT",
            "side": "Buy",
            "qty": "0.1",
            "price": "69000",
        },
    )
    filled = await sim.post(
        "/sim/action",
        {"action": "fill_order", "account": "main", "order_id": placed.body["orderId"]},
    )

    frames = await sim.get("/sim/frames", "account=main")
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines()]

    logged = frames.body["frames"]
    assert [f["topic"] for f in logged] == [
        "order",
        "position",
        "execution",
        "order",
        "position",
        "wallet",
    ]
    assert [f["id"] for f in logged[2:]] == filled.body["frames"]
    assert {"index", "id", "account", "topic", "time", "rows", "subscribers", "fault"} <= logged[
        0
    ].keys()
    assert "frame" not in logged[0]
    assert [line["id"] for line in lines] == [f["id"] for f in logged]
    assert lines[2]["frame"]["data"][0]["execQty"] == "0.1"


async def test_sim_action_refused_by_exchange_is_400_with_retcode(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.post(
        "/sim/action", {"action": "cancel_order", "account": "main", "order_id": "nope"}
    )
    bad = await sim.post("/sim/action", {"action": "teleport"})

    assert (resp.status, resp.body["retCode"]) == (400, 110001)
    assert bad.status == 400


async def test_healthz_reports_ok_and_scenario(
    start_sim: StartSim, sample_scenario: Scenario
) -> None:
    sim = await start_sim(sample_scenario)

    resp = await sim.get("/sim/healthz")

    assert resp.status == 200
    assert (resp.body["status"], resp.body["scenario"]) == ("ok", "sample_portfolio")


async def test_wallet_balance_with_custom_recv_window_header_is_signed_with_it(
    start_sim: StartSim, sample_scenario: Scenario, kit: Any
) -> None:
    sim = await start_sim(sample_scenario)
    query = "accountType=UNIFIED"
    headers = kit.rest_headers(
        kit.MAIN_KEY, kit.MAIN_SECRET, query, ts=sim.clock.now_ms() - 15_000, recv="20000"
    )

    resp = await sim.get(WALLET, query, headers)

    assert resp.body["retCode"] == 0


STANDARD_ACCOUNT = """
  - name: classic
    api_key: sim-classic-key
    api_secret: sim-classic-secret
    account_type: standard
    wallet_balance: 1000
"""


async def test_wallet_balance_of_standard_account_takes_contract_and_echoes_it(
    start_sim: StartSim, kit: Any
) -> None:
    sim = await start_sim(kit.scenario_yaml(accounts=STANDARD_ACCOUNT))
    classic = {"key": "sim-classic-key", "secret": "sim-classic-secret"}

    contract = await sim.get_private(WALLET, "accountType=CONTRACT", **classic)
    unified = await sim.get_private(WALLET, "accountType=UNIFIED", **classic)
    main_contract = await sim.get_private(WALLET, "accountType=CONTRACT")
    truth = await sim.get("/sim/ground-truth", "account=classic")

    (row,) = contract.body["result"]["list"]
    assert (row["accountType"], row["totalWalletBalance"]) == ("CONTRACT", "1000")
    assert (unified.body["retCode"], unified.body["retMsg"]) == (
        10001,
        "accountType only support CONTRACT.",
    )
    assert (main_contract.body["retCode"], main_contract.body["retMsg"]) == (
        10001,
        "accountType only support UNIFIED.",
    )
    (account,) = truth.body["accounts"]
    assert (account["accountType"], account["wallet"]["accountType"]) == ("standard", "CONTRACT")


async def test_account_info_reports_unified_margin_status_by_account_type(
    start_sim: StartSim, kit: Any
) -> None:
    sim = await start_sim(kit.scenario_yaml(accounts=STANDARD_ACCOUNT))

    unified = await sim.get_private("/v5/account/info", "")
    standard = await sim.get_private(
        "/v5/account/info", "", key="sim-classic-key", secret="sim-classic-secret"
    )
    standard_key = await sim.get_private(
        "/v5/user/query-api", "", key="sim-classic-key", secret="sim-classic-secret"
    )

    assert unified.body["result"]["unifiedMarginStatus"] == 5
    assert standard.body["result"]["unifiedMarginStatus"] == 1
    assert standard_key.body["result"]["uta"] == 0


async def test_wallet_frame_of_standard_account_carries_contract(
    start_sim: StartSim, kit: Any
) -> None:
    sim = await start_sim(kit.scenario_yaml(accounts=STANDARD_ACCOUNT))
    ws = await sim.private_ws("sim-classic-key", "sim-classic-secret", ["wallet"])
    placed = await sim.post(
        "/sim/action",
        {"action": "place_order", "account": "classic", "symbol": "BTCUSDT", "side": "Buy",
         "qty": "0.001", "price": "70000"},
    )  # fmt: skip

    await sim.post(
        "/sim/action",
        {"action": "fill_order", "account": "classic", "order_id": placed.body["orderId"]},
    )
    wallet = await ws.receive_json(timeout=5)

    assert (wallet["topic"], wallet["data"][0]["accountType"]) == ("wallet", "CONTRACT")
