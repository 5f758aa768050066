"""The query API's attachment point: ``routes(processor)`` builds every HTTP route of the
query API (``risk_processor/query/``) over a running processor.

``views`` is a GlobalTable, so every worker answers reads for every account, and it is
restored from its changelog at start, so a restarted worker answers before the first new
event. A what-if reads one account's partitioned tables: see ``query/live.py``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from risk_processor.query import http
from risk_processor.query.live import ProcessorState
from risk_processor.query.views import alerts_key, exposure_key
from riskwatch_common.contracts import PORTFOLIO_KEY


def routes(processor: Any) -> list[web.RouteDef]:
    """The query API over ``processor`` (a ``RiskProcessor``; its tables are read lazily,
    so this may be called before they are declared)."""
    settings = processor.settings
    return http.routes(ProcessorState(processor), token=settings.query_token, clock=processor.clock)


__all__ = ["PORTFOLIO_KEY", "alerts_key", "exposure_key", "routes"]
