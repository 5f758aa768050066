"""The query API: current snapshots and active alerts, read from the ``views`` table.

``views`` is a GlobalTable, so every worker answers for every account, and it is restored
from its changelog at start, so a restarted worker answers before the first new event.
Values are stored as the JSON documents we published, and served without re-encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import orjson
from aiohttp import web

from riskwatch_common.contracts import PORTFOLIO_KEY
from riskwatch_common.runtime import json_response

EXPOSURE_PREFIX = "exposure/"
ALERTS_PREFIX = "alerts/"


def exposure_key(account: str) -> str:
    return EXPOSURE_PREFIX + account


def alerts_key(account: str) -> str:
    return ALERTS_PREFIX + account


def routes(views: Callable[[], Mapping[str, bytes]]) -> list[web.RouteDef]:
    """``GET /exposure/{account}`` ('portfolio' for the aggregate) and ``GET /alerts``."""

    async def exposure(request: web.Request) -> web.Response:
        account = request.match_info["account"]
        body = views().get(exposure_key(account))
        if body is None:
            return json_response({"error": f"no exposure for {account!r} yet"}, status=404)
        return web.Response(body=body, content_type="application/json")

    async def alerts(request: web.Request) -> web.Response:
        wanted = request.query.get("account")
        table = views()
        items: Iterable[tuple[str, bytes]]
        if wanted is not None:
            body = table.get(alerts_key(wanted))
            items = [] if body is None else [(alerts_key(wanted), body)]
        else:
            items = [(k, v) for k, v in table.items() if k.startswith(ALERTS_PREFIX)]
        active: list[object] = []
        for _, body in sorted(items):
            active.extend(orjson.loads(body))
        return json_response({"alerts": active, "count": len(active)})

    return [
        web.get("/exposure/{account}", exposure),
        web.get("/alerts", alerts),
    ]


__all__ = ["PORTFOLIO_KEY", "alerts_key", "exposure_key", "routes"]
