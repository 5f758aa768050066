"""What the LLM is asked and what an acceptable answer is.

The prompt carries computed state only: the alerts of one account (or the portfolio)
coalesced into one call, each with its numbers and our suggested action, the account's and
the portfolio's exposure with the top positions (tier, MM rate, liquidation distance), and
for HIGH/CRITICAL the hedge options the risk engine computed. The model never computes a
number: routine alerts get commentary, HIGH/CRITICAL a plan in which the model ranks and
explains our options. Answers are JSON (DeepSeek JSON mode needs the word "json" and an
example shape in the prompt), validated with pydantic, sanitized, and checked so that every
number in them is one we supplied (``numbers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ai_analyst.numbers import invented_numbers, supplied_numbers
from ai_analyst.summary import TEXT_LIMIT, suggested_action
from riskwatch_common.contracts import HedgeOption, RiskAlertChanged, Severity
from riskwatch_common.render import rule_name
from riskwatch_common.text import format_number, plain_text, sanitize

MAX_IDEAS = 3
MAX_IDEA_CHARS = 160
MAX_PLAN_TEXT_CHARS = 240
MAX_ALERTS_SHOWN = 12

_NUMBER_RULE = """- Do NOT compute, recompute, total or estimate any number. Every number you
  write must appear in the facts (you may round it, write it with k/M, or a fraction as a
  percent); any other number makes the answer invalid."""

_HTML_RULE = f"""- text_html: at most {TEXT_LIMIT} characters of Telegram HTML; only <b>, <i> and
  <code> tags; escape <, > and & in text as &lt; &gt; &amp;."""

_ROLE = "You are a risk analyst for a crypto derivatives trader with several Bybit accounts."

COMMENTARY_PROMPT = f"""{_ROLE}
You receive the alerts of one account (or of the whole portfolio) and the exposure our
risk engine computed. Rules:
{_NUMBER_RULE}
- Say what the alerts mean together, including correlation risk across positions and
  accounts, and state the action to take first, in one or two sentences.
- Offer at most {MAX_IDEAS} short hedging ideas.
- Answer with a single json object and nothing else, shaped exactly like:
{{"text_html": "<b>Reduce BTCUSDT long</b> ...", "hedging_ideas": ["...", "..."]}}
{_HTML_RULE}
- hedging_ideas: plain text, each under {MAX_IDEA_CHARS} characters."""

PLAN_PROMPT = f"""{_ROLE}
Risk is HIGH. You receive the alerts, the exposure our risk engine computed, and hedge
options whose costs and effects the engine computed (fees at Bybit's taker rate, margin
needed, net exposure, tier and nearest liquidation distance after each option). Rules:
{_NUMBER_RULE}
- Rank the options, explain each (how to do it, pros, cons) and recommend one.
- Use exactly the option_id values given, each once.
- Answer with a single json object and nothing else, shaped exactly like:
{{"text_html": "<b>Do reduce first</b> ...", "options": [{{"option_id": "reduce", "how": "...",
"pros": "...", "cons": "..."}}], "ranking": ["reduce", "add_margin", "offset"],
"recommended": "reduce"}}
{_HTML_RULE}
- how, pros, cons: plain text, each under {MAX_PLAN_TEXT_CHARS} characters."""

STRONG_SEVERITIES = frozenset({Severity.HIGH, Severity.CRITICAL})
_SEVERITY_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class InvalidCommentary(ValueError):
    """The model's answer is empty, not JSON, or not the requested shape."""


class InventedNumbers(InvalidCommentary):
    """The answer holds numbers we did not supply."""

    def __init__(self, numbers: list[str]) -> None:
        super().__init__(f"numbers we did not supply: {', '.join(numbers[:8])}")
        self.numbers = numbers


def plan_alert(alerts: Sequence[RiskAlertChanged]) -> RiskAlertChanged | None:
    """The alert a plan is written for: the most severe (then latest) with hedge options."""
    best: RiskAlertChanged | None = None
    for a in alerts:
        if not (a.severity in STRONG_SEVERITIES and a.hedge_options):
            continue
        if best is None or _SEVERITY_ORDER[a.severity] >= _SEVERITY_ORDER[best.severity]:
            best = a
    return best


def alert_facts(alert: RiskAlertChanged) -> dict[str, Any]:
    """One alert as the LLM sees it: computed numbers as exact strings, plus our action."""
    return {
        "rule": alert.rule,
        "rule_name": rule_name(alert.rule),
        "subject": alert.subject,
        "transition": alert.transition.value,
        "severity": alert.severity.value,
        "risk_level": alert.risk_level.value if alert.risk_level else None,
        "reason": alert.reason,
        "numbers": {k: format_number(v) for k, v in alert.numbers.items()},
        "suggested_action": suggested_action(alert),
    }


def option_facts(option: HedgeOption) -> dict[str, Any]:
    def n(value: Any) -> str | None:
        return None if value is None else format_number(value)

    facts = {
        "option_id": option.option_id,
        "action": option.action,
        "fee_usd": n(option.fee_usd),
        "taker_fee_rate": n(option.taker_fee_rate),
        "margin_needed_usd": n(option.margin_needed_usd),
        "net_exposure_before_usd": n(option.net_exposure_before_usd),
        "net_exposure_after_usd": n(option.net_exposure_after_usd),
        "tier_before": option.tier_before,
        "tier_after": option.tier_after,
        "nearest_liquidation_distance_pct_before": n(option.nearest_liq_distance_pct_before),
        "nearest_liquidation_distance_pct_after": n(option.nearest_liq_distance_pct_after),
    }
    return {k: v for k, v in facts.items() if v is not None}


