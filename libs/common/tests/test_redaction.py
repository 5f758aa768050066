"""Redaction covers every HTTP response and runs before truncation."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from riskwatch_common.logs import excerpt, redact, register_secret
from riskwatch_common.runtime import Health, HttpServer, json_response

KEY = "apikey-redaction-test-8b1c"


def test_excerpt_redacts_before_cutting_so_no_half_secret_is_left() -> None:
    register_secret(KEY)
    text = "error sign! origin_string[1700000000000" + KEY + "5000category=linear]"
    cut = len("error sign! origin_string[1700000000000") + 6

    assert KEY[:6] in text[:cut]  # what truncating first would have served
    assert KEY[:6] not in excerpt(text, cut)
    assert excerpt(text, 1000) == redact(text)


async def test_every_route_and_health_detail_is_redacted() -> None:
    register_secret(KEY)
    health = Health()
    health.set("account:main", False, f"auth_failed: origin_string[{KEY}]")

    async def leaky(_: web.Request) -> web.Response:
        return json_response({"error": f"upstream said {KEY}"})

    server = HttpServer("127.0.0.1", 0, health, routes=[web.get("/leaky", leaky)])
    await server.start()
    try:
        async with aiohttp.ClientSession() as client:
            for route in ("/readyz", "/leaky", "/healthz", "/metrics"):
                async with client.get(f"http://127.0.0.1:{server.port}{route}") as resp:
                    body = await resp.text()
                assert KEY not in body, route
            async with client.get(f"http://127.0.0.1:{server.port}/leaky") as resp:
                assert (await resp.json()) == {"error": "upstream said ***"}
    finally:
        await server.stop()
