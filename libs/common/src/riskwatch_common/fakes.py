"""Local fakes of the outside HTTP systems, speaking their real protocol.

The Telegram Bot API (``sendMessage``, ``getChat``, ``getUpdates`` long polling), a Slack
incoming webhook and an OpenAI-compatible LLM gateway (HolySheep), each a real aiohttp
server on loopback: the notifier's tests, ``riskwatch doctor``'s tests and
``bench/e2e.py`` talk to them over real HTTP. A test queues replies (errors, rate limits,
a hung request) to script what the service answers next; every accepted message is kept,
with the wall-clock time its request arrived (what the end-to-end benchmark measures to).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import orjson
from aiohttp import web

TELEGRAM_TOKEN = "7012345678:AAF3kq9ZrXw_fakeButRealLooking-Token42"
TELEGRAM_CHAT_ID = "-1001234567890"
HOLYSHEEP_API_KEY = "hs-test-0123456789abcdef"


@dataclass
class Reply:
    """A scripted answer: status, body (dict -> JSON, str -> text), or a request that hangs."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class _TelegramHtml(HTMLParser):
    """Telegram's parse check, as far as our messages go: known tags, escaped text."""

    TAGS = frozenset({"b", "strong", "i", "em", "u", "s", "code", "pre", "a", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.bad = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.bad |= tag not in self.TAGS
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.bad |= not self.stack or self.stack.pop() != tag

    def handle_data(self, data: str) -> None:
        self.bad |= "<" in data or ">" in data

    def handle_entityref(self, name: str) -> None:
        self.bad |= name not in ("lt", "gt", "amp", "quot")


def telegram_accepts(text: str) -> bool:
    """Whether Telegram would parse ``text`` sent with ``parse_mode=HTML``."""
    parser = _TelegramHtml()
    parser.feed(text)
    parser.close()
    if parser.bad or parser.stack:
        return False
    return all(
        text[i:].startswith(("&lt;", "&gt;", "&amp;", "&quot;", "&#"))
        for i, ch in enumerate(text)
        if ch == "&"
    )


class FakeHttpServer:
    """An aiohttp server on a free loopback port; subclasses give the routes."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        app.add_routes(self.routes())
        # no access log: it would print request paths, which hold the token
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _respond(self, reply: Reply) -> web.Response:
        if reply.hang:
            await self._release.wait()
        if isinstance(reply.body, str):
            return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
        return web.Response(
            status=reply.status,
            body=orjson.dumps(reply.body),
            headers=reply.headers,
            content_type="application/json",
        )

    def hang(self) -> None:
        """The next request gets no answer until the server stops."""
        self.replies.append(Reply(hang=True))


@dataclass(frozen=True, slots=True)
class Received:
    """An accepted message and when (``time.time()``) its request reached the server;
    ``message_id`` is what the fake answered for it (0 where a server gives none)."""

    at: float
    payload: dict[str, Any]
    message_id: int = 0


class FakeTelegram(FakeHttpServer):
    """The Bot API's ``sendMessage`` and ``getChat``: checks the token and the HTML as
    Telegram does; ``chats`` are the chats the bot is in."""

    def __init__(self, token: str = TELEGRAM_TOKEN) -> None:
        super().__init__()
        self.token = token
        self.chats: dict[str, dict[str, Any]] = {
            TELEGRAM_CHAT_ID: {
                "id": int(TELEGRAM_CHAT_ID),
                "title": "riskwatch alerts",
                "type": "supergroup",
            }
        }
        self.messages: list[dict[str, Any]] = []  # accepted sendMessage payloads
        self.received: list[Received] = []  # the same, with arrival times
        self.requests = 0
        self._next_id = 100
        self.by_request: dict[int, Reply] = {}  # the reply to the n-th request (1-based)
        self.updates: list[dict[str, Any]] = []  # what getUpdates hands out
        self.update_offsets: list[int] = []  # the offset of every getUpdates call
        self._next_update = 5000
        self.down = False  # while set, sendMessage answers 502 Bad Gateway (an outage)
        self._update_arrived = asyncio.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/bot{token}/sendMessage", self._send),
            web.post("/bot{token}/getChat", self._get_chat),
            web.post("/bot{token}/getUpdates", self._get_updates),
            web.get("/bot{token}/getChat", self._get_chat),
        ]

    async def _get_chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.match_info["token"] != self.token:
            return await self._respond(self.error(401, "Unauthorized"))
        if request.method == "POST" and request.can_read_body:
            chat_id = str((await request.json()).get("chat_id", ""))
        else:
            chat_id = request.query.get("chat_id", "")
        if self.replies:
            return await self._respond(self.replies.popleft())
        chat = self.chats.get(chat_id)
        if chat is None:
            return await self._respond(self.error(400, "Bad Request: chat not found"))
        return await self._respond(Reply(200, {"ok": True, "result": chat}))

    async def _send(self, request: web.Request) -> web.Response:
        # stamped before the body is read: the moment the request reached Telegram
        arrived = time.time()
        self.requests += 1
        payload = await request.json()
        if request.match_info["token"] != self.token:
            return await self._respond(
                Reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            )
        if self.down:
            return await self._respond(self.error(502, "Bad Gateway"))
        if self.requests in self.by_request:
            return await self._respond(self.by_request.pop(self.requests))
        if self.replies:
            return await self._respond(self.replies.popleft())
        if len(payload.get("text", "")) > 4096:
            return await self._respond(self.error(400, "Bad Request: message is too long"))
        if payload.get("parse_mode") == "HTML" and not telegram_accepts(payload["text"]):
            return await self._respond(
                self.error(400, "Bad Request: can't parse entities: unsupported start tag")
            )
        self._next_id += 1
        self.messages.append(payload)
        self.received.append(Received(arrived, payload, self._next_id))
        return await self._respond(
            Reply(200, {"ok": True, "result": {"message_id": self._next_id, "text": "..."}})
        )

    def user_says(self, chat_id: str, text: str, *, reply_to_message_id: int | None = None) -> int:
        """A person writes ``text`` in ``chat_id``: the next getUpdates returns it.

        Returns the update id; a bot has handled it once it polls with a higher offset."""
        update_id = self._next_update
        self._next_update += 1
        message: dict[str, Any] = {
            "message_id": 4000 + update_id,
            "date": int(time.time()),
            "chat": {
                "id": int(chat_id),
                "type": "supergroup" if chat_id.startswith("-") else "private",
            },
            "from": {"id": 42, "is_bot": False, "first_name": "Trader"},
            "text": text,
        }
        if reply_to_message_id is not None:
            message["reply_to_message"] = {"message_id": reply_to_message_id}
        self.updates.append({"update_id": update_id, "message": message})
        self._update_arrived.set()
        return update_id

    async def _get_updates(self, request: web.Request) -> web.Response:
        """Long polling as the Bot API does it: updates from ``offset`` on (earlier ones
        are confirmed and forgotten), waiting up to ``timeout`` seconds for one."""
        if request.match_info["token"] != self.token:
            return await self._respond(self.error(401, "Unauthorized"))
        body = await request.json() if request.can_read_body else {}
        offset = int(body.get("offset") or 0)
        self.update_offsets.append(offset)
        self.updates = [u for u in self.updates if u["update_id"] >= offset]
        if not self.updates:
            self._update_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._update_arrived.wait(), timeout=float(body.get("timeout") or 0)
                )
        return await self._respond(Reply(200, {"ok": True, "result": self.updates[:100]}))

    @staticmethod
    def error(status: int, description: str, parameters: dict[str, Any] | None = None) -> Reply:
        """A Bot API error reply (``ok: false``, ``error_code``, ``description``)."""
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters is not None:
            body["parameters"] = parameters
        return Reply(status, body)

    def fail(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        """The next request gets this error."""
        self.replies.append(self.error(status, description, parameters))


class FakeSlack(FakeHttpServer):
    """A Slack incoming webhook (``POST`` of a JSON payload, ``ok`` in plain text) and the
    Web API's ``chat.postMessage`` with a bot token (JSON ``{"ok": true, "ts": ...}``)."""

    PATH = "/services/T0ABCDEF1/B0ABCDEF2/q7Xw9kLmN2pR4sT6vY8zA1bC"
    BOT_TOKEN = "xoxb-1234567890-0987654321-fAkEbOtToKeNfOrTeStS"
    CHANNELS = frozenset({"C0RISKDESK"})

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []
        self.posts: list[dict[str, Any]] = []  # accepted chat.postMessage payloads
        self.requests = 0
        self._ts = 1712345678.0001

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.PATH}"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(self.PATH, self._post),
            web.post("/api/chat.postMessage", self._post_message),
        ]

    async def _post_message(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.BOT_TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        payload = await request.json()
        if self.replies:
            return await self._respond(self.replies.popleft())
        if payload.get("channel") not in self.CHANNELS:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        self._ts += 0.0001
        ts = f"{self._ts:.6f}"
        self.posts.append({**payload, "ts": ts})
        return web.json_response({"ok": True, "channel": payload["channel"], "ts": ts})

    async def _post(self, request: web.Request) -> web.Response:
        self.requests += 1
        payload = await request.json()
        if self.replies:
            return await self._respond(self.replies.popleft())
        self.messages.append(payload)
        return web.Response(status=200, text="ok")

    def fail(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        """The next request gets this status and text."""
        self.replies.append(Reply(status, text, headers or {}))


class FakeDeadman(FakeHttpServer):
    """An outside dead-man's switch (healthchecks.io style): ``GET /ping/<uuid>`` is a ping."""

    PATH = "/ping/5f1c0c9e-2b7a-4e51-9a43-0d2f6c1b7e88"

    def __init__(self) -> None:
        super().__init__()
        self.pings: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.PATH}"

    def routes(self) -> list[web.RouteDef]:
        return [web.get(self.PATH, self._ping)]

    async def _ping(self, _: web.Request) -> web.Response:
        self.pings.append(time.time())
        return web.Response(status=200, text="OK")


def completion(
    content: str | None,
    *,
    prompt_tokens: int | None = 120,
    completion_tokens: int | None = 80,
    model: str = "deepseek-v3.2",
    finish_reason: str = "stop",
) -> Reply:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
    }
    if prompt_tokens is not None or completion_tokens is not None:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": (prompt_tokens or 0) + (completion_tokens or 0),
        }
    return Reply(200, body)


