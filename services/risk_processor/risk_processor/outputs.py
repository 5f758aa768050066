"""Engine results as contract events: exposure snapshots and alert transitions.

Event ids are deterministic so that a replay after a crash republishes the *same* ids:
- an alert transition: ``derived_event_id(alert_id, transition, n)`` where ``n`` counts the
  transitions published for that alert (kept in the alert table, surviving resolution);
- a snapshot: a digest of its content, so an unchanged snapshot also has an unchanged id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from risk_processor import engine
from risk_processor.engine.hedging import HedgeFigures
from riskwatch_common.contracts import (
    PORTFOLIO_KEY,
    AlertTransition,
    ExposureScope,
    ExposureSnapshotted,
    HedgeOption,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    Side,
    derived_event_id,
)


@dataclass(frozen=True, slots=True)
class Cause:
    """The input that made us evaluate: its ids and times follow it into our outputs."""

    correlation_id: str
    occurred_at: datetime
    produced_at: datetime | None


def _d(x: Decimal | None) -> str | None:
    return None if x is None else str(x)


def _ts(when: datetime) -> str:
    # The form pydantic writes for an aware UTC datetime, so all producers look alike.
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def wire_position(pe: engine.PositionExposure) -> dict[str, Any]:
    """A ``contracts.PositionExposure`` in wire form (what ``encode`` would write)."""
    p = pe.position
    assert p.side is not None  # the engine gives no exposure for flat rows
    return _compact(
        {
            "account": p.account,
            "symbol": p.symbol,
            "position_idx": p.position_idx,
            "side": p.side.value,
            "size": str(p.size),
            "notional": str(pe.notional),
            "leverage": _d(p.leverage),
            "unrealised_pnl": str(pe.unrealized_pnl),
            "tier_id": pe.tier.id if pe.tier is not None else None,
            "effective_value": str(pe.effective_value),
            "headroom_to_next_tier": _d(pe.headroom_to_next_tier),
            "headroom_to_leverage_cap": _d(pe.headroom_to_leverage_cap),
            "liq_price": _d(pe.liq_price),
            "liquidation_distance_pct": _d(pe.liq_distance_pct),
            "maintenance_margin_rate": _d(pe.tier.mmr) if pe.tier is not None else None,
        }
    )


def exposure_key(e: engine.AccountExposure | engine.PortfolioExposure) -> tuple[object, ...]:
    """Everything a snapshot shows, as a tuple: equal tuples mean an equal snapshot.

    Comparing this is far cheaper than building the snapshot, so an evaluation that moved
    nothing (a duplicate-looking update, a mark move on a symbol already at that price)
    publishes nothing.
    """
    positions = e.top_risks if isinstance(e, engine.PortfolioExposure) else e.positions
    return (
        e.total_long,
        e.total_short,
        e.equity,
        e.unrealized_pnl,
        e.net_share,
        e.buy_share,
        e.risk_level,
        e.worst_margin_ratio if isinstance(e, engine.PortfolioExposure) else e.margin_ratio,
        tuple(a.profile.account for a in e.accounts)
        if isinstance(e, engine.PortfolioExposure)
        else (),
        tuple(
            (
                pe.position.account,
                pe.position.symbol,
                pe.position.position_idx,
                pe.position.side,
                pe.position.size,
                pe.position.leverage,
                pe.notional,
                pe.unrealized_pnl,
                pe.tier.id if pe.tier is not None else None,
                pe.effective_value,
                pe.leverage_cap,
                pe.liq_price,
                pe.liq_distance_pct,
            )
            for pe in positions
        ),
    )


def _snapshot(
    body: dict[str, Any], *, now: datetime, cause: Cause, source: str
) -> tuple[bytes, str]:
    """The wire form of an ``ExposureSnapshotted`` with ``body`` as its content.

    Built as a dict and written with orjson rather than through the pydantic model: a
    snapshot is the largest record we write and the model would validate what the engine
    already typed (a test checks every snapshot against the model). The event id is a
    digest of the content, so an unchanged snapshot keeps its id across a replay.
    """
    content = _compact(body)
    digest = hashlib.blake2b(
        orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=16
    ).hexdigest()
    envelope = {
        "event_id": derived_event_id("exposure", content["account"], digest),
        "event_type": "ExposureSnapshotted",
        "schema_version": ExposureSnapshotted.SCHEMA_VERSION,
        "occurred_at": _ts(cause.occurred_at),
        "produced_at": _ts(now),
        "source": source,
        "correlation_id": cause.correlation_id,
    }
    return orjson.dumps({**envelope, **content}), digest


def account_snapshot(
    e: engine.AccountExposure, *, now: datetime, cause: Cause, source: str
) -> tuple[bytes, str]:
    """The account-scope snapshot (wire bytes) and the digest of its content."""
    rate = _d(e.margin_ratio)
    return _snapshot(
        {
            "scope": ExposureScope.ACCOUNT.value,
            "account": e.profile.account,
            "accounts": [e.profile.account],
            "total_long": str(e.total_long),
            "total_short": str(e.total_short),
            "net": str(e.net),
            "gross": str(e.gross),
            "equity": _d(e.equity),
            "net_share_of_equity": _d(e.net_share),
            "unrealised_pnl": str(e.unrealized_pnl),
            "account_mm_rate": rate,
            "margin_ratio": rate,
            "buy_side_share": _d(e.buy_share),
            "risk_level": e.risk_level.name,
            "riskiest_positions": [wire_position(pe) for pe in e.top_risks],
            "positions": [wire_position(pe) for pe in e.positions],
        },
        now=now,
        cause=cause,
        source=source,
    )


def portfolio_snapshot(
    p: engine.PortfolioExposure, *, now: datetime, cause: Cause, source: str
) -> tuple[bytes, str]:
    """The portfolio snapshot (key 'portfolio'); its MM rate is the weakest account's.

    ``positions`` stays empty: every position is in its account's snapshot already, and
    listing hundreds of them on every portfolio update would dominate its cost.
    """
    rate = _d(p.worst_margin_ratio)
    return _snapshot(
        {
            "scope": ExposureScope.PORTFOLIO.value,
            "account": PORTFOLIO_KEY,
            "accounts": [a.profile.account for a in p.accounts],
            "total_long": str(p.total_long),
            "total_short": str(p.total_short),
            "net": str(p.net),
            "gross": str(p.gross),
            "equity": _d(p.equity),
            "net_share_of_equity": _d(p.net_share),
            "unrealised_pnl": str(p.unrealized_pnl),
            "account_mm_rate": rate,
            "margin_ratio": rate,
            "buy_side_share": _d(p.buy_share),
            "risk_level": p.risk_level.name,
            "riskiest_positions": [wire_position(pe) for pe in p.top_risks],
        },
        now=now,
        cause=cause,
        source=source,
    )


def transition_event_id(alert_id: str, kind: str, n: int) -> str:
    return derived_event_id(alert_id, kind, n)


def wire_hedge_option(f: HedgeFigures) -> HedgeOption:
    """The contract form of one engine-computed hedge option."""
    return HedgeOption(
        option_id=f.option_id,
        action=f.action,
        symbol=f.symbol,
        side=Side(f.side.value) if f.side is not None else None,
        qty=f.qty,
        notional_usd=f.notional,
        taker_fee_rate=f.taker_fee_rate,
        fee_usd=f.fee,
        margin_needed_usd=f.margin_needed,
        net_exposure_before_usd=f.net_before,
        net_exposure_after_usd=f.net_after,
        tier_before=f.tier_before,
        tier_after=f.tier_after,
        nearest_liq_distance_pct_before=f.nearest_liq_before,
        nearest_liq_distance_pct_after=f.nearest_liq_after,
    )


def alert_event(
    t: engine.AlertTransition,
    *,
    n: int,
    risk_level: engine.RiskLevel | None,
    now: datetime,
    cause: Cause,
    source: str,
    hedge_options: tuple[HedgeOption, ...] = (),
) -> RiskAlertChanged:
    """The contract event of the ``n``-th published transition of ``t.alert_id``."""
    numbers: dict[str, Decimal] = {k: v for k, v in t.numbers.items() if v is not None}
    numbers.setdefault("value", t.value)
    numbers.setdefault("threshold", t.threshold)
    return RiskAlertChanged(
        event_id=transition_event_id(t.alert_id, t.kind.value, n),
        occurred_at=t.at,
        produced_at=now,
        source=source,
        correlation_id=cause.correlation_id,
        alert_id=t.alert_id,
        transition=AlertTransition(t.kind.value),
        account=t.account,
        rule=str(t.rule),
        subject=t.subject,
        severity=Severity[t.severity.name],
        risk_level=RiskLevel[risk_level.name] if risk_level is not None else None,
        reason=t.reason,
        numbers=numbers,
        hedge_options=hedge_options,
    )
