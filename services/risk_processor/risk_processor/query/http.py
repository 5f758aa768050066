"""The query API's HTTP routes (v1), its bearer-token check, the live stream and the page.

Reads go to the ``views`` table, which every worker holds whole; a what-if needs the
account's positions and orders, which only the worker owning the account's partition
holds: another worker answers 503 naming the partition (docs in the service README).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from pydantic import SecretStr, ValidationError

from risk_processor.engine import Side
from risk_processor.engine.whatif import WhatIfError, what_if
from risk_processor.query import views as v
from risk_processor.query.live import LiveState, NotOwned, NotReady, UnknownAccount
from risk_processor.query.models import AccountList, AlertList, Exposures, WhatIfRequest
from risk_processor.query.openapi import document
from riskwatch_common.clock import Clock, utc_now
from riskwatch_common.contracts import PORTFOLIO_KEY
from riskwatch_common.metrics import counter, gauge

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STREAM_POLL_S = 0.25
STREAM_KEEPALIVE_S = 15.0
MAX_STREAMS = 32
MAX_BODY = 4096


REQUESTS = counter(
    "risk_processor_query_requests_total",
    "Query API requests answered, by operation and HTTP status.",
    ("operation", "status"),
)
STREAMS = gauge("risk_processor_query_streams", "Open /v1/stream connections.")


def _counted(operation: str, handler: Handler) -> Handler:
    async def count(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        REQUESTS.labels(operation, str(response.status)).inc()
        return response

    return count


def _json(model: Any, status: int = 200) -> web.Response:
    body = (
        model.model_dump_json().encode()
        if hasattr(model, "model_dump_json")
        else orjson.dumps(model)
    )
    return web.Response(body=body, status=status, content_type="application/json")


def problem(status: int, error: str, **extra: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": error, **extra}), status=status, content_type="application/json"
    )


def _page() -> bytes:
    return resources.files("risk_processor.query").joinpath("static/index.html").read_bytes()


def routes(
    state: LiveState,
    *,
    token: SecretStr | None = None,
    clock: Clock = utc_now,
    stream_poll_s: float = STREAM_POLL_S,
) -> list[web.RouteDef]:
    """The v1 routes, the old unversioned aliases, ``/`` (the web overview) and
    ``/v1/openapi.json``. With ``token``, every data route requires
    ``Authorization: Bearer <token>``; the page and the OpenAPI document hold no data."""
    secret = token.get_secret_value().encode() if token is not None else None
    streams: set[asyncio.Task[Any]] = set()
    openapi = orjson.dumps(document())
    page = _page()

    def guarded(handler: Handler) -> Handler:
        if secret is None:
            return handler

        async def check(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), secret
            ):
                response = problem(
                    401, "a bearer token is required (Authorization: Bearer <token>)"
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="riskwatch"'
                return response
            return await handler(request)

        return check

    async def accounts(_: web.Request) -> web.Response:
        o = v.overview(state.views(), clock())
        return _json(AccountList(accounts=o.accounts, count=len(o.accounts)))

    async def overview(_: web.Request) -> web.Response:
        return _json(v.overview(state.views(), clock()))

    async def exposures(_: web.Request) -> web.Response:
        snaps = v.snapshots(state.views())
        portfolio = snaps.pop(PORTFOLIO_KEY, None)
        return _json(
            Exposures(
                portfolio=None if portfolio is None else v.exposure_doc(portfolio),
                accounts=[v.exposure_doc(snaps[k]) for k in sorted(snaps)],
            )
        )

    async def exposure(request: web.Request) -> web.Response:
        account = request.match_info["account"]
        body = state.views().get(v.exposure_key(account))
        if body is None:
            return problem(404, f"no exposure for {account!r} yet")
        return _json(v.exposure_doc(orjson.loads(body)))

    async def alerts(request: web.Request) -> web.Response:
        table = state.views()
        found = v.sorted_alerts(
            v.alert_states(table, request.query.get("account")), v.snapshots(table)
        )
        return _json(AlertList(alerts=found, count=len(found)))

    async def post_what_if(request: web.Request) -> web.Response:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return problem(413, f"request body over {MAX_BODY} bytes")
        try:
            ask = WhatIfRequest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return problem(422, f"{where}: {first['msg']}")
        try:
            inputs = state.account_inputs(ask.account, ask.symbol)
        except NotOwned as exc:
            return problem(503, str(exc), partition=exc.partition)
        except NotReady as exc:
            return problem(503, str(exc))
        except UnknownAccount as exc:
            return problem(404, str(exc))
        portfolio = state.views().get(v.exposure_key(PORTFOLIO_KEY))
        portfolio_net = Decimal(orjson.loads(portfolio)["net"]) if portfolio is not None else None
        try:
            result = what_if(
                inputs.profile,
                inputs.positions,
                inputs.orders,
                inputs.wallet,
                inputs.tables,
                inputs.marks,
                symbol=ask.symbol,
                side=Side(ask.side.value),
                qty=ask.qty,
                price=ask.price,
                leverage=ask.leverage,
                reduce_only=ask.reduce_only,
                portfolio_net=portfolio_net,
            )
        except WhatIfError as exc:
            return problem(409, str(exc))
        return _json(v.what_if_doc(result))

    async def stream(request: web.Request) -> web.StreamResponse:
        """Server-sent events: an ``overview`` event now and on every change of a snapshot
        or of the active alerts; a comment line every 15 s keeps proxies from cutting it."""
        if len(streams) >= MAX_STREAMS:
            return problem(503, f"too many live streams (at most {MAX_STREAMS})")
        task = asyncio.current_task()
        assert task is not None
        streams.add(task)
        STREAMS.inc()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        last: dict[str, bytes] | None = None
        quiet_since = loop.time()
        try:
            # aiohttp waits up to its shutdown timeout (60 s) for open handlers: a stream
            # ends when the service stops, or when the server marks its connection for
            # closing (the private flag is read defensively: no flag, no early end).
            while not state.closing() and not getattr(request.protocol, "_force_close", False):
                table = state.views()
                current = {
                    k: b
                    for k, b in table.items()
                    if k.startswith(v.EXPOSURE_PREFIX) or k.startswith(v.ALERTS_PREFIX)
                }
                if current != last:
                    last = current
                    doc = v.overview(table, clock()).model_dump_json()
                    await response.write(b"event: overview\ndata: " + doc.encode() + b"\n\n")
                    quiet_since = loop.time()
                elif loop.time() - quiet_since > STREAM_KEEPALIVE_S:
                    await response.write(b": keep-alive\n\n")
                    quiet_since = loop.time()
                await asyncio.sleep(stream_poll_s)
        except ConnectionError:
            pass  # the client went away
        finally:
            streams.discard(task)
            STREAMS.dec()
        return response

    async def index(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def openapi_doc(_: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    # The unversioned paths of before v1, kept as they were (raw snapshot and alert states).
    async def legacy_exposure(request: web.Request) -> web.Response:
        account = request.match_info["account"]
        body = state.views().get(v.exposure_key(account))
        if body is None:
            return problem(404, f"no exposure for {account!r} yet")
        return web.Response(body=body, content_type="application/json")

    async def legacy_alerts(request: web.Request) -> web.Response:
        active = v.alert_states(state.views(), request.query.get("account"))
        return web.Response(
            body=orjson.dumps({"alerts": active, "count": len(active)}),
            content_type="application/json",
        )

    table: list[tuple[str, str, str, Handler]] = [
        ("GET", "/v1/accounts", "accounts", guarded(accounts)),
        ("GET", "/v1/overview", "overview", guarded(overview)),
        ("GET", "/v1/exposure", "exposures", guarded(exposures)),
        ("GET", "/v1/exposure/{account}", "exposure", guarded(exposure)),
        ("GET", "/v1/alerts", "alerts", guarded(alerts)),
        ("POST", "/v1/what-if", "what_if", guarded(post_what_if)),
        ("GET", "/v1/stream", "stream", guarded(stream)),
        ("GET", "/exposure/{account}", "legacy_exposure", guarded(legacy_exposure)),
        ("GET", "/alerts", "legacy_alerts", guarded(legacy_alerts)),
    ]
    return [
        web.get("/", index),
        web.get("/v1/openapi.json", openapi_doc),
        *(web.route(method, path, _counted(op, h)) for method, path, op, h in table),
    ]
