"""Pure parts: Telegram HTML sanitizing, number formatting, deterministic summaries."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ai_analyst.summary import deterministic_summary, suggested_action
from riskwatch_common.contracts import (
    ActionKind,
    AlertTransition,
    Severity,
    Side,
    SuggestedAction,
)
from riskwatch_common.testkit import assert_valid_telegram_html


def test_action_is_the_engines_computed_action_in_words(make_alert: Any) -> None:
    action = SuggestedAction(
        kind=ActionKind.ADD_MARGIN,
        account="sub_90x",
        amount_usd=Decimal("21333.3333"),
        deadline=datetime(2026, 12, 14, 9, 0, tzinfo=UTC),
        alternatives=(
            SuggestedAction(
                kind=ActionKind.REDUCE_POSITION,
                account="sub_90x",
                symbol="BTCUSDT",
                side=Side.SELL,
                qty=Decimal("5.71428571428571428571428571"),
                amount_usd=Decimal("396000"),
            ),
        ),
    )
    alert = make_alert(rule="platform_risk_change", account="sub_90x", action=action)
    assert suggested_action(alert) == (
        "add at least 21,334 USDT margin or cut BTCUSDT by 5.71 BTC (396,000 USD)"
        " before Mon 14 Dec 09:00"
    )


def test_action_is_never_inferred_from_number_keys_or_rule_names(make_alert: Any) -> None:
    # The keys the old summary looked for give no action: only the engine computes one.
    alert = make_alert(
        rule="grace_liquidation_margin",
        numbers={"reduce_by_usd": Decimal("0.8"), "add_margin_usd": Decimal("0.017")},
        action=None,
    )
    text = suggested_action(alert)
    assert text == "none computed; check BTCUSDT against the numbers"
    resolved = make_alert(transition=AlertTransition.RESOLVED, action=None)
    assert suggested_action(resolved) == "none: the alert resolved"


def test_deterministic_summary_has_rule_severity_numbers_and_action(make_alert: Any) -> None:
    text = deterministic_summary(make_alert(severity=Severity.HIGH))
    assert text.startswith("<b>HIGH Net exposure</b> main/BTCUSDT (raised)")
    assert "<b>Action:</b> reduce net exposure on main by at least 2,500 USD." in text
    assert "<code>value 12,500 USD, threshold 10,000 USD</code>" in text


def test_deterministic_summary_reads_fractions_as_percentages_not_raw_decimals(
    make_alert: Any,
) -> None:
    alert = make_alert(
        rule="tier_cap_proximity",
        numbers={
            "cap_utilization": Decimal("0.96153846153846153846"),
            "leverage_cap": Decimal(2600000),
            "lifting_leverage": Decimal(80),
        },
    )
    text = deterministic_summary(alert)
    assert "<code>cap utilization 96.2%, leverage cap 2,600,000 USD, lifting leverage 80×" in text
    assert "0.9615" not in text
    assert_valid_telegram_html(text)


def test_deterministic_summary_escapes_html_in_alert_fields(make_alert: Any) -> None:
    alert = make_alert(rule="pnl<limit", reason="loss <b>& rising</b>", subject="A&B")
    text = deterministic_summary(alert)
    assert "Pnl&lt;limit" in text
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
