"""What the analyst knows of the portfolio: the latest exposure snapshot of each account
and of the whole portfolio, as the risk processor computed them (``risk.exposures.v1``).

The prompt carries this computed state, never raw exchange data: the LLM comments on our
numbers and has nothing to total or recompute.
"""

from __future__ import annotations

from typing import Any

from riskwatch_common.contracts import (
    PORTFOLIO_KEY,
    ExposureScope,
    ExposureSnapshotted,
    PositionExposure,
)
from riskwatch_common.text import format_number

TOP_POSITIONS = 3


def _n(value: Any) -> str | None:
    return None if value is None else format_number(value)


def position_facts(p: PositionExposure) -> dict[str, Any]:
    return {
        k: v
        for k, v in {
            "account": p.account,
            "symbol": p.symbol,
            "side": p.side.value,
            "size": _n(p.size),
            "notional_usd": _n(p.notional),
            "leverage": _n(p.leverage),
            "unrealised_pnl_usd": _n(p.unrealised_pnl),
            "tier": p.tier_id,
            "mm_rate": _n(p.maintenance_margin_rate),
            "liquidation_distance_pct": _n(p.liquidation_distance_pct),
            "headroom_to_next_tier_usd": _n(p.headroom_to_next_tier),
        }.items()
        if v is not None
    }


def exposure_facts(snapshot: ExposureSnapshotted) -> dict[str, Any]:
    """One snapshot as the LLM sees it: exact numbers as strings, top positions only."""
    facts: dict[str, Any] = {
        "as_of": snapshot.produced_at.isoformat(),
        "net_usd": _n(snapshot.net),
        "gross_usd": _n(snapshot.gross),
        "total_long_usd": _n(snapshot.total_long),
        "total_short_usd": _n(snapshot.total_short),
        "equity_usd": _n(snapshot.equity),
        "net_share_of_equity": _n(snapshot.net_share_of_equity),
        "unrealised_pnl_usd": _n(snapshot.unrealised_pnl),
        "mm_rate": _n(snapshot.account_mm_rate),
        "buy_side_share": _n(snapshot.buy_side_share),
        "risk_level": snapshot.risk_level.value,
        "top_positions": [position_facts(p) for p in snapshot.riskiest_positions[:TOP_POSITIONS]],
    }
    if snapshot.scope is ExposureScope.PORTFOLIO:
        facts["accounts"] = list(snapshot.accounts)
    return {k: v for k, v in facts.items() if v is not None}


class ContextBook:
    """Latest snapshot per key (account name or 'portfolio'); one entry per account."""

    def __init__(self) -> None:
        self._latest: dict[str, ExposureSnapshotted] = {}

    def update(self, snapshot: ExposureSnapshotted) -> None:
        key = PORTFOLIO_KEY if snapshot.scope is ExposureScope.PORTFOLIO else snapshot.account
        held = self._latest.get(key)
        if held is None or snapshot.produced_at >= held.produced_at:
            self._latest[key] = snapshot

    def facts(self, account: str) -> dict[str, Any]:
        """The portfolio's and (unless the alert is portfolio-wide) the account's exposure."""
        out: dict[str, Any] = {}
        portfolio = self._latest.get(PORTFOLIO_KEY)
        if portfolio is not None:
            out["portfolio_exposure"] = exposure_facts(portfolio)
        own = self._latest.get(account) if account != PORTFOLIO_KEY else None
        if own is not None:
            out["account_exposure"] = exposure_facts(own)
        return out
