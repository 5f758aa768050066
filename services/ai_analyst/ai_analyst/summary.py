"""Deterministic alert summaries: built from the alert's own numbers, never from an LLM.

Used when there is no gateway key, the budget is spent, or the LLM fails; also the action
the LLM is asked to comment on. Every number shown was computed by the risk processor.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from riskwatch_common.contracts import RiskAlertChanged
from riskwatch_common.text import escape, format_number, sanitize

TEXT_LIMIT = 300
MAX_NUMBERS_SHOWN = 4

# number keys the risk processor may send, most specific first
REDUCE_KEYS = ("reduce_by_usd", "reduce_usd", "excess_usd")
MARGIN_KEYS = ("add_margin_usd", "add_margin_usdt", "margin_needed_usd")
VALUE_KEYS = ("value", "net_exposure_usd", "net", "unrealised_pnl", "value_usd")
THRESHOLD_KEYS = ("threshold", "threshold_usd", "limit", "limit_usd")
HEADROOM_KEYS = ("headroom_usd", "headroom_to_next_tier", "headroom_to_leverage_cap")


def _first(numbers: Mapping[str, Decimal], keys: tuple[str, ...]) -> tuple[str, Decimal] | None:
    for key in keys:
        if key in numbers:
            return key, numbers[key]
    return None


def _target(alert: RiskAlertChanged) -> str:
    return alert.account if alert.subject in ("", "account") else alert.subject


def suggested_action(alert: RiskAlertChanged) -> str:
    """A concrete action in plain text, from the alert's rule and numbers."""
    numbers = alert.numbers
    target = _target(alert)
    rule = alert.rule.lower()
    reduce = _first(numbers, REDUCE_KEYS)
    margin = _first(numbers, MARGIN_KEYS)
    if reduce is not None or margin is not None:
        options = []
        if reduce is not None:
            options.append(f"reduce {target} by {format_number(abs(reduce[1]))} USD")
        if margin is not None:
            options.append(f"add {format_number(abs(margin[1]))} USDT margin")
        return " or ".join(options)

    value = _first(numbers, VALUE_KEYS)
    threshold = _first(numbers, THRESHOLD_KEYS)
    excess = abs(value[1] - threshold[1]) if value and threshold else None
    headroom = _first(numbers, HEADROOM_KEYS)

    if "loss" in rule or "pnl" in rule:
        by = f" by {format_number(excess)} USD" if excess else ""
        return f"cut or hedge the losing positions of {target} to bring the loss back{by}"
    if any(k in rule for k in ("bias", "direction", "correlation", "same_side")):
        return f"hedge {target}: trim the dominant side or open an offsetting position"
    if any(k in rule for k in ("grace", "reduce_only", "risk_param")):
        return f"add margin to fit the new tier or reduce {target} before the deadline"
    if any(k in rule for k in ("tier", "risk_limit", "leverage", "blocked")):
        room = f" (headroom {format_number(headroom[1])} USD)" if headroom else ""
        return f"reduce {target} or lower leverage before adding orders{room}"
    if any(k in rule for k in ("liquidation", "margin", "mmr")):
        return f"add margin to {alert.account} or reduce {target}"
    if excess:
        return f"reduce {target} exposure by {format_number(excess)} USD or hedge it"
    return f"review {target}: reduce size or add margin"


def numbers_line(numbers: Mapping[str, Decimal], limit: int = MAX_NUMBERS_SHOWN) -> str:
    return ", ".join(f"{k}={format_number(v)}" for k, v in list(numbers.items())[:limit])


def deterministic_summary(alert: RiskAlertChanged, limit: int = TEXT_LIMIT) -> str:
    """Telegram HTML (≤ ``limit`` chars): rule and severity, the action, then the numbers.

    The action comes before the reason and numbers so a cut for length never drops it.
    """
    head = (
        f"<b>{escape(alert.severity.value)} {escape(alert.rule)}</b> "
        f"{escape(alert.account)}/{escape(alert.subject)} ({escape(alert.transition.value)})"
    )
    parts = [head, f"<b>Action:</b> {escape(suggested_action(alert))}."]
    if alert.numbers:
        parts.append(f"<code>{escape(numbers_line(alert.numbers))}</code>")
    if alert.reason:
        parts.append(escape(alert.reason))
    return sanitize("\n".join(parts), limit)
