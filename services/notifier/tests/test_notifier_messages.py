"""Pure parts: what each channel's text says, and the file record."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from notifier.messages import from_alert, from_analysis, slack_escape
from riskwatch_common.contracts import AlertTransition, NotificationKind
from riskwatch_common.text import format_number


def test_alert_html_states_severity_rule_account_numbers_and_ids(
    make_alert: Any, telegram_accepts: Any
) -> None:
    alert = make_alert()
    n = from_alert(alert)
    assert n.kind == NotificationKind.ALERT
    assert n.source_event_id == alert.event_id
    assert n.html.startswith("🚨 <b>HIGH</b> net_exposure_usd raised · <b>main</b> / BTCUSDT")
    assert "<code>net_exposure_usd=12,500, threshold_usd=10,000</code>" in n.html
    assert "corr <code>corr-7f3a</code>" in n.html
    assert telegram_accepts(n.html)


def test_alert_text_from_the_exchange_is_escaped_for_each_channel(
    make_alert: Any, telegram_accepts: Any
) -> None:
    alert = make_alert(rule="pnl<-1000", reason="loss <b>&</b> rising", subject="A&B")
    n = from_alert(alert)
    assert telegram_accepts(n.html)
    assert "pnl&lt;-1000" in n.html
    assert "loss &lt;b&gt;&amp;&lt;/b&gt; rising" in n.html
    assert "pnl&lt;-1000" in n.slack
    assert "A&amp;B" in n.slack
    assert "pnl<-1000" in n.plain  # plain text is sent without parse_mode: no escaping


def test_console_line_is_one_line_with_the_correlation_id(make_alert: Any) -> None:
    alert = make_alert(reason="first line\nsecond line", transition=AlertTransition.RESOLVED)
    line = from_alert(alert).console
    assert "\n" not in line
    assert line.startswith("[ALERT resolved] HIGH main/BTCUSDT net_exposure_usd: first line")
    assert f"event={alert.event_id}" in line
    assert line.endswith("corr=corr-7f3a")


def test_file_record_has_every_field_and_exact_numbers(make_alert: Any) -> None:
    alert = make_alert(numbers={"net_exposure_usd": Decimal("12500.123456789")})
    record = from_alert(alert).record
    assert record["event_id"] == alert.event_id
    assert record["alert_id"] == "main:net_exposure_usd:BTCUSDT"
    assert record["account"] == "main"
    assert record["rule"] == "net_exposure_usd"
    assert record["severity"] == "HIGH"
    assert record["transition"] == "raised"
    assert record["reason"] == alert.reason
    assert record["numbers"] == {"net_exposure_usd": "12500.123456789"}
    assert record["correlation_id"] == "corr-7f3a"
    assert record["text"].startswith("🚨 HIGH net_exposure_usd raised")


def test_analysis_follow_up_names_its_alert_and_keeps_only_safe_html(
    make_alert: Any, make_analysis: Any, telegram_accepts: Any
) -> None:
    alert = make_alert()
    analysis = make_analysis(alert, text_html="<b>Cut</b> <a href='x'>now</a> & <i>hedge")
    n = from_analysis(analysis)
    assert n.kind == NotificationKind.ANALYSIS
    assert n.alert_event_id == alert.event_id
    assert n.source_event_id == analysis.event_id
    assert "<b>Cut</b> now &amp; <i>hedge</i>" in n.html
    assert "re alert <code>main:net_exposure_usd:BTCUSDT</code>" in n.html
    assert "(AI gpt-4.1)" in n.html
    assert "• Short 0.1 BTCUSDT perp" in n.html
    assert telegram_accepts(n.html)
    assert "Cut now & hedge" in n.plain
    assert n.record["alert_event_id"] == alert.event_id
    assert n.record["kind"] == "analysis"


def test_format_number_and_slack_escape() -> None:
    assert format_number(Decimal("-1234.5678")) == "-1,234.57"
    assert format_number(Decimal("0.00560000")) == "0.0056"
    assert slack_escape("a<b>&c") == "a&lt;b&gt;&amp;c"
