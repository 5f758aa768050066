"""A fake OpenAI-compatible gateway: a real aiohttp server on loopback (tests and bench).

It speaks ``POST /v1/chat/completions`` as HolySheep does. Replies are scripted per
request (good answers, slow answers, HTTP errors with headers, invalid JSON bodies, empty
content, hangs); without a script it answers validly from the facts it was sent: a plan
over exactly the offered option ids, or commentary, and no number at all.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from riskwatch_common.contracts import HedgeOption

API_KEY = "hs-test-0123456789abcdef"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer: the client must time out
    delay: float = 0.0  # answer after this many seconds


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


def error(status: int, code: str = "", headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        {"error": {"message": f"error {code}", "type": code, "param": None, "code": code}},
        headers or {},
    )


def facts_of(request: dict[str, Any]) -> dict[str, Any]:
    """The facts json inside the first user message of a chat request."""
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    parsed: dict[str, Any] = orjson.loads(user[user.index("{") : user.rindex("}") + 1])
    return parsed


def valid_answer(request: dict[str, Any]) -> str:
    """An answer our checks accept: the shape asked for and no number of its own."""
    facts = facts_of(request)
    options = facts.get("hedge_options")
    if options:
        ids = [o["option_id"] for o in options]
        return orjson.dumps(
            {
                "text_html": f"<b>Do {ids[0]} first</b>: it lowers the exposure most.",
                "options": [
                    {
                        "option_id": i,
                        "how": f"Place the {i} order as listed.",
                        "pros": "Acts on the largest risk.",
                        "cons": "Costs the listed fee.",
                    }
                    for i in ids
                ],
                "ranking": ids,
                "recommended": ids[0],
            }
        ).decode()
    return orjson.dumps(
        {
            "text_html": "<b>Act on the suggested action</b> before adding risk.",
            "hedging_ideas": ["Trim the dominant side."],
        }
    ).decode()


class FakeGateway:
    def __init__(self, *, prompt_tokens: int | None = 900, completion_tokens: int = 250) -> None:
        """``prompt_tokens=None`` bills about one token per four characters of the request."""
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.default_delay = 0.0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.gate: asyncio.Event | None = None  # when set up, requests wait for it
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.auth_headers.append(request.headers.get("Authorization", ""))
        body = await request.json()
        self.requests.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            reply = self.replies.popleft() if self.replies else None
            if reply is None:
                prompt = self.prompt_tokens
                if prompt is None:
                    prompt = len(orjson.dumps(body["messages"])) // 4
                reply = completion(
                    valid_answer(body),
                    prompt_tokens=prompt,
                    completion_tokens=self.completion_tokens,
                    model=body["model"],
                )
                reply.delay = self.default_delay
            if reply.hang:
                await self._release.wait()
            if reply.delay:
                await asyncio.sleep(reply.delay)
        finally:
            self.in_flight -= 1
        raw = reply.body if isinstance(reply.body, bytes | str) else orjson.dumps(reply.body)
        return web.Response(
            status=reply.status,
            body=raw.encode() if isinstance(raw, str) else raw,
            headers=reply.headers,
            content_type="application/json",
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def models(self) -> list[str]:
        return [r["model"] for r in self.requests]

    # scripting: each call queues the reply to the next request
    def answer(self, text: str = "<b>Reduce BTCUSDT</b> by 2,500 USD now.", **kw: Any) -> None:
        ideas = kw.pop("ideas", ["Short ETHUSDT perp"])
        content = orjson.dumps({"text_html": text, "hedging_ideas": ideas}).decode()
        self.replies.append(completion(content, **kw))

    def content(self, content: str | None, **kw: Any) -> None:
        self.replies.append(completion(content, **kw))

    def raw(self, body: str, status: int = 200) -> None:
        self.replies.append(Reply(status, body))

    def fail(self, status: int, code: str = "", headers: dict[str, str] | None = None) -> None:
        self.replies.append(error(status, code, headers))

    def hang(self) -> None:
        self.replies.append(Reply(hang=True))

    def slow(self, seconds: float, reply: Reply) -> None:
        reply.delay = seconds
        self.replies.append(reply)


def hedge_option(option_id: str, **kw: Any) -> HedgeOption:
    """An engine-style option; figures are the test's own, the analyst must only carry them."""
    base: dict[str, Any] = {
        "option_id": option_id,
        "action": {
            "reduce": "sell 0.25 BTCUSDT at market (reduce-only)",
            "offset": "sell 2.5 ETHUSDT at market to offset BTCUSDT",
            "add_margin": "transfer 1750 USDT into main",
        }[option_id],
        "fee_usd": Decimal("9.63") if option_id != "add_margin" else Decimal(0),
        "taker_fee_rate": Decimal("0.00055"),
        "margin_needed_usd": {
            "reduce": Decimal("-1750"),
            "offset": Decimal("1760"),
            "add_margin": Decimal("1750"),
        }[option_id],
        "net_exposure_before_usd": Decimal("52600"),
        "net_exposure_after_usd": Decimal("35100")
        if option_id != "add_margin"
        else Decimal("52600"),
        "tier_before": 2,
        "tier_after": 1 if option_id == "reduce" else 2,
        "nearest_liq_distance_pct_before": Decimal("4.12"),
        "nearest_liq_distance_pct_after": {
            "reduce": Decimal("8.3"),
            "offset": Decimal("4.12"),
            "add_margin": Decimal("9.45"),
        }[option_id],
    }
    base.update(kw)
    return HedgeOption(**base)


THREE_OPTIONS = tuple(hedge_option(i) for i in ("reduce", "offset", "add_margin"))


class Sleeps:
    """Records the retry delays the gateway asks for instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
