"""Pure builders of the query API's documents from the ``views`` table.

``views`` holds, per account and for ``portfolio``, the last published exposure snapshot
(``exposure/<account>``) and the active alert states (``alerts/<account>``), as JSON
bytes. Nothing here does I/O; ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from risk_processor.engine.rules import Rule
from risk_processor.engine.whatif import WhatIf as EngineWhatIf
from risk_processor.query.models import (
    AccountDisplay,
    AccountRow,
    Alert,
    AlertDisplay,
    Exposure,
    ExposureDisplay,
    Link,
    LinkStatus,
    Nearest,
    Overview,
    Tier,
    WhatIf,
    WhatIfDisplay,
)
from riskwatch_common.contracts import PORTFOLIO_KEY, ExposureSnapshotted, Severity

EXPOSURE_PREFIX = "exposure/"
ALERTS_PREFIX = "alerts/"
LINK_RULE = Rule.ACCOUNT_LINK
_SEVERITY_ORDER = {s: i for i, s in enumerate(Severity)}
D = Decimal


def exposure_key(account: str) -> str:
    return EXPOSURE_PREFIX + account


def alerts_key(account: str) -> str:
    return ALERTS_PREFIX + account


# --------------------------------------------------------------------------- formatting


def usd(x: Decimal | None, *, signed: bool = False) -> str:
    """``$46,630``, ``+$46,630``, ``-$2.60M``: whole dollars, millions with 2 decimals."""
    if x is None:
        return "–"
    sign = "-" if x < 0 else ("+" if signed and x > 0 else "")
    a = abs(x)
    if a >= 1_000_000:
        body = f"{a / 1_000_000:,.2f}M"
    else:
        body = f"{a.quantize(D(1), rounding=ROUND_HALF_EVEN):,}"
    return f"{sign}${body}"


def pct(x: Decimal | None, *, fraction: bool = True) -> str:
    """``14.4%`` from the fraction 0.1437 (or from the percent 14.37 with fraction=False)."""
    if x is None:
        return "–"
    value = x * 100 if fraction else x
    return f"{value.quantize(D('0.1'), rounding=ROUND_HALF_EVEN)}%"


def distance(x: Decimal | None) -> str:
    """A liquidation distance (percent), rounded down: it never reads safer than it is."""
    if x is None:
        return "–"
    return f"{x.quantize(D('0.1'), rounding=ROUND_FLOOR)}%"


def _dec(x: Any) -> Decimal | None:
    return None if x is None else Decimal(str(x))


def _ago(seconds: Decimal) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    return f"{s // 3600}h ago"


# --------------------------------------------------------------------------- reading views


def snapshots(views: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    """Every exposure snapshot in ``views`` by account (``portfolio`` included)."""
    return {
        k[len(EXPOSURE_PREFIX) :]: orjson.loads(v)
        for k, v in views.items()
        if k.startswith(EXPOSURE_PREFIX)
    }


def alert_states(views: Mapping[str, bytes], account: str | None = None) -> list[dict[str, Any]]:
    """Active alert states (``AlertState.to_dict`` form), of one account or of all."""
    if account is not None:
        body = views.get(alerts_key(account))
        return [] if body is None else list(orjson.loads(body))
    out: list[dict[str, Any]] = []
    for key in sorted(k for k in views if k.startswith(ALERTS_PREFIX)):
        out.extend(orjson.loads(views[key]))
    return out


# --------------------------------------------------------------------------- documents


def _subject_of(p: Mapping[str, Any]) -> str:
    """``position_subject`` of a wire position: the symbol, with the side in hedge mode."""
    idx = int(p.get("position_idx", 0))
    return str(p["symbol"]) if idx == 0 else f"{p['symbol']}:{'Buy' if idx == 1 else 'Sell'}"


def current_value(rule: str, subject: str, snap: Mapping[str, Any] | None) -> Decimal | None:
    """The figure ``rule`` compares, as it stands in ``snap`` (the rules' own definitions:
    |net|, |net share|, UPL, MM rate, the subject position's liquidation distance)."""
    if snap is None:
        return None
    if rule == Rule.NET_EXPOSURE_USD:
        return abs(D(snap["net"]))
    if rule == Rule.NET_EXPOSURE_SHARE:
        share = _dec(snap.get("net_share_of_equity"))
        return None if share is None else abs(share)
    if rule == Rule.UNREALIZED_LOSS:
        return D(snap["unrealised_pnl"])
    if rule == Rule.ACCOUNT_MM_RATE:
        return _dec(snap.get("account_mm_rate"))
    if rule == Rule.LIQUIDATION_DISTANCE:
        for p in snap.get("positions", ()):
            if _subject_of(p) == subject:
                return _dec(p.get("liquidation_distance_pct"))
    return None


def alert_doc(state: Mapping[str, Any], snap: Mapping[str, Any] | None = None) -> Alert:
    rule = str(state["rule"])
    value = D(state["value"])
    current = current_value(rule, str(state["subject"]), snap)
    threshold = D(state["threshold"])
    raised = datetime.fromisoformat(state["raised_at"])
    return Alert(
        alert_id=state["alert_id"],
        account=state["account"],
        rule=rule,
        subject=state["subject"],
        severity=Severity(state["severity"]),
        notified_severity=Severity(state["notified_severity"]),
        raised_at=raised,
        updated_at=datetime.fromisoformat(state["updated_at"]),
        value=value,
        current=current,
        threshold=threshold,
        reason=state["reason"],
        numbers={k: D(v) for k, v in state.get("numbers", {}).items()},
        display=AlertDisplay(
            headline=_headline(state),
            value=_figure(rule, value if current is None else current),
            threshold=_figure(rule, threshold),
            since=raised.strftime("%H:%M:%S UTC"),
        ),
    )


def _headline(state: Mapping[str, Any]) -> str:
    """``HIGH sub_trading liquidation distance SOLUSDT``: severity, account, what, where."""
    subject = str(state["subject"])
    where = "" if subject in ("account", PORTFOLIO_KEY) else f" {subject}"
    return f"{state['severity']} {state['account']} {str(state['rule']).replace('_', ' ')}{where}"


_PERCENT_POINTS = frozenset({Rule.LIQUIDATION_DISTANCE})
_FRACTIONS = frozenset(
    {
        Rule.ACCOUNT_MM_RATE,
        Rule.NET_EXPOSURE_SHARE,
        Rule.DIRECTION_BIAS,
        Rule.CORRELATION_RISK,
        Rule.TIER_CAP_PROXIMITY,
    }
)
_USD = frozenset({Rule.NET_EXPOSURE_USD, Rule.UNREALIZED_LOSS})


def _figure(rule: str, x: Decimal) -> str:
    """An alert's value as people read it, in the unit of its rule (plain when unknown)."""
    if rule in _PERCENT_POINTS:
        return distance(x)
    if rule in _FRACTIONS:
        return pct(x)
    if rule in _USD:
        return usd(x)
    return f"{x.normalize():f}"


def sorted_alerts(
    states: Iterable[Mapping[str, Any]], snaps: Mapping[str, Mapping[str, Any]]
) -> list[Alert]:
    """Worst first, then oldest first; ``snaps`` (by account) give the current figures."""
    docs = [alert_doc(s, snaps.get(str(s["account"]))) for s in states]
    docs.sort(key=lambda a: (-_SEVERITY_ORDER[a.severity], a.raised_at, a.alert_id))
    return docs


def link_of(alerts: Iterable[Alert]) -> Link:
    for a in alerts:
        if a.rule == LINK_RULE:
            # engine.link: WARNING is an expiring key only; the data still flows.
            expiring = a.severity is Severity.WARNING
            status = LinkStatus.EXPIRING if expiring else LinkStatus.DOWN
            return Link(status=status, reason=a.reason, since=a.raised_at)
    return Link(status=LinkStatus.OK)


def _nearest(positions: Iterable[Mapping[str, Any]]) -> tuple[Nearest | None, Nearest | None]:
    liq: Nearest | None = None
    room: Nearest | None = None
    for p in positions:
        d = _dec(p.get("liquidation_distance_pct"))
        if d is not None and (liq is None or d < liq.value):
            liq = Nearest(symbol=p["symbol"], side=p["side"], value=d)
        heads = [
            h
            for h in (_dec(p.get("headroom_to_next_tier")), _dec(p.get("headroom_to_leverage_cap")))
            if h is not None
        ]
        if heads and (room is None or min(heads) < room.value):
            room = Nearest(symbol=p["symbol"], side=p["side"], value=min(heads))
    return liq, room


def row(
    snap: Mapping[str, Any],
    alerts: list[Alert],
    now: datetime,
    *,
    nearest: tuple[Nearest | None, Nearest | None] | None = None,
) -> AccountRow:
    account = str(snap["account"])
    is_portfolio = account == PORTFOLIO_KEY
    liq, room = nearest if nearest is not None else _nearest(snap.get("positions", ()))
    as_of = datetime.fromisoformat(snap["occurred_at"])
    age = max(D(str((now - as_of).total_seconds())), D(0)).quantize(D("0.001"))
    link = None if is_portfolio else link_of(alerts)
    worst = max((a.severity for a in alerts), key=_SEVERITY_ORDER.__getitem__, default=None)
    mm = _dec(snap.get("account_mm_rate"))
    return AccountRow(
        account=account,
        link=link,
        risk_level=snap["risk_level"],
        equity=_dec(snap.get("equity")),
        net=D(snap["net"]),
        gross=D(snap["gross"]),
        unrealised_pnl=D(snap["unrealised_pnl"]),
        account_mm_rate=mm,
        nearest_liquidation=liq,
        tier_headroom=room,
        active_alerts=len(alerts),
        worst_severity=worst,
        as_of=as_of,
        age_s=age,
        display=AccountDisplay(
            equity=usd(_dec(snap.get("equity"))),
            net=usd(D(snap["net"]), signed=True),
            gross=usd(D(snap["gross"])),
            unrealised_pnl=usd(D(snap["unrealised_pnl"]), signed=True),
            mm_rate=pct(mm),
            nearest_liquidation="–" if liq is None else f"{liq.symbol} {distance(liq.value)}",
            tier_headroom="–" if room is None else f"{room.symbol} {usd(room.value)}",
            link="–" if link is None else link.status.value,
            alerts="–" if worst is None else f"{len(alerts)} ({worst.value})",
            as_of=_ago(age),
        ),
    )


def overview(views: Mapping[str, bytes], now: datetime) -> Overview:
    snaps = snapshots(views)
    states = alert_states(views)
    alerts = sorted_alerts(states, snaps)
    by_account: dict[str, list[Alert]] = {}
    for a in alerts:
        by_account.setdefault(a.account, []).append(a)
    rows = [
        row(snaps[name], by_account.get(name, []), now)
        for name in sorted(snaps)
        if name != PORTFOLIO_KEY
    ]
    portfolio = None
    if PORTFOLIO_KEY in snaps:
        liq = min(
            (r.nearest_liquidation for r in rows if r.nearest_liquidation is not None),
            key=lambda n: n.value,
            default=None,
        )
        room = min(
            (r.tier_headroom for r in rows if r.tier_headroom is not None),
            key=lambda n: n.value,
            default=None,
        )
        portfolio = row(snaps[PORTFOLIO_KEY], alerts, now, nearest=(liq, room))
    return Overview(portfolio=portfolio, accounts=rows, alerts=alerts)


def exposure_doc(snap: Mapping[str, Any]) -> Exposure:
    e = ExposureSnapshotted.model_validate(snap)
    positions = e.positions or e.riskiest_positions
    lines = [
        f"{p.symbol} {p.side.value} {p.size.normalize():f} {usd(p.notional)}"
        + (
            ""
            if p.liquidation_distance_pct is None
            else f" liq {distance(p.liquidation_distance_pct)}"
        )
        for p in positions
    ]
    return Exposure(
        exposure=e,
        display=ExposureDisplay(
            equity=usd(e.equity),
            net=usd(e.net, signed=True),
            net_share_of_equity=pct(e.net_share_of_equity),
            gross=usd(e.gross),
            long=usd(e.total_long),
            short=usd(e.total_short),
            unrealised_pnl=usd(e.unrealised_pnl, signed=True),
            mm_rate=pct(e.account_mm_rate),
            buy_share=pct(e.buy_side_share),
            risk_level=e.risk_level.value,
            positions=lines,
        ),
    )


def what_if_doc(r: EngineWhatIf) -> WhatIf:
    c = r.check

    def tier(m: Any) -> Tier:
        return Tier(
            tier_id=m.tier.id,
            risk_limit_value=m.tier.risk_limit_value,
            max_leverage=m.tier.max_leverage,
            over_top_tier=m.over_limit,
        )

    lev = f"{r.leverage.normalize():f}x"
    if r.rejected:
        cap = "no tier" if c.leverage_cap is None else usd(c.leverage_cap)
        verdict = f"REJECTED at {lev}: {usd(c.after.value)} of positions and orders > {cap} allowed"
    else:
        verdict = f"OK at {lev}: {usd(c.after.value)} of positions and orders"
    fix = None
    if r.rejected:
        if c.max_leverage_allowing is None:
            fix = "above the top tier at any leverage: reduce the size"
        else:
            fix = (
                f"lower leverage to {c.max_leverage_allowing.normalize():f}x or less "
                f"(allows {usd(r.cap_at_max_leverage)})"
            )
    after = [
        f"position {usd(r.position_value_after)}, IM {usd(r.initial_margin_after)}, "
        f"MM {usd(r.maintenance_margin_after)}",
        f"liquidation {usd(r.liq_price_after)} ({distance(r.liq_distance_pct_after)} away)",
        f"account MM rate {pct(r.account_mm_rate_before)} -> {pct(r.account_mm_rate_after)}",
        f"account net {usd(r.account_net_before, signed=True)} -> "
        f"{usd(r.account_net_after, signed=True)}",
        f"portfolio net {usd(r.portfolio_net_before, signed=True)} -> "
        f"{usd(r.portfolio_net_after, signed=True)}",
    ]
    return WhatIf(
        account=r.account,
        symbol=r.symbol,
        side=r.side.value,
        qty=r.qty,
        price=r.price,
        reduce_only=r.reduce_only,
        leverage=r.leverage,
        leverage_source=r.leverage_source,
        effective_value_before=c.before.value,
        effective_value_after=c.after.value,
        tier_before=tier(c.tier_before),
        tier_after=tier(c.tier_after),
        leverage_cap=c.leverage_cap,
        rejected=r.rejected,
        max_leverage_allowing=c.max_leverage_allowing,
        cap_at_max_leverage=r.cap_at_max_leverage,
        position_value_after=r.position_value_after,
        initial_margin_after=r.initial_margin_after,
        maintenance_margin_after=r.maintenance_margin_after,
        liq_price_after=r.liq_price_after,
        liq_distance_pct_after=r.liq_distance_pct_after,
        account_mm_rate_before=r.account_mm_rate_before,
        account_mm_rate_after=r.account_mm_rate_after,
        account_net_before=r.account_net_before,
        account_net_after=r.account_net_after,
        portfolio_net_before=r.portfolio_net_before,
        portfolio_net_after=r.portfolio_net_after,
        display=WhatIfDisplay(
            verdict=verdict,
            tier=f"tier {c.tier_before.tier.id} -> {c.tier_after.tier.id}",
            fix=fix,
            after=after,
        ),
    )
