"""The query API's OpenAPI 3.1 document, generated from the response models.

``python -m risk_processor.query.openapi`` writes it to ``services/risk_processor/docs/
openapi.v1.json``; ``--check`` exits 1 when the committed file differs (a test runs it).
"""

from __future__ import annotations

import argparse
import sys
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from risk_processor.query.models import (
    AccountList,
    AlertList,
    Exposure,
    Exposures,
    Overview,
    Problem,
    WhatIf,
    WhatIfRequest,
)

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.v1.json"
_REF = "#/components/schemas/{model}"


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _ok(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _problem(description: str) -> dict[str, Any]:
    return _ok(Problem, description)


_UNAUTHORIZED = {"401": _problem("Bearer token missing or wrong (when one is configured).")}
_ACCOUNT = {
    "name": "account",
    "in": "query",
    "required": False,
    "description": "Only this account's alerts ('portfolio' for portfolio-wide ones).",
    "schema": {"type": "string"},
}


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document of the v1 query API."""
    models: list[tuple[type[BaseModel], Any]] = [
        (m, "serialization")
        for m in (AccountList, Overview, Exposures, Exposure, AlertList, WhatIf, Problem)
    ]
    models.append((WhatIfRequest, "validation"))
    _, defs = models_json_schema(models, ref_template=_REF)
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    paths: dict[str, Any] = {
        "/v1/accounts": {
            "get": {
                "summary": "Every account with link status, risk level and headline figures.",
                "operationId": "listAccounts",
                "security": secured,
                "responses": {"200": _ok(AccountList, "Accounts, by name."), **_UNAUTHORIZED},
            }
        },
        "/v1/overview": {
            "get": {
                "summary": "Portfolio row, account rows and active alerts (one stream event).",
                "operationId": "overview",
                "security": secured,
                "responses": {"200": _ok(Overview, "The overview."), **_UNAUTHORIZED},
            }
        },
        "/v1/exposure": {
            "get": {
                "summary": "The latest exposure snapshot of the portfolio and of every account.",
                "operationId": "listExposures",
                "security": secured,
                "responses": {
                    "200": _ok(Exposures, "Snapshots with display blocks."),
                    **_UNAUTHORIZED,
                },
            }
        },
        "/v1/exposure/{account}": {
            "get": {
                "summary": "One account's latest exposure snapshot ('portfolio' for all).",
                "operationId": "getExposure",
                "security": secured,
                "parameters": [
                    {
                        "name": "account",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _ok(Exposure, "The snapshot as published, and its display block."),
                    "404": _problem("No snapshot for this account yet."),
                    **_UNAUTHORIZED,
                },
            }
        },
        "/v1/alerts": {
            "get": {
                "summary": "Active alerts with their current figures, worst first.",
                "operationId": "listAlerts",
                "security": secured,
                "parameters": [_ACCOUNT],
                "responses": {"200": _ok(AlertList, "Active alerts."), **_UNAUTHORIZED},
            }
        },
        "/v1/what-if": {
            "post": {
                "summary": "What one more order would do: Bybit's verdict, tiers, margins, "
                "liquidation, MM rate and net after, on the live state.",
                "operationId": "whatIf",
                "security": secured,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(WhatIfRequest)}},
                },
                "responses": {
                    "200": _ok(WhatIf, "The answer; the order is not placed."),
                    "404": _problem("No state for this account."),
                    "409": _problem(
                        "Not answerable from the state held (no tier table, no leverage)."
                    ),
                    "413": _problem("Body too large."),
                    "422": _problem("Invalid request, naming the field."),
                    "503": _problem(
                        "Starting, or another worker owns the account's partition (named)."
                    ),
                    **_UNAUTHORIZED,
                },
            }
        },
        "/v1/stream": {
            "get": {
                "summary": "Server-sent events: an 'overview' event (an Overview document) now "
                "and whenever a snapshot or the active alerts change.",
                "operationId": "stream",
                "security": secured,
                "responses": {
                    "200": {
                        "description": "text/event-stream of 'overview' events.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "503": _problem("Too many open streams."),
                    **_UNAUTHORIZED,
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "riskwatch query API",
            "version": "1",
            "description": "Read-only view of the risk processor's live state, and the pre-trade "
            "what-if. Numbers are exact decimal strings; 'display' blocks round them for "
            "people. A bearer token is required when the processor listens beyond loopback "
            "(RISK_PROCESSOR_QUERY_TOKEN).",
        },
        "servers": [{"url": "http://127.0.0.1:8082"}],
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }


def rendered() -> bytes:
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m risk_processor.query.openapi")
    parser.add_argument("--check", action="store_true", help="fail if the committed file drifted")
    args = parser.parse_args(argv)
    if args.check:
        if not COMMITTED.exists() or COMMITTED.read_bytes() != rendered():
            print(
                f"{COMMITTED} drifted from the code: run python -m risk_processor.query.openapi",
                file=sys.stderr,
            )
            return 1
        print("openapi.v1.json matches the code")
        return 0
    COMMITTED.write_bytes(rendered())
    print(COMMITTED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
