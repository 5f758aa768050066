"""Server-side checks of Bybit v5 REST and WebSocket auth (docs/bybit-v5.md §1.2-1.4, §3.2).

REST: sign string = timestamp + apiKey + recvWindow + (raw query string | raw body), HMAC-SHA256
lowercase hex. The query string is taken exactly as it arrived on the wire, so a client that
re-encodes a cursor after signing gets 10004, as on Bybit.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_RECV_WINDOW_MS = 5000
# Bybit rejects a client clock more than 1 s ahead whatever the recv window (docs/bybit-v5.md §1.2).
MAX_CLOCK_AHEAD_MS = 1000


class AuthError(Exception):
    def __init__(self, code: int, message: str, *, http_status: int = 200) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class RestAuth:
    api_key: str
    timestamp_ms: int
    recv_window_ms: int


def sign_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def verify_rest(
    headers: Mapping[str, str],
    *,
    method: str,
    raw_query: str,
    body: str,
    now_ms: int,
    secret_for_key: Callable[[str], str | None],
) -> RestAuth:
    """Check the X-BAPI-* headers; raise AuthError with Bybit's retCode on failure.

    Order of checks follows what a client sees from Bybit: unknown key (10003) before clock
    (10002) before signature (10004).
    """
    api_key = headers.get("X-BAPI-API-KEY", "")
    timestamp = headers.get("X-BAPI-TIMESTAMP", "")
    signature = headers.get("X-BAPI-SIGN", "")
    recv_text = headers.get("X-BAPI-RECV-WINDOW", "")
    if not api_key or not timestamp or not signature:
        # docs/bybit-v5.md §1.4: missing auth headers are an HTTP 401.
        raise AuthError(10003, "missing X-BAPI auth headers", http_status=401)
    secret = secret_for_key(api_key)
    if secret is None:
        raise AuthError(10003, "API key is invalid.")
    try:
        ts = int(timestamp)
        recv_window = int(recv_text) if recv_text else DEFAULT_RECV_WINDOW_MS
    except ValueError:
        raise AuthError(10001, "params error: X-BAPI-TIMESTAMP/RECV-WINDOW not integers") from None
    if not (now_ms - recv_window <= ts < now_ms + MAX_CLOCK_AHEAD_MS):
        raise AuthError(
            10002,
            "invalid request, please check your server timestamp or recv_window param. "
            f"req_timestamp[{ts}],server_timestamp[{now_ms}],recv_window[{recv_window}]",
        )
    payload = timestamp + api_key + recv_text + (raw_query if method == "GET" else body)
    if not hmac.compare_digest(sign_hex(secret, payload), signature):
        raise AuthError(10004, f"error sign! origin_string[{payload}]")
    return RestAuth(api_key=api_key, timestamp_ms=ts, recv_window_ms=recv_window)


def verify_ws_auth(
    args: object, *, now_ms: int, secret_for_key: Callable[[str], str | None]
) -> str:
    """Check `{"op":"auth","args":[key, expires_ms, sig]}`; return the api key.

    sig = HMAC-SHA256 hex of "GET/realtime" + str(expires); expires must be in the future.
    The failure texts are the ones clients have recorded from Bybit ("Invalid apikey",
    "Params Error"); Bybit does not document them.
    """
    if not isinstance(args, list) or len(args) != 3:
        raise AuthError(10001, "Params Error")
    api_key, expires, signature = args
    if not isinstance(api_key, str) or not isinstance(signature, str):
        raise AuthError(10001, "Params Error")
    # bool is an int subclass; a JSON true is not an expiry.
    if isinstance(expires, bool) or not isinstance(expires, int | str):
        raise AuthError(10001, "Params Error")
    try:
        expires_ms = int(expires)
    except ValueError:
        raise AuthError(10001, "Params Error") from None
    secret = secret_for_key(api_key)
    if secret is None:
        raise AuthError(10003, "Invalid apikey")
    if expires_ms <= now_ms:
        raise AuthError(10002, "Params Error")
    if not hmac.compare_digest(sign_hex(secret, f"GET/realtime{expires_ms}"), signature):
        raise AuthError(10004, "Invalid sign")
    return api_key
