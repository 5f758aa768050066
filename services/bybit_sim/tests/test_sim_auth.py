"""Auth verification and the rate-limit window as pure functions."""

from __future__ import annotations

import pytest

from bybit_sim.auth import AuthError, sign_hex, verify_rest, verify_ws_auth
from bybit_sim.ratelimit import RateLimiter

NOW = 1_750_000_000_000
SECRETS = {"k": "s"}


def headers(
    query: str, ts: int, *, key: str = "k", secret: str = "s", recv: str = "5000"
) -> dict[str, str]:
    return {
        "X-BAPI-API-KEY": key,
        "X-BAPI-TIMESTAMP": str(ts),
        "X-BAPI-RECV-WINDOW": recv,
        "X-BAPI-SIGN": sign_hex(secret, f"{ts}{key}{recv}{query}"),
    }


def verify(hdrs: dict[str, str], query: str) -> None:
    verify_rest(
        hdrs, method="GET", raw_query=query, body="", now_ms=NOW, secret_for_key=SECRETS.get
    )


def code_of(hdrs: dict[str, str], query: str) -> int:
    with pytest.raises(AuthError) as refused:
        verify(hdrs, query)
    return refused.value.code


def test_docs_worked_example_sign_string_is_timestamp_key_window_query() -> None:
    # docs/bybit-v5.md §1.3: "1658384314791XXXXXXXXXX5000category=option&symbol=BTC-29JUL22-25000-C"
    query = "category=option&symbol=BTC-29JUL22-25000-C"
    hdrs = {
        "X-BAPI-API-KEY": "XXXXXXXXXX",
        "X-BAPI-TIMESTAMP": "1658384314791",
        "X-BAPI-RECV-WINDOW": "5000",
        "X-BAPI-SIGN": sign_hex("secret", "1658384314791XXXXXXXXXX5000" + query),
    }

    auth = verify_rest(
        hdrs,
        method="GET",
        raw_query=query,
        body="",
        now_ms=1658384314791,
        secret_for_key={"XXXXXXXXXX": "secret"}.get,
    )

    assert auth.api_key == "XXXXXXXXXX"


def test_signature_over_encoded_cursor_verifies_against_the_raw_query() -> None:
    query = "category=linear&cursor=page_args%3DBTCUSDT_0%26&settleCoin=USDT"

    verify(headers(query, NOW), query)


def test_signature_over_decoded_query_does_not_match_the_raw_query() -> None:
    sent = "category=linear&cursor=page_args%3DBTCUSDT_0%26"
    signed = "category=linear&cursor=page_args=BTCUSDT_0&"

    assert code_of(headers(signed, NOW), sent) == 10004


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-5000, True), (-5001, False), (999, True), (1000, False)],
)
def test_timestamp_window_is_now_minus_recv_window_to_now_plus_one_second(
    offset: int, accepted: bool
) -> None:
    query = "accountType=UNIFIED"
    hdrs = headers(query, NOW + offset)

    if accepted:
        verify(hdrs, query)
    else:
        assert code_of(hdrs, query) == 10002


def test_unknown_key_is_10003_and_bad_signature_is_10004() -> None:
    assert code_of(headers("a=1", NOW, key="nope"), "a=1") == 10003
    assert code_of(headers("a=1", NOW, secret="wrong"), "a=1") == 10004


def test_missing_auth_headers_are_http_401() -> None:
    with pytest.raises(AuthError) as refused:
        verify({}, "")

    assert refused.value.http_status == 401


def test_ws_auth_with_future_expiry_and_right_signature_returns_the_key() -> None:
    expires = NOW + 10_000
    args = ["k", expires, sign_hex("s", f"GET/realtime{expires}")]

    assert verify_ws_auth(args, now_ms=NOW, secret_for_key=SECRETS.get) == "k"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["k", NOW - 1, sign_hex("s", f"GET/realtime{NOW - 1}")], 10002),
        (["k", NOW + 1000, sign_hex("x", f"GET/realtime{NOW + 1000}")], 10004),
        (["nope", NOW + 1000, "00"], 10003),
        (["k", True, "00"], 10001),
        ("k", 10001),
    ],
)
def test_ws_auth_failures_carry_bybit_codes(args: object, code: int) -> None:
    with pytest.raises(AuthError) as refused:
        verify_ws_auth(args, now_ms=NOW, secret_for_key=SECRETS.get)

    assert refused.value.code == code


def test_rate_limiter_refuses_past_the_limit_and_frees_a_slot_after_one_second() -> None:
    limiter = RateLimiter(2)

    first = limiter.hit("main", "/x", NOW)
    limiter.hit("main", "/x", NOW + 10)
    refused = limiter.hit("main", "/x", NOW + 20)
    other_endpoint = limiter.hit("main", "/y", NOW + 20)
    later = limiter.hit("main", "/x", NOW + 1000)

    assert (first.allowed, first.remaining, first.reset_ms) == (True, 1, NOW)
    assert (refused.allowed, refused.remaining, refused.reset_ms) == (False, 0, NOW + 1000)
    assert other_endpoint.allowed
    assert later.allowed
