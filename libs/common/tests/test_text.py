"""Alert text helpers: Telegram HTML sanitizing and number formatting."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riskwatch_common.testkit import assert_valid_telegram_html
from riskwatch_common.text import escape, format_number, plain_text, sanitize


def test_escape_replaces_the_three_characters_telegram_requires() -> None:
    assert escape("a < b & c > d") == "a &lt; b &amp; c &gt; d"


def test_sanitize_keeps_allowed_tags_and_drops_others_keeping_their_text() -> None:
    out = sanitize('<b>Cut</b> <a href="x">link</a> <script>x</script><strong>now</strong>')
    assert out == "<b>Cut</b> link x<b>now</b>"


def test_sanitize_escapes_stray_brackets_and_ampersands() -> None:
    out = sanitize("PnL < -1000 & margin > 5 AT&T")
    assert out == "PnL &lt; -1000 &amp; margin &gt; 5 AT&amp;T"
    assert_valid_telegram_html(out)


def test_sanitize_closes_unclosed_and_misnested_tags() -> None:
    out = sanitize("<b><i>both</b> after</i> <code>x <b>y</b></code> <b>open")
    assert_valid_telegram_html(out)
    assert plain_text(out) == "both after x y open"


def test_sanitize_cuts_long_text_to_the_limit_with_tags_closed() -> None:
    out = sanitize("<b>" + "risk & reward " * 40 + "</b>", 300)
    assert len(out) <= 300
    assert out.endswith("…</b>")
    assert_valid_telegram_html(out)


@given(st.text(alphabet=st.sampled_from(list("ab <>&/;bicode\"'=xX#\n")), max_size=400))
def test_sanitize_output_is_always_valid_and_within_the_limit(markup: str) -> None:
    out = sanitize(markup, 120)
    assert len(out) <= 120
    assert_valid_telegram_html(out)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("12500"), "12,500"),
        (Decimal("-1234.5678"), "-1,234.57"),
        (Decimal("0.0056"), "0.0056"),
        (Decimal("3.14159"), "3.1416"),
        (Decimal("0E-8"), "0"),
    ],
)
def test_format_number_is_readable_and_exact_enough(value: Decimal, text: str) -> None:
    assert format_number(value) == text
