"""Pure parts: the prompt we send and the validation of what comes back."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from ai_analyst.prompt import InvalidCommentary, build_messages, parse_commentary


def test_prompt_forbids_computing_numbers_and_asks_for_json_with_an_example(
    make_alert: Any,
) -> None:
    system, user = build_messages(make_alert())
    assert system["role"] == "system"
    assert "Do NOT compute" in system["content"]
    assert "json" in system["content"]
    assert '{"text_html": ' in system["content"]
    assert '"hedging_ideas": [' in system["content"]
    assert "json" in user["content"]


def test_prompt_carries_the_computed_numbers_and_our_action(make_alert: Any) -> None:
    alert = make_alert(numbers={"value": Decimal("12500.5"), "threshold": Decimal("10000")})
    user = build_messages(alert)[1]["content"]
    facts = orjson.loads(user[user.index("{") : user.rindex("}") + 1])
    assert facts["numbers"] == {"value": "12,500.5", "threshold": "10,000"}
    assert facts["suggested_action"] == "reduce BTCUSDT exposure by 2,500.5 USD or hedge it"
    assert facts["severity"] == "WARNING"
    assert facts["account"] == "main"


def test_valid_answer_is_accepted_and_sanitized() -> None:
    content = orjson.dumps(
        {"text_html": "<b>Cut</b> BTC & <u>hedge</u>", "hedging_ideas": ["<i>short</i> ETH"]}
    ).decode()
    commentary = parse_commentary(content)
    assert commentary.text_html == "<b>Cut</b> BTC &amp; hedge"
    assert commentary.hedging_ideas == ("short ETH",)


def test_answer_in_a_code_fence_is_accepted() -> None:
    commentary = parse_commentary('```json\n{"text_html": "Reduce now"}\n```')
    assert commentary.text_html == "Reduce now"


def test_overlong_answer_is_cut_to_300_chars() -> None:
    content = orjson.dumps({"text_html": "<b>" + "reduce " * 100 + "</b>"}).decode()
    assert len(parse_commentary(content).text_html) <= 300


@pytest.mark.parametrize(
    "content",
    [None, "", "   \n ", "not json", '{"hedging_ideas": []}', '{"text_html": "<b></b>"}', "[]"],
)
def test_unusable_answers_are_rejected(content: str | None) -> None:
    with pytest.raises(InvalidCommentary):
        parse_commentary(content)
