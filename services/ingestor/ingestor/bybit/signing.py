"""Bybit v5 request signing (docs/bybit-v5.md §1.3 REST, §3.2 WebSocket auth)."""

from __future__ import annotations

import hashlib
import hmac


def hmac_hex(secret: str, payload: str) -> str:
    """HMAC-SHA256 of ``payload`` keyed with ``secret``, lowercase hex."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def rest_sign_payload(timestamp_ms: int, api_key: str, recv_window_ms: int, query: str) -> str:
    """GET: timestamp + apiKey + recvWindow + the exact query string sent."""
    return f"{timestamp_ms}{api_key}{recv_window_ms}{query}"


def rest_headers(
    *, api_key: str, api_secret: str, timestamp_ms: int, recv_window_ms: int, query: str
) -> dict[str, str]:
    payload = rest_sign_payload(timestamp_ms, api_key, recv_window_ms, query)
    return {
        "X-BAPI-API-KEY": api_key,
        "X-BAPI-TIMESTAMP": str(timestamp_ms),
        "X-BAPI-RECV-WINDOW": str(recv_window_ms),
        "X-BAPI-SIGN": hmac_hex(api_secret, payload),
    }


def ws_auth_message(
    api_key: str, api_secret: str, expires_ms: int, req_id: str
) -> dict[str, object]:
    """``{"op":"auth","args":[key, expires, hex(HMAC(secret, "GET/realtime"+expires))]}``."""
    signature = hmac_hex(api_secret, f"GET/realtime{expires_ms}")
    return {"req_id": req_id, "op": "auth", "args": [api_key, expires_ms, signature]}
