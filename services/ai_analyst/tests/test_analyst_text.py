"""Pure parts: Telegram HTML sanitizing, number formatting, deterministic summaries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ai_analyst.summary import deterministic_summary, suggested_action
from riskwatch_common.contracts import Severity
from riskwatch_common.testkit import assert_valid_telegram_html


def test_action_uses_explicit_reduce_and_margin_numbers(make_alert: Any) -> None:
    alert = make_alert(
        rule="liquidation_distance",
        numbers={"reduce_by_usd": Decimal("2500"), "add_margin_usd": Decimal("800.5")},
    )
    assert suggested_action(alert) == "reduce BTCUSDT by 2,500 USD or add 800.5 USDT margin"


def test_action_for_a_threshold_breach_states_the_excess(make_alert: Any) -> None:
    alert = make_alert(numbers={"value": Decimal("12500"), "threshold": Decimal("10000")})
    assert suggested_action(alert) == "reduce BTCUSDT exposure by 2,500 USD or hedge it"


def test_action_for_an_unrealised_loss_names_the_distance_past_the_limit(make_alert: Any) -> None:
    alert = make_alert(
        rule="unrealised_loss",
        subject="account",
        numbers={"value": Decimal("-1500"), "threshold": Decimal("-1000")},
    )
    assert suggested_action(alert) == (
        "cut or hedge the losing positions of main to bring the loss back by 500 USD"
    )


def test_deterministic_summary_has_rule_severity_numbers_and_action(make_alert: Any) -> None:
    text = deterministic_summary(make_alert(severity=Severity.HIGH))
    assert text.startswith("<b>HIGH net_exposure_usd</b> main/BTCUSDT (raised)")
    assert "<b>Action:</b> reduce BTCUSDT exposure by 2,500 USD or hedge it." in text
    assert "<code>value=12,500, threshold=10,000</code>" in text
    assert_valid_telegram_html(text)


def test_deterministic_summary_escapes_html_in_alert_fields(make_alert: Any) -> None:
    alert = make_alert(rule="pnl<limit", reason="loss <b>& rising</b>", subject="A&B")
    text = deterministic_summary(alert)
    assert "pnl&lt;limit" in text
    assert "A&amp;B" in text
    assert "loss &lt;b&gt;&amp; rising&lt;/b&gt;" in text
    assert_valid_telegram_html(text)


def test_deterministic_summary_stays_within_300_chars_and_keeps_the_action(
    make_alert: Any,
) -> None:
    numbers = {f"number_{i}": Decimal("123456789.123") for i in range(20)}
    alert = make_alert(rule="x" * 80, reason="very long reason " * 50, numbers=numbers)
    text = deterministic_summary(alert)
    assert len(text) <= 300
    assert "Action:" in text
    assert_valid_telegram_html(text)