def good_answer(text: str = "<b>Reduce BTCUSDT</b> by 2,500 USD now.", **kw: Any) -> Reply:
    return completion(
        orjson.dumps({"text_html": text, "hedging_ideas": ["Short ETHUSDT perp"]}).decode(), **kw
    )


def gateway_error(status: int, code: str = "", headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        {"error": {"message": f"error {code}", "type": code, "param": None, "code": code}},
        headers or {},
    )


class FakeHolySheep(FakeHttpServer):
    """``POST /v1/chat/completions``, OpenAI's shape; ``default`` answers unscripted requests."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self.default = good_answer()
        self.gate: asyncio.Event | None = None  # when set up, requests wait for it
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._chat)]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.auth_headers.append(request.headers.get("Authorization", ""))
        self.requests.append(await request.json())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        reply = self.replies.popleft() if self.replies else self.default
        if reply.hang:
            await self._release.wait()
        body = reply.body if isinstance(reply.body, bytes | str) else orjson.dumps(reply.body)
        return web.Response(
            status=reply.status,
            body=body.encode() if isinstance(body, str) else body,
            headers=reply.headers,
            content_type="application/json",
        )

    @property
    def models(self) -> list[str]:
        return [r["model"] for r in self.requests]

    # scripting: each call queues the reply to the next request
    def answer(self, text: str = "<b>Reduce BTCUSDT</b> by 2,500 USD now.", **kw: Any) -> None:
        self.replies.append(good_answer(text, **kw))

    def content(self, content: str | None, **kw: Any) -> None:
        self.replies.append(completion(content, **kw))

    def fail(self, status: int, code: str = "", headers: dict[str, str] | None = None) -> None:
        self.replies.append(gateway_error(status, code, headers))
