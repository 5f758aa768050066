"""Bybit v5 signing: the guide's worked example string, HMAC hex, WebSocket auth."""

from __future__ import annotations

import hashlib
import hmac

from ingestor.bybit import signing


def test_rest_payload_matches_the_worked_example_in_bybit_v5_md() -> None:
    payload = signing.rest_sign_payload(
        1658384314791, "XXXXXXXXXX", 5000, "category=option&symbol=BTC-29JUL22-25000-C"
    )
    assert payload == "1658384314791XXXXXXXXXX5000category=option&symbol=BTC-29JUL22-25000-C"


def test_hmac_is_lowercase_hex_sha256() -> None:
    # RFC 4231 test case 2
    assert (
        signing.hmac_hex("Jefe", "what do ya want for nothing?")
        == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_rest_headers_sign_the_exact_query_including_an_encoded_cursor() -> None:
    query = "category=linear&settleCoin=USDT&limit=50&cursor=page_args%3Dfd43%26symbol%3D6%26"
    headers = signing.rest_headers(
        api_key="key",
        api_secret="secret",
        timestamp_ms=1700000000000,
        recv_window_ms=5000,
        query=query,
    )

    expected = hmac.new(
        b"secret", f"1700000000000key5000{query}".encode(), hashlib.sha256
    ).hexdigest()
    assert headers == {
        "X-BAPI-API-KEY": "key",
        "X-BAPI-TIMESTAMP": "1700000000000",
        "X-BAPI-RECV-WINDOW": "5000",
        "X-BAPI-SIGN": expected,
    }


def test_ws_auth_signs_get_realtime_plus_expires() -> None:
    msg = signing.ws_auth_message("key", "secret", 1700000010000, "r1")

    expected = hmac.new(b"secret", b"GET/realtime1700000010000", hashlib.sha256).hexdigest()
    assert msg == {"req_id": "r1", "op": "auth", "args": ["key", 1700000010000, expected]}
