"""What the LLM is asked and what an acceptable answer is.

The LLM never computes a number: it receives the numbers our code computed and is asked
only for commentary and hedging ideas, as JSON (DeepSeek JSON mode needs the word "json"
and an example shape in the prompt). The answer is validated with pydantic and sanitized.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ai_analyst.summary import TEXT_LIMIT, suggested_action
from riskwatch_common.contracts import RiskAlertChanged
from riskwatch_common.text import format_number, plain_text, sanitize

MAX_IDEAS = 3
MAX_IDEA_CHARS = 160

SYSTEM_PROMPT = f"""You are a risk analyst for a crypto derivatives trader on Bybit.
You receive one risk alert with numbers that our risk engine has already computed.
Rules:
- Do NOT compute, recompute, total or estimate any number. Quote only numbers given to you.
- Comment on what the alert means and state the action to take first, in one or two sentences.
- Offer at most {MAX_IDEAS} short hedging ideas.
- Answer with a single json object and nothing else, shaped exactly like:
{{"text_html": "<b>Reduce BTCUSDT long</b> ...", "hedging_ideas": ["...", "..."]}}
- text_html: at most {TEXT_LIMIT} characters of Telegram HTML; only <b>, <i> and <code> tags;
  escape <, > and & in text as &lt; &gt; &amp;.
- hedging_ideas: plain text, each under {MAX_IDEA_CHARS} characters."""


class InvalidCommentary(ValueError):
    """The model's answer is empty, not JSON, or not the requested shape."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text_html: str = Field(min_length=1)
    hedging_ideas: list[str] = Field(default_factory=list)

    @field_validator("hedging_ideas", mode="before")
    @classmethod
    def _ideas_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Commentary(BaseModel):
    """A validated, sanitized answer: safe to publish as ``AnalysisCompleted`` text."""

    model_config = ConfigDict(frozen=True)

    text_html: str = Field(min_length=1, max_length=TEXT_LIMIT)
    hedging_ideas: tuple[str, ...] = ()


def alert_facts(alert: RiskAlertChanged) -> dict[str, Any]:
    """The alert as the LLM sees it: computed numbers as exact strings, plus our action."""
    return {
        "account": alert.account,
        "rule": alert.rule,
        "subject": alert.subject,
        "transition": alert.transition.value,
        "severity": alert.severity.value,
        "risk_level": alert.risk_level.value if alert.risk_level else None,
        "reason": alert.reason,
        "numbers": {k: format_number(v) for k, v in alert.numbers.items()},
        "suggested_action": suggested_action(alert),
    }


def build_messages(alert: RiskAlertChanged) -> list[dict[str, str]]:
    """Chat messages for one alert: fixed system rules, the facts as JSON."""
    facts = orjson.dumps(alert_facts(alert), option=orjson.OPT_INDENT_2).decode()
    user = (
        "Risk alert (numbers computed by our engine; do not recompute them):\n"
        f"{facts}\n"
        "Reply with the json object only."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _strip_fence(content: str) -> str:
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`")
        if text.lower().startswith("json"):
            text = text[4:]
    return text.strip()


def parse_commentary(content: str | None) -> Commentary:
    """Validate a model answer; raise ``InvalidCommentary`` when it is unusable."""
    if content is None or not content.strip():
        raise InvalidCommentary("empty content")
    try:
        answer = _Answer.model_validate_json(_strip_fence(content))
    except ValidationError as exc:
        raise InvalidCommentary(
            f"not the requested json shape: {exc.error_count()} errors"
        ) from None
    text = sanitize(answer.text_html, TEXT_LIMIT)
    if not plain_text(text).strip():
        raise InvalidCommentary("text_html has no text")
    ideas = []
    for idea in answer.hedging_ideas[:MAX_IDEAS]:
        clean = " ".join(plain_text(str(idea)).split())
        if clean:
            ideas.append(
                clean if len(clean) <= MAX_IDEA_CHARS else clean[: MAX_IDEA_CHARS - 1] + "…"
            )
    return Commentary(text_html=text, hedging_ideas=tuple(ideas))
