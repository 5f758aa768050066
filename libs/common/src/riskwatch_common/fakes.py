"""Local fakes of the chat services the notifier talks to, speaking their real HTTP protocol.

The Telegram Bot API (``POST /bot<token>/sendMessage``) and a Slack incoming webhook, each
a real aiohttp server on loopback: the notifier's tests and ``bench/e2e.py`` send to them
over real HTTP. A test queues replies (errors, rate limits, a hung request) to script what
the service answers next; every accepted message is kept, with the wall-clock time its
request arrived (what the end-to-end benchmark measures to).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import orjson
from aiohttp import web


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
    """An accepted message and when (``time.time()``) its request reached the server."""

    at: float
    payload: dict[str, Any]


class FakeTelegram(FakeHttpServer):
    """The Bot API's ``sendMessage``: checks the token and the HTML as Telegram does."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.messages: list[dict[str, Any]] = []  # accepted sendMessage payloads
        self.received: list[Received] = []  # the same, with arrival times
        self.requests = 0
        self._next_id = 100

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/bot{token}/sendMessage", self._send)]

    async def _send(self, request: web.Request) -> web.Response:
        # stamped before the body is read: the moment the request reached Telegram
        arrived = time.time()
        self.requests += 1
        payload = await request.json()
        if request.match_info["token"] != self.token:
            return await self._respond(
                Reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            )
        if self.replies:
            return await self._respond(self.replies.popleft())
        if payload.get("parse_mode") == "HTML" and not telegram_accepts(payload["text"]):
            return await self._respond(
                self.error(400, "Bad Request: can't parse entities: unsupported start tag")
            )
        self._next_id += 1
        self.messages.append(payload)
        self.received.append(Received(arrived, payload))
        return await self._respond(
            Reply(200, {"ok": True, "result": {"message_id": self._next_id, "text": "..."}})
        )

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
    """A Slack incoming webhook: ``POST`` of a JSON payload, ``ok`` in plain text."""

    PATH = "/services/T0ABCDEF1/B0ABCDEF2/q7Xw9kLmN2pR4sT6vY8zA1bC"

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []
        self.requests = 0

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.PATH}"

    def routes(self) -> list[web.RouteDef]:
        return [web.post(self.PATH, self._post)]

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
