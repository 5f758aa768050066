"""One Bybit v5 WebSocket link: connect, auth, subscribe, app-level ping, dead-link detection.

Liveness is judged from pongs to our ``{"op":"ping"}`` (sent every ``ping_interval_s``,
docs/bybit-v5.md §3.4), not from data: a quiet private stream is normal, and a link that still
delivers bytes but never answers is not trustworthy. Time the consumer spends holding a
frame (a full publish queue) is not counted against the link, since no pong can be read
meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp
import orjson

from ingestor.bybit.signing import ws_auth_message


class LinkError(Exception):
    """The link is gone or unusable; ``cause`` labels the metric (closed, dead, error)."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


class AuthRejected(Exception):
    def __init__(self, message: str, ret_code: int | None = None) -> None:
        super().__init__(message)
        self.ret_code = ret_code


class SubscribeRejected(Exception):
    pass


_req_ids = itertools.count(1)


def _is_pong(frame: dict[str, Any]) -> bool:
    # private: {"op":"pong"}; public linear: {"op":"ping","ret_msg":"pong"} (docs/bybit-v5.md §3.4)
    return frame.get("op") == "pong" or frame.get("ret_msg") == "pong"


class WsLink:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        ping_interval_s: float,
        pong_timeout_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        on_reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.url = url
        # Replies to requests sent while streaming (public (un)subscribe): a refusal must
        # not vanish, or a symbol would silently go without prices.
        self._on_reply = on_reply
        self._session = session
        self._ping_interval = ping_interval_s
        self._pong_timeout = pong_timeout_s
        self._mono = monotonic
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: deque[tuple[bytes, dict[str, Any]]] = deque()
        self._send_lock = asyncio.Lock()
        self.last_pong = 0.0
        self.last_message = 0.0
        self._next_ping = 0.0

    async def connect(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                self._ws = await self._session.ws_connect(
                    self.url,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                    autoping=True,
                    heartbeat=None,
                    max_msg_size=16 * 1024 * 1024,
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise LinkError("connect", f"connect to {self.url} failed: {exc!r}") from exc
        now = self._mono()
        self.last_pong = self.last_message = now
        self._next_ping = now + self._ping_interval

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise LinkError("closed", "send on a closed link")
        async with self._send_lock:
            try:
                await ws.send_str(orjson.dumps(message).decode())
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                raise LinkError("error", f"send failed: {exc!r}") from exc

    async def authenticate(
        self, api_key: str, api_secret: str, *, expires_ms: int, timeout_s: float
    ) -> None:
        req_id = f"auth-{next(_req_ids)}"
        await self.send(ws_auth_message(api_key, api_secret, expires_ms, req_id))
        reply = await self._await_op("auth", timeout_s)
        if not reply.get("success"):
            msg = str(reply.get("ret_msg") or reply.get("retMsg") or "auth rejected")
            raise AuthRejected(msg, _int_or_none(reply.get("ret_code", reply.get("retCode"))))

    async def subscribe(self, topic_groups: Sequence[Sequence[str]], *, timeout_s: float) -> None:
        """One request per group (Bybit rejects all-in-one and categorised topics mixed in
        one request, docs/bybit-v5.md §3.3); waits for every ack."""
        for topics in topic_groups:
            await self.send_subscription("subscribe", topics)
        for _ in topic_groups:
            reply = await self._await_op("subscribe", timeout_s)
            if not reply.get("success"):
                raise SubscribeRejected(str(reply.get("ret_msg") or reply))

    async def send_subscription(self, op: str, topics: Sequence[str]) -> str:
        """Subscribe/unsubscribe without waiting (public tickers change while streaming);
        returns the req_id the reply will carry."""
        req_id = f"{op[:5]}-{next(_req_ids)}"
        await self.send({"req_id": req_id, "op": op, "args": list(topics)})
        return req_id

    async def _await_op(self, op: str, timeout_s: float) -> dict[str, Any]:
        """Read until the reply to ``op``; data frames read meanwhile are kept for later."""
        deadline = self._mono() + timeout_s
        while True:
            remaining = deadline - self._mono()
            if remaining <= 0:
                raise LinkError("dead", f"no {op} reply within {timeout_s}s")
            raw, frame = await self._receive(remaining)
            if raw is None or frame is None:
                continue
            if frame.get("op") == op:
                return frame
            if _is_pong(frame):
                self.last_pong = self._mono()
                continue
            if "op" in frame and "topic" not in frame:
                continue  # another control reply (e.g. an unsubscribe ack)
            self._pending.append((raw, frame))

    async def _receive(self, timeout_s: float) -> tuple[bytes | None, dict[str, Any] | None]:
        ws = self._ws
        if ws is None:
            raise LinkError("closed", "not connected")
        try:
            msg = await ws.receive(timeout=max(timeout_s, 0.001))
        except TimeoutError:
            return None, None
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise LinkError("error", f"receive failed: {exc!r}") from exc
        if msg.type is aiohttp.WSMsgType.TEXT:
            raw = msg.data.encode()
        elif msg.type is aiohttp.WSMsgType.BINARY:
            raw = bytes(msg.data)
        elif msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            raise LinkError("closed", f"server closed the link (code {ws.close_code})")
        elif msg.type is aiohttp.WSMsgType.ERROR:
            raise LinkError("error", f"link error: {ws.exception()!r}")
        else:
            return None, None
        self.last_message = self._mono()
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw, {}
        return raw, frame if isinstance(frame, dict) else {}

    async def frames(self) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:
        """Data frames (``{}`` for frames that are not a JSON object) until the link fails.

        Raises LinkError: closed by the server, an error, or dead (no pong in time).
        """
        while self._pending:
            yield self._pending.popleft()
        while True:
            now = self._mono()
            if now >= self._next_ping:
                await self.send({"req_id": f"ping-{next(_req_ids)}", "op": "ping"})
                self._next_ping = now + self._ping_interval
            silent = now - self.last_pong
            if silent > self._pong_timeout:
                raise LinkError("dead", f"no pong for {silent:.1f}s")
            wait = min(self._next_ping, self.last_pong + self._pong_timeout) - now
            raw, frame = await self._receive(wait)
            if raw is None or frame is None:
                continue
            if _is_pong(frame):
                self.last_pong = self._mono()
                continue
            if "op" in frame and "topic" not in frame:
                if self._on_reply is not None:
                    self._on_reply(frame)
                continue
            held_from = self._mono()
            yield raw, frame
            held = self._mono() - held_from
            if held > 0.05:
                # the consumer was blocked (backpressure); no pong could be read meanwhile
                self.last_pong += held

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(
                TimeoutError, aiohttp.ClientError, ConnectionError, RuntimeError
            ):
                await asyncio.wait_for(ws.close(), 2.0)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
