"""Pure parts: the prompt we send, the validation of what comes back, the number check."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from ai_analyst.numbers import invented_numbers, supplied_numbers
from ai_analyst.prompt import (
    InvalidCommentary,
    InventedNumbers,
    build_messages,
    group_facts,
    parse_answer,
)
from ai_analyst.testing import THREE_OPTIONS
from riskwatch_common.contracts import Severity


def _facts(make_alert: Any, **kw: Any) -> dict[str, Any]:
    return group_facts("main", [make_alert(**kw)], {})


def test_prompt_forbids_computing_numbers_and_asks_for_json_with_an_example(
    make_alert: Any,
) -> None:
    system, user = build_messages(_facts(make_alert))
    assert system["role"] == "system"
    assert "Do NOT compute" in system["content"]
    assert "json" in system["content"]
    assert '{"text_html": ' in system["content"]
    assert '"hedging_ideas": [' in system["content"]
    assert "json" in user["content"]


def test_high_alert_with_options_asks_for_a_plan_over_exactly_those_options(
    make_alert: Any,
) -> None:
    facts = _facts(make_alert, severity=Severity.HIGH, hedge_options=THREE_OPTIONS)
    system, _ = build_messages(facts)
    assert '"ranking": [' in system["content"]
    assert [o["option_id"] for o in facts["hedge_options"]] == ["reduce", "offset", "add_margin"]


def test_prompt_carries_the_computed_numbers_and_our_action(make_alert: Any) -> None:
    alert = make_alert(numbers={"value": Decimal("12500.5"), "threshold": Decimal("10000")})
    user = build_messages(group_facts("main", [alert], {}))[1]["content"]
    facts = orjson.loads(user[user.index("{") : user.rindex("}") + 1])
    [shown] = facts["alerts"]
    assert shown["numbers"] == {"value": "12,500.5", "threshold": "10,000"}
    assert shown["suggested_action"] == "reduce net exposure on main by at least 2,500 USD"
    assert shown["rule_name"] == "Net exposure"
    assert shown["severity"] == "WARNING"
    assert facts["account"] == "main"


def test_valid_answer_is_accepted_and_sanitized(make_alert: Any) -> None:
    content = orjson.dumps(
        {"text_html": "<b>Cut</b> BTC & <u>hedge</u>", "hedging_ideas": ["<i>short</i> ETH"]}
    ).decode()
    commentary = parse_answer(content, _facts(make_alert))
    assert commentary.text_html == "<b>Cut</b> BTC &amp; hedge"
    assert commentary.hedging_ideas == ("short ETH",)


def test_answer_in_a_code_fence_is_accepted(make_alert: Any) -> None:
    commentary = parse_answer('```json\n{"text_html": "Reduce now"}\n```', _facts(make_alert))
    assert commentary.text_html == "Reduce now"


def test_overlong_answer_is_cut_to_300_chars(make_alert: Any) -> None:
    content = orjson.dumps({"text_html": "<b>" + "reduce " * 100 + "</b>"}).decode()
    assert len(parse_answer(content, _facts(make_alert)).text_html) <= 300


@pytest.mark.parametrize(
    "content",
    [None, "", "   \n ", "not json", '{"hedging_ideas": []}', '{"text_html": "<b></b>"}', "[]"],
)
def test_unusable_answers_are_rejected(content: str | None, make_alert: Any) -> None:
    with pytest.raises(InvalidCommentary):
        parse_answer(content, _facts(make_alert))


def test_a_number_we_did_not_supply_is_refused(make_alert: Any) -> None:
    content = orjson.dumps({"text_html": "Reduce by 3,100 USD"}).decode()
    with pytest.raises(InventedNumbers) as caught:
        parse_answer(content, _facts(make_alert))
    assert caught.value.numbers == ["3,100"]


@pytest.mark.parametrize(
    ("text", "invented"),
    [
        ("net 12,480.37 USD", []),  # as supplied
        ("net 12,480 USD, about $12.48k", []),  # rounded, with k
        ("net share 25%", []),  # the fraction 0.25 as a percent
        ("3 options; option 1 first", []),  # small counts and ranks
        ("GPT-4.1 on V3.2 for 1000PEPEUSDT", []),  # names, not numbers
        ("loss of -1,000 USD", []),  # sign and separators ignored
        ("reduce by 7,777 USD", ["7,777"]),
        ("liquidation 12.5% away", ["12.5%"]),
        ("leverage 20x", ["20x"]),
    ],
)
def test_number_check_accepts_ours_rounded_or_as_percent_and_nothing_else(
    text: str, invented: list[str]
) -> None:
    supplied = supplied_numbers({"net": "12,480.37", "share": "0.25", "pnl": "-1000", "lev": "10"})
    assert invented_numbers([text], supplied) == invented
