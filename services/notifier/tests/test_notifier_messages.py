"""Pure parts: what each channel's text says, and the file record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from notifier.messages import (
    TELEGRAM_LIMIT,
    Context,
    from_alert,
    from_analysis,
    headline,
    slack_escape,
    split_html,
)
from riskwatch_common.contracts import (
    ActionKind,
    AlertTransition,
    ExposureScope,
    ExposureSnapshotted,
    NotificationKind,
    PositionExposure,
    RiskLevel,
    Severity,
    Side,
    SuggestedAction,
)
from riskwatch_common.text import plain_text

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def snapshot(distance: str = "12.34", account: str = "sub_90x") -> ExposureSnapshotted:
    pos = PositionExposure(
        account=account,
        symbol="BTCUSDT",
        side=Side.BUY,
        size=Decimal("5.714285714285714"),
        notional=Decimal("396000.123456"),
        liquidation_distance_pct=Decimal(distance),
    )
    return ExposureSnapshotted(
        event_id="x",
        occurred_at=NOW,
        produced_at=NOW,
        source="risk-processor/0",
        correlation_id="c",
        scope=ExposureScope.ACCOUNT,
        account=account,
        total_long=Decimal("396000.12"),
        total_short=Decimal(0),
        net=Decimal("396000.123456"),
        gross=Decimal("396000.12"),
        equity=Decimal("48210.456"),
        unrealised_pnl=Decimal("-2310.5049"),
        account_mm_rate=Decimal("0.51702703"),
        risk_level=RiskLevel.HIGH,
        positions=(pos,),
    )


def liquidation_alert(make_alert: Any, **kw: Any) -> Any:
    return make_alert(
        account="sub_90x",
        rule="liquidation_distance",
        subject="BTCUSDT",
        reason="BTCUSDT is 4.76% from liquidation (mark 67500.1, liquidation 64287)",
        numbers={"liq_distance_pct": Decimal("4.7619047619047619047619"), "size": Decimal(5)},
        **kw,
    )


def test_headline_states_severity_account_and_how_far_in_rounded_numbers(
    make_alert: Any, telegram_accepts: Any
) -> None:
    n = from_alert(liquidation_alert(make_alert), Context(snapshot(), ZoneInfo("Europe/Berlin")))
    assert n.headline == "🔴 HIGH · sub_90x · BTCUSDT 4.8% from liquidation"
    assert n.html.startswith("<b>🔴 HIGH · sub_90x · BTCUSDT 4.8% from liquidation</b>\n")
    # quick stats from the latest snapshot, rounded by kind; local time, human rule name
    assert (
        "<i>Equity 48,210 USD · Net 396,000 USD · UPL -2,310.50 USD · MM 51.7% · 1 position</i>"
        in n.html
    )
    assert n.html.endswith("\nClose to liquidation · Mon 2 Mar 13:00 CET")
    assert "liquidation_distance" not in n.html  # no rule ids, no ids on the phone
    assert "corr-7f3a" not in n.html
    assert n.alert_id not in n.html
    assert telegram_accepts(n.html)


def test_action_line_renders_the_engines_computed_action(make_alert: Any) -> None:
    action = SuggestedAction(
        kind=ActionKind.ADD_MARGIN,
        account="sub_90x",
        amount_usd=Decimal("21333.3333333"),
        alternatives=(
            SuggestedAction(
                kind=ActionKind.REDUCE_POSITION,
                account="sub_90x",
                symbol="BTCUSDT",
                qty=Decimal("5.71428571428571428571428571"),
                amount_usd=Decimal("396000.0001"),
            ),
        ),
    )
    alert = liquidation_alert(make_alert).model_copy(update={"action": action})
    n = from_alert(alert)
    assert (
        "👉 <b>add at least 21,334 USDT margin or cut BTCUSDT by 5.71 BTC (396,000 USD)</b>"
        in n.html
    )
    assert "5.714" not in n.plain
    assert n.record["action"]["kind"] == "add_margin"


def test_resolve_says_what_the_measure_is_now(make_alert: Any) -> None:
    alert = liquidation_alert(make_alert, transition=AlertTransition.RESOLVED)
    n = from_alert(alert, Context(snapshot("12.34")))
    assert n.headline == "✅ RESOLVED · sub_90x · BTCUSDT back to 12.3% from liquidation"
    assert "👉" not in n.html


def test_resolves_of_account_rules_state_the_current_figure(make_alert: Any) -> None:
    now = snapshot()
    for rule, expected in [
        ("account_mm_rate", "MM rate back to 51.7%"),
        ("net_exposure_usd", "net exposure back to 396,000 USD"),
        ("unrealized_loss", "unrealized P&L now -2,310.50 USD"),
    ]:
        alert = make_alert(
            account="sub_90x", rule=rule, subject="account", transition=AlertTransition.RESOLVED
        )
        assert from_alert(alert, Context(now)).headline == f"✅ RESOLVED · sub_90x · {expected}"
    # without a snapshot it still says what cleared, never a stale number
    alert = make_alert(rule="unrealized_loss", transition=AlertTransition.RESOLVED)
    assert from_alert(alert).headline == "✅ RESOLVED · main · BTCUSDT unrealized loss cleared"


def test_escalation_is_marked_and_ids_go_to_slack_context_and_file_only(
    make_alert: Any,
) -> None:
    alert = make_alert(severity=Severity.CRITICAL, transition=AlertTransition.ESCALATED)
    n = from_alert(alert)
    assert n.headline.startswith("🚨 CRITICAL ↑ · main · ")
    context = n.slack_blocks[-1]
    assert context["type"] == "context"
    assert "corr `corr-7f3a`" in context["elements"][-1]["text"]
    assert n.record["correlation_id"] == "corr-7f3a"
    assert "corr-7f3a" not in n.plain


def test_reminder_says_how_long_the_alert_has_been_open(make_alert: Any) -> None:
    alert = make_alert()
    n = from_alert(alert, Context(reminder_open_since=NOW - timedelta(minutes=45)))
    assert "🔁 still open after 45 min" in n.plain


def test_alert_text_from_the_exchange_is_escaped_for_each_channel(
    make_alert: Any, telegram_accepts: Any
) -> None:
    alert = make_alert(rule="pnl<-1000", reason="loss <b>&</b> rising", subject="A&B")
    n = from_alert(alert)
    assert telegram_accepts(n.html)
    assert "loss &lt;b&gt;&amp;&lt;/b&gt; rising" in n.html
    assert "A&amp;B" in n.slack_blocks[0]["text"]["text"]
    assert "loss <b>&</b> rising" in n.plain  # plain text is sent without parse_mode


def test_console_line_is_one_line_with_the_ids(make_alert: Any) -> None:
    alert = make_alert(reason="first line\nsecond line")
    line = from_alert(alert).console
    assert "\n" not in line
    assert line.startswith("[raised] 🔴 HIGH · main · net exposure 12,500 USD | first line")
    assert f"event={alert.event_id}" in line
    assert line.endswith("corr=corr-7f3a")


def test_file_record_has_every_field_and_exact_numbers(make_alert: Any) -> None:
    alert = make_alert(numbers={"net": Decimal("12500.123456789")})
    record = from_alert(alert).record
    assert record["event_id"] == alert.event_id
    assert record["alert_id"] == "main:net_exposure_usd:BTCUSDT"
    assert record["rule"] == "net_exposure_usd"
    assert record["severity"] == "HIGH"
    assert record["transition"] == "raised"
    assert record["numbers"] == {"net": "12500.123456789"}
    assert record["correlation_id"] == "corr-7f3a"
    assert record["text"].startswith("🔴 HIGH · main · net exposure 12,500 USD")


def test_analysis_follow_up_is_short_and_keeps_only_safe_html(
    make_alert: Any, make_analysis: Any, telegram_accepts: Any
) -> None:
    alert = make_alert()
    analysis = make_analysis(alert, text_html="<b>Cut</b> <a href='x'>now</a> & <i>hedge")
    n = from_analysis(analysis)
    assert n.kind == NotificationKind.ANALYSIS
    assert n.alert_event_id == alert.event_id
    assert "<b>Cut</b> now &amp; <i>hedge</i>" in n.html
    assert n.html.startswith("<i>💬 AI gpt-4.1 on main · Net exposure</i>")
    assert telegram_accepts(n.html)
    assert n.record["alert_event_id"] == alert.event_id


def test_split_keeps_every_part_under_the_limit_and_valid_html(telegram_accepts: Any) -> None:
    line = "<b>bold &amp; long</b> text <i>italic " + "x" * 90 + "</i>\n"
    text = "<b>head</b>\n" + line * 120 + "<code>" + "y" * 5000 + "</code>"
    parts = split_html(text, TELEGRAM_LIMIT)
    assert len(parts) >= 3
    assert all(len(p) <= TELEGRAM_LIMIT for p in parts)
    assert all(telegram_accepts(p) for p in parts)
    assert "".join(plain_text(p) for p in parts) == plain_text(text)


def test_slack_escape() -> None:
    assert slack_escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_account_link_headlines_say_what_is_broken_and_that_positions_are_not_watched(
    make_alert: Any,
) -> None:
    def link(severity: Severity, **kw: Any) -> Any:
        return make_alert(
            rule="account_link", subject="account", account="sub_x", severity=severity, **kw
        )

    refused = link(Severity.CRITICAL)
    assert headline(refused) == (
        "🚨 CRITICAL · sub_x · Bybit refused the API key: positions not watched"
    )
    assert headline(link(Severity.HIGH)) == (
        "🔴 HIGH · sub_x · no data from Bybit: positions not watched"
    )
    expiring = link(Severity.WARNING).model_copy(
        update={
            "action": SuggestedAction(
                kind=ActionKind.CHECK_LINK,
                account="sub_x",
                deadline=datetime(2026, 12, 18, 23, 30, tzinfo=UTC),
            )
        }
    )
    # In the reader's zone: 23:30 UTC is already the 19th in Berlin.
    berlin = Context(tz=ZoneInfo("Europe/Berlin"))
    assert headline(expiring, berlin) == "🟠 WARNING · sub_x · API key expires Sat 19 Dec"
    back = link(Severity.HIGH, transition=AlertTransition.RESOLVED)
    assert headline(back) == "✅ RESOLVED · sub_x · Bybit link OK: positions watched again"