def group_facts(
    account: str, alerts: Sequence[RiskAlertChanged], context: dict[str, Any]
) -> dict[str, Any]:
    """The facts of one call: deterministic for the same input (the cache key hashes it)."""
    ordered = sorted(
        alerts, key=lambda a: (-_SEVERITY_ORDER[a.severity], a.rule, a.subject, a.event_id)
    )
    facts: dict[str, Any] = {
        "account": account,
        "alerts": [alert_facts(a) for a in ordered[:MAX_ALERTS_SHOWN]],
        "alerts_in_group": len(alerts),
        **context,
    }
    target = plan_alert(alerts)
    if target is not None:
        facts["plan_for"] = {"rule": target.rule, "subject": target.subject}
        facts["hedge_options"] = [option_facts(o) for o in target.hedge_options]
    return facts


def build_messages(facts: dict[str, Any]) -> list[dict[str, str]]:
    """Chat messages for one call: fixed system rules, the facts as json."""
    system = PLAN_PROMPT if "hedge_options" in facts else COMMENTARY_PROMPT
    body = orjson.dumps(facts, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    user = (
        "Facts (numbers computed by our engine; do not recompute them):\n"
        f"{body}\n"
        "Reply with the json object only."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def repair_messages(
    messages: list[dict[str, str]], answer: str | None, problem: str
) -> list[dict[str, str]]:
    """The one repair attempt: the rejected answer and what was wrong with it."""
    return [
        *messages,
        {"role": "assistant", "content": answer or ""},
        {
            "role": "user",
            "content": f"That answer is invalid ({problem}). Use only numbers that appear in "
            "the facts and reply with the json object only, in the same shape.",
        },
    ]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text_html: str = Field(min_length=1)
    hedging_ideas: list[str] = Field(default_factory=list)

    @field_validator("hedging_ideas", mode="before")
    @classmethod
    def _ideas_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class _PlanWords(BaseModel):
    model_config = ConfigDict(extra="ignore")

    option_id: str
    how: str = Field(min_length=1)
    pros: str = Field(min_length=1)
    cons: str = Field(min_length=1)


class _PlanAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text_html: str = Field(min_length=1)
    options: list[_PlanWords]
    ranking: list[str]
    recommended: str


@dataclass(frozen=True, slots=True)
class PlanWords:
    how: str
    pros: str
    cons: str


@dataclass(frozen=True, slots=True)
class Commentary:
    """A validated, sanitized answer whose every number is ours."""

    text_html: str
    hedging_ideas: tuple[str, ...] = ()
    plan: dict[str, PlanWords] | None = None
    ranking: tuple[str, ...] = ()


def _strip_fence(content: str) -> str:
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`")
        if text.lower().startswith("json"):
            text = text[4:]
    return text.strip()


def _clean(text: str, limit: int) -> str:
    clean = " ".join(plain_text(str(text)).split())
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def parse_answer(content: str | None, facts: dict[str, Any]) -> Commentary:
    """Validate a model answer against the facts it was given.

    Raises ``InvalidCommentary`` when it is unusable, ``InventedNumbers`` when it holds a
    number we did not supply.
    """
    if content is None or not content.strip():
        raise InvalidCommentary("empty content")
    options = facts.get("hedge_options")
    raw = _strip_fence(content)
    try:
        if options:
            return _checked(_parse_plan(raw, [o["option_id"] for o in options]), facts)
        answer = _Answer.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidCommentary(
            f"not the requested json shape: {exc.error_count()} errors"
        ) from None
    text = _html(answer.text_html)
    ideas = tuple(
        c for c in (_clean(i, MAX_IDEA_CHARS) for i in answer.hedging_ideas[:MAX_IDEAS]) if c
    )
    return _checked(Commentary(text, ideas), facts)


def _html(text_html: str) -> str:
    text = sanitize(text_html, TEXT_LIMIT)
    if not plain_text(text).strip():
        raise InvalidCommentary("text_html has no text")
    return text


def _parse_plan(raw: str, ids: list[str]) -> Commentary:
    answer = _PlanAnswer.model_validate_json(raw)
    words = {w.option_id: w for w in answer.options}
    if sorted(words) != sorted(ids) or len(answer.options) != len(ids):
        raise InvalidCommentary("the plan does not cover exactly the options given")
    if sorted(answer.ranking) != sorted(ids) or answer.ranking[0] != answer.recommended:
        raise InvalidCommentary("the ranking is not the options given, best (recommended) first")
    plan = {
        i: PlanWords(
            _clean(w.how, MAX_PLAN_TEXT_CHARS),
            _clean(w.pros, MAX_PLAN_TEXT_CHARS),
            _clean(w.cons, MAX_PLAN_TEXT_CHARS),
        )
        for i, w in words.items()
    }
    return Commentary(_html(answer.text_html), (), plan, tuple(answer.ranking))


def _checked(commentary: Commentary, facts: dict[str, Any]) -> Commentary:
    texts = [plain_text(commentary.text_html), *commentary.hedging_ideas]
    for words in (commentary.plan or {}).values():
        texts.extend((words.how, words.pros, words.cons))
    invented = invented_numbers(texts, supplied_numbers(facts))
    if invented:
        raise InventedNumbers(invented)
    return commentary
