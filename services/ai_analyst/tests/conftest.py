"""A fake HolySheep: a real aiohttp server on loopback speaking OpenAI chat completions."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiohttp import web

from riskwatch_common.contracts import (
    AlertTransition,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    new_event_id,
)

API_KEY = "hs-test-0123456789abcdef"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer: the client must time out


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


def error(status: int, code: str = "", headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        {"error": {"message": f"error {code}", "type": code, "param": None, "code": code}},
        headers or {},
    )


class FakeHolySheep:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self.default = good_answer()
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
        self.replies.append(good_answer(text, **kw))

    def content(self, content: str | None, **kw: Any) -> None:
        self.replies.append(completion(content, **kw))

    def fail(self, status: int, code: str = "", headers: dict[str, str] | None = None) -> None:
        self.replies.append(error(status, code, headers))

    def hang(self) -> None:
        self.replies.append(Reply(hang=True))


@pytest.fixture
async def holysheep() -> AsyncIterator[FakeHolySheep]:
    fake = FakeHolySheep()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def make_alert(
    *,
    severity: Severity = Severity.WARNING,
    risk_level: RiskLevel | None = RiskLevel.MEDIUM,
    transition: AlertTransition = AlertTransition.RAISED,
    rule: str = "net_exposure_usd",
    subject: str = "BTCUSDT",
    reason: str = "net exposure 12,500 USD above 10,000",
    numbers: dict[str, Decimal] | None = None,
    account: str = "main",
    event_id: str | None = None,
) -> RiskAlertChanged:
    return RiskAlertChanged(
        event_id=event_id or new_event_id(),
        occurred_at=NOW,
        produced_at=NOW,
        source="risk-processor/0",
        correlation_id="corr-42",
        alert_id=f"{account}:{rule}:{subject}",
        transition=transition,
        account=account,
        rule=rule,
        subject=subject,
        severity=severity,
        risk_level=risk_level,
        reason=reason,
        numbers=numbers
        if numbers is not None
        else {"value": Decimal("12500"), "threshold": Decimal("10000")},
    )


@pytest.fixture(name="make_alert")
def make_alert_fixture() -> Any:
    """Builds a RiskAlertChanged; keyword arguments override the defaults."""
    return make_alert
