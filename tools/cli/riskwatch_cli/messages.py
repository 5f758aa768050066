"""``riskwatch messages --sample``: what the phone gets, for every rule kind, from sample data.

The texts come from the notifier's own ``messages.from_alert`` with a sample exposure
snapshot and the engine's kind of computed action, so what is printed is what is sent.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from notifier.messages import Context, Notification, from_alert
from riskwatch_common.contracts import (
    ActionKind,
    AlertTransition,
    ExposureScope,
    ExposureSnapshotted,
    PositionExposure,
    RiskAlertChanged,
    RiskLevel,
    Severity,
    Side,
    SuggestedAction,
    derived_event_id,
)

AT = datetime(2026, 12, 14, 8, 2, tzinfo=UTC)
ACCOUNT = "sub_90x"
D = Decimal


BTC_DISTANCE = D("4.7619047619")


def sample_snapshot(btc_distance: Decimal = BTC_DISTANCE) -> ExposureSnapshotted:
    btc = PositionExposure(
        account=ACCOUNT,
        symbol="BTCUSDT",
        side=Side.BUY,
        size=D("30"),
        notional=D("2025003.2"),
        leverage=D("90"),
        unrealised_pnl=D("-2310.504"),
        liquidation_distance_pct=btc_distance,
    )
    eth = PositionExposure(
        account=ACCOUNT,
        symbol="ETHUSDT",
        side=Side.SELL,
        size=D("120"),
        notional=D("-420000"),
        liquidation_distance_pct=D("31.2"),
    )
    return ExposureSnapshotted(
        event_id="sample-snapshot",
        occurred_at=AT,
        produced_at=AT,
        source="sample",
        correlation_id="sample",
        scope=ExposureScope.ACCOUNT,
        account=ACCOUNT,
        total_long=D("2025003.2"),
        total_short=D("420000"),
        net=D("1605003.2"),
        gross=D("2445003.2"),
        equity=D("48210.4567"),
        net_share_of_equity=D("33.29"),
        unrealised_pnl=D("-2310.504"),
        account_mm_rate=D("0.51702703"),
        risk_level=RiskLevel.HIGH,
        positions=(btc, eth),
    )


def _alert(
    rule: str,
    subject: str,
    severity: Severity,
    reason: str,
    numbers: dict[str, Decimal],
    action: SuggestedAction | None,
    transition: AlertTransition = AlertTransition.RAISED,
) -> RiskAlertChanged:
    return RiskAlertChanged(
        event_id=derived_event_id("sample", rule, subject, transition),
        occurred_at=AT,
        produced_at=AT,
        source="sample",
        correlation_id=derived_event_id("sample-corr", rule),
        alert_id=f"{ACCOUNT}:{rule}:{subject}",
        transition=transition,
        account=ACCOUNT,
        rule=rule,
        subject=subject,
        severity=severity,
        reason=reason,
        numbers=numbers,
        action=action,
    )


def sample_alerts() -> list[RiskAlertChanged]:
    """One alert per rule kind, with numbers as the engine computes them (unrounded)."""
    reduce_btc = SuggestedAction(
        kind=ActionKind.REDUCE_POSITION,
        account=ACCOUNT,
        symbol="BTCUSDT",
        side=Side.SELL,
        qty=D("5.71428571428571428571428571"),
        amount_usd=D("396000.0000001"),
    )
    add_margin = SuggestedAction(
        kind=ActionKind.ADD_MARGIN,
        account=ACCOUNT,
        amount_usd=D("21333.33333333"),
        alternatives=(reduce_btc,),
    )
    lower = SuggestedAction(
        kind=ActionKind.LOWER_LEVERAGE, account=ACCOUNT, symbol="BTCUSDT", leverage=D("80")
    )
    cut_net = SuggestedAction(
        kind=ActionKind.REDUCE_EXPOSURE, account=ACCOUNT, amount_usd=D("1185003.2")
    )
    check_link = SuggestedAction(kind=ActionKind.CHECK_LINK, account=ACCOUNT)
    return [
        _alert(
            "liquidation_distance",
            "BTCUSDT",
            Severity.HIGH,
            "BTCUSDT is 4.76% from liquidation (mark 67500.1, liquidation 64285.8)",
            {"liq_distance_pct": D("4.7619047619047619"), "mark_price": D("67500.1")},
            add_margin,
        ),
        _alert(
            "account_mm_rate",
            "account",
            Severity.HIGH,
            "account MM rate 51.7% (limit 50.0%; liquidation at 100%)",
            {"account_mm_rate": D("0.51702703"), "margin_balance": D("48210.4567")},
            SuggestedAction(
                kind=ActionKind.ADD_MARGIN,
                account=ACCOUNT,
                amount_usd=D("1680.35"),
                deadline=AT + timedelta(hours=1),
            ),
        ),
        _alert(
            "order_blocked_by_leverage",
            "BTCUSDT",
            Severity.HIGH,
            "BTCUSDT positions plus open orders (3,000,000.00) exceed the 2,600,000.00 that "
            "90x allows: Bybit rejects orders that add to it; lower leverage to 80x or less",
            {"effective_value": D("3000000"), "leverage_cap": D("2600000"), "leverage": D("90")},
            lower,
        ),
        _alert(
            "tier_cap_proximity",
            "BTCUSDT",
            Severity.WARNING,
            "BTCUSDT effective value 2,500,000.00 is 96.2% of the 2,600,000 cap of leverage "
            "90x (orders above it are rejected)",
            {"cap_utilization": D("0.96153846"), "leverage": D("90")},
            lower,
        ),
        _alert(
            "net_exposure_share",
            "account",
            Severity.HIGH,
            "net exposure is 3329.0% of equity (limit 1000.0%)",
            {"net": D("1605003.2"), "net_share": D("33.2916")},
            cut_net,
        ),
        _alert(
            "net_exposure_usd",
            "account",
            Severity.WARNING,
            "net exposure 1,605,003.20 USD is above 1,000,000.00 USD",
            {"net": D("1605003.2")},
            cut_net,
        ),
        _alert(
            "unrealized_loss",
            "account",
            Severity.WARNING,
            "unrealized P&L -2,310.50 USD is below -2,000.00 USD",
            {"unrealized_pnl": D("-2310.504")},
            SuggestedAction(kind=ActionKind.MONITOR, account=ACCOUNT),
        ),
        _alert(
            "direction_bias",
            "account",
            Severity.WARNING,
            "85.0% of open positions are on the buy side (limit 80.0%)",
            {"buy_share": D("0.85"), "positions": D(7)},
            None,
        ),
        _alert(
            "account_link",
            "account",
            Severity.WARNING,
            f"the API key of {ACCOUNT} expires on 2026-12-18 (in 4 day(s)): after that, "
            "positions are not watched",
            {},
            check_link.model_copy(update={"deadline": AT + timedelta(days=4)}),
        ),
        _alert(
            "account_link",
            "account",
            Severity.HIGH,
            f"no data from Bybit for {ACCOUNT} since 07:58 UTC: positions are not watched",
            {},
            check_link,
            AlertTransition.ESCALATED,
        ),
        _alert(
            "liquidation_distance",
            "BTCUSDT",
            Severity.HIGH,
            "BTCUSDT is 4.76% from liquidation",
            {"liq_distance_pct": D("4.7619047619047619")},
            None,
            AlertTransition.RESOLVED,
        ),
    ]


def render_samples(tz: ZoneInfo, out: TextIO) -> int:
    """Print each sample's Telegram HTML, Slack payload and console line; returns how many."""
    now = Context(exposure=sample_snapshot(), tz=tz)
    # a resolve is rendered against the snapshot after the recovery
    later = Context(exposure=sample_snapshot(btc_distance=D("12.34")), tz=tz)
    notes: list[Notification] = [
        from_alert(a, later if a.transition == AlertTransition.RESOLVED else now)
        for a in sample_alerts()
    ]
    for n in notes:
        title = f"{n.rule} ({n.transition.value if n.transition else '-'})"
        out.write(f"=== {title} {'=' * max(3, 70 - len(title))}\n")
        out.write("--- telegram (HTML)\n")
        out.write(n.html + "\n")
        out.write("--- slack (webhook payload)\n")
        payload = {"text": n.slack, "blocks": list(n.slack_blocks)}
        out.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
        out.write("--- console\n")
        out.write(n.console + "\n\n")
    return len(notes)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("messages", help="print what Telegram, Slack and the console get")
    p.add_argument("--sample", action="store_true", required=True, help="from sample data")
    p.add_argument("--timezone", default="UTC", help="IANA zone of the times (NOTIFIER_TIMEZONE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        tz = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"riskwatch messages: unknown timezone {args.timezone!r}", file=sys.stderr)
        return 2
    render_samples(tz, sys.stdout)
    return 0
