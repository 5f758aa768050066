"""Wire forms of engine objects (pure: the Faust codecs that use them are in faust_codecs.py).

Tables keep live Python objects in the store (the memory store never serializes); a codec
runs only when a value goes to or comes back from a changelog, so the hot path never pays
for JSON. Decimals travel as strings (exact), datetimes as ISO 8601 with offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from risk_processor.engine import (
    AccountExposure,
    AccountMargin,
    AccountProfile,
    AccountType,
    MarginMode,
    Order,
    Position,
    PositionExposure,
    PositionMode,
    RiskLevel,
    Side,
    Tier,
    TierTable,
    Wallet,
)

Json = dict[str, Any]


def dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def undec(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def unwhen(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


# --------------------------------------------------------------------------- engine types


def position_to_json(p: Position) -> Json:
    return {
        "account": p.account,
        "symbol": p.symbol,
        "idx": p.position_idx,
        "side": p.side.value if p.side is not None else None,
        "size": str(p.size),
        "entry": str(p.entry_price),
        "lev": dec(p.leverage),
        "mark": dec(p.mark_price),
        "liq": dec(p.liq_price),
        "ro": p.is_reduce_only,
        "mmr_at": when(p.mmr_sys_updated_at),
        "lev_at": when(p.leverage_sys_updated_at),
        "risk_id": p.risk_id,
        "im": dec(p.position_im),
        "mm": dec(p.position_mm),
    }


def position_from_json(d: Mapping[str, Any]) -> Position:
    return Position(
        account=d["account"],
        symbol=d["symbol"],
        position_idx=int(d["idx"]),
        side=Side(d["side"]) if d.get("side") else None,
        size=Decimal(d["size"]),
        entry_price=Decimal(d["entry"]),
        leverage=undec(d.get("lev")),
        mark_price=undec(d.get("mark")),
        liq_price=undec(d.get("liq")),
        is_reduce_only=bool(d.get("ro", False)),
        mmr_sys_updated_at=unwhen(d.get("mmr_at")),
        leverage_sys_updated_at=unwhen(d.get("lev_at")),
        risk_id=d.get("risk_id"),
        position_im=undec(d.get("im")),
        position_mm=undec(d.get("mm")),
    )


def order_to_json(o: Order) -> Json:
    return {
        "id": o.order_id,
        "symbol": o.symbol,
        "side": o.side.value,
        "price": str(o.price),
        "qty": str(o.qty),
        "idx": o.position_idx,
        "ro": o.reduce_only,
        "cot": o.close_on_trigger,
        "cond": o.is_conditional_untriggered,
    }


def order_from_json(d: Mapping[str, Any]) -> Order:
    return Order(
        order_id=d["id"],
        symbol=d["symbol"],
        side=Side(d["side"]),
        price=Decimal(d["price"]),
        qty=Decimal(d["qty"]),
        position_idx=int(d.get("idx", 0)),
        reduce_only=bool(d.get("ro", False)),
        close_on_trigger=bool(d.get("cot", False)),
        is_conditional_untriggered=bool(d.get("cond", False)),
    )


def wallet_to_json(w: Wallet) -> Json:
    return {
        "equity": str(w.total_equity),
        "wallet": str(w.total_wallet_balance),
        "margin": str(w.total_margin_balance),
        "im": str(w.total_initial_margin),
        "mm": str(w.total_maintenance_margin),
        "mm_rate": dec(w.account_mm_rate),
        "im_rate": dec(w.account_im_rate),
        "upl": str(w.total_perp_upl),
    }


def wallet_from_json(d: Mapping[str, Any]) -> Wallet:
    return Wallet(
        total_equity=Decimal(d["equity"]),
        total_wallet_balance=Decimal(d["wallet"]),
        total_margin_balance=Decimal(d["margin"]),
        total_initial_margin=Decimal(d["im"]),
        total_maintenance_margin=Decimal(d["mm"]),
        account_mm_rate=undec(d.get("mm_rate")),
        account_im_rate=undec(d.get("im_rate")),
        total_perp_upl=Decimal(d["upl"]),
    )


def tier_to_json(t: Tier) -> Json:
    return {
        "id": t.id,
        "limit": str(t.risk_limit_value),
        "mmr": str(t.mmr),
        "imr": str(t.imr),
        "lev": str(t.max_leverage),
        "ded": str(t.mm_deduction),
    }


def tier_from_json(d: Mapping[str, Any]) -> Tier:
    return Tier(
        id=int(d["id"]),
        risk_limit_value=Decimal(d["limit"]),
        mmr=Decimal(d["mmr"]),
        imr=Decimal(d["imr"]),
        max_leverage=Decimal(d["lev"]),
        mm_deduction=Decimal(d["ded"]),
    )


def table_to_json(t: TierTable) -> Json:
    return {"symbol": t.symbol, "tiers": [tier_to_json(x) for x in t.tiers]}


def table_from_json(d: Mapping[str, Any]) -> TierTable:
    return TierTable(d["symbol"], tuple(tier_from_json(x) for x in d["tiers"]))


def profile_to_json(p: AccountProfile) -> Json:
    return {
        "account": p.account,
        "type": p.account_type.value,
        "margin": p.margin_mode.value,
        "mode": p.position_mode.value,
        "group": p.group,
    }


def profile_from_json(d: Mapping[str, Any]) -> AccountProfile:
    return AccountProfile(
        account=d["account"],
        account_type=AccountType(d["type"]),
        margin_mode=MarginMode(d["margin"]),
        position_mode=PositionMode(d["mode"]),
        group=d.get("group"),
    )


def _pe_to_json(pe: PositionExposure) -> Json:
    return {
        "p": position_to_json(pe.position),
        "mark": str(pe.mark_price),
        "notional": str(pe.notional),
        "upl": str(pe.unrealized_pnl),
        "score": str(pe.risk_score),
        "eff": str(pe.effective_value),
        "tier": tier_to_json(pe.tier) if pe.tier is not None else None,
        "cap": dec(pe.leverage_cap),
        "max_lev": dec(pe.max_leverage_allowing),
        "mm": dec(pe.maintenance_margin),
        "liq": dec(pe.liq_price),
        "dist": dec(pe.liq_distance_pct),
    }


def _pe_from_json(d: Mapping[str, Any]) -> PositionExposure:
    tier = d.get("tier")
    return PositionExposure(
        position=position_from_json(d["p"]),
        mark_price=Decimal(d["mark"]),
        notional=Decimal(d["notional"]),
        unrealized_pnl=Decimal(d["upl"]),
        risk_score=Decimal(d["score"]),
        effective_value=Decimal(d["eff"]),
        tier=tier_from_json(tier) if tier is not None else None,
        leverage_cap=undec(d.get("cap")),
        max_leverage_allowing=undec(d.get("max_lev")),
        maintenance_margin=undec(d.get("mm")),
        liq_price=undec(d.get("liq")),
        liq_distance_pct=undec(d.get("dist")),
    )


def exposure_to_json(e: AccountExposure) -> Json:
    """An account's exposure, losslessly, for the portfolio stage."""
    m = e.margin
    positions = [_pe_to_json(pe) for pe in e.positions]
    index = {id(pe): i for i, pe in enumerate(e.positions)}
    return {
        "profile": profile_to_json(e.profile),
        "long": str(e.total_long),
        "short": str(e.total_short),
        "net": str(e.net),
        "gross": str(e.gross),
        "equity": dec(e.equity),
        "net_share": dec(e.net_share),
        "upl": str(e.unrealized_pnl),
        "margin": None
        if m is None
        else {
            "balance": str(m.margin_balance),
            "mm": str(m.total_maintenance_margin),
            "rate": dec(m.mm_rate),
            "liquidating": m.in_liquidation,
            "complete": m.complete,
        },
        "buy_share": dec(e.buy_share),
        "count": e.position_count,
        "positions": positions,
        # Top risks are positions of the same account: sent as indexes, not copies.
        "top": [index[id(pe)] for pe in e.top_risks],
        "level": e.risk_level.name,
        "drivers": list(e.risk_drivers),
    }


def exposure_from_json(d: Mapping[str, Any]) -> AccountExposure:
    m = d.get("margin")
    positions = tuple(_pe_from_json(x) for x in d["positions"])
    return AccountExposure(
        profile=profile_from_json(d["profile"]),
        total_long=Decimal(d["long"]),
        total_short=Decimal(d["short"]),
        net=Decimal(d["net"]),
        gross=Decimal(d["gross"]),
        equity=undec(d.get("equity")),
        net_share=undec(d.get("net_share")),
        unrealized_pnl=Decimal(d["upl"]),
        margin=None
        if m is None
        else AccountMargin(
            margin_balance=Decimal(m["balance"]),
            total_maintenance_margin=Decimal(m["mm"]),
            mm_rate=undec(m.get("rate")),
            in_liquidation=bool(m["liquidating"]),
            complete=bool(m["complete"]),
        ),
        buy_share=undec(d.get("buy_share")),
        position_count=int(d["count"]),
        positions=positions,
        top_risks=tuple(positions[i] for i in d["top"]),
        risk_level=RiskLevel[d["level"]],
        risk_drivers=tuple(d["drivers"]),
    )
