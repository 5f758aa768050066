"""Deterministic alert summaries: built from the alert's own numbers, never from an LLM.

Used when there is no gateway key, the budget is spent, or the LLM fails. The action is the
one the risk engine computed (``RiskAlertChanged.action``), stated by
``riskwatch_common.render.describe_action`` as the notifier states it; the LLM is asked to
comment on that same text. Every number shown was computed by the risk processor.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from riskwatch_common.contracts import AlertTransition, HedgeOption, PlanOption, RiskAlertChanged
from riskwatch_common.render import describe_action, figure, rule_name
from riskwatch_common.text import escape, format_number, sanitize

TEXT_LIMIT = 300
MAX_NUMBERS_SHOWN = 4


def _target(alert: RiskAlertChanged) -> str:
    return alert.account if alert.subject in ("", "account") else alert.subject


def suggested_action(alert: RiskAlertChanged) -> str:
    """The action the risk engine computed for the alert, in words (``render``).

    Never inferred from the alert's number keys or rule name: without a computed action
    (a resolve, or an older processor) the text says so instead of guessing a figure.
    """
    if alert.action is not None:
        return describe_action(alert.action, alert_account=alert.account)
    if alert.transition is AlertTransition.RESOLVED:
        return "none: the alert resolved"
    return f"none computed; check {_target(alert)} against the numbers"


def numbers_line(
    numbers: Mapping[str, Decimal], rule: str = "", limit: int = MAX_NUMBERS_SHOWN
) -> str:
    """The first ``limit`` numbers, each read by its kind (``render.figure``)."""
    return ", ".join(
        f"{k.replace('_', ' ')} {figure(k, v, rule)}" for k, v in list(numbers.items())[:limit]
    )


def deterministic_summary(alert: RiskAlertChanged, limit: int = TEXT_LIMIT) -> str:
    """Telegram HTML (≤ ``limit`` chars): rule and severity, the action, then the numbers.

    The action comes before the reason and numbers so a cut for length never drops it.
    """
    head = (
        f"<b>{escape(alert.severity.value)} {escape(rule_name(alert.rule))}</b> "
        f"{escape(alert.account)}/{escape(alert.subject)} ({escape(alert.transition.value)})"
    )
    parts = [head, f"<b>Action:</b> {escape(suggested_action(alert))}."]
    if alert.numbers:
        parts.append(f"<code>{escape(numbers_line(alert.numbers, alert.rule))}</code>")
    if alert.reason:
        parts.append(escape(alert.reason))
    return sanitize("\n".join(parts), limit)


# Without the model, options are ranked by the least new risk: cutting the position,
# then adding margin (no trade), then a cross hedge (a second position to watch).
DETERMINISTIC_RANKING = ("reduce", "add_margin", "offset")


def _usd(value: Decimal) -> str:
    return f"{format_number(value)} USD"


def _liq_after(option: HedgeOption) -> str:
    after = option.nearest_liq_distance_pct_after
    return f"; nearest liquidation {format_number(after)} % away" if after is not None else ""


def _words(option: HedgeOption) -> tuple[str, str]:
    """(pros, cons) of an option in our words, every number from the option itself."""
    net = _usd(option.net_exposure_after_usd)
    margin = _usd(abs(option.margin_needed_usd))
    fee = _usd(option.fee_usd)
    tier = f"; tier {option.tier_after}" if option.tier_after is not None else ""
    if option.option_id == "reduce":
        return (
            f"net exposure to {net}, frees {margin} of margin{tier}{_liq_after(option)}",
            f"realises the P&L of the part closed; fee {fee}",
        )
    if option.option_id == "add_margin":
        return (
            f"no trade and no fee{_liq_after(option)}",
            f"exposure stays at {net}; ties up {margin}",
        )
    return (
        f"keeps the position; net exposure to {net}{_liq_after(option)}",
        f"a second position to manage, needs {margin} of margin; fee {fee}",
    )


def deterministic_plan(options: tuple[HedgeOption, ...]) -> tuple[PlanOption, ...]:
    """The plan without the model: our ranking, our words, the engine's figures."""
    order = {option_id: i for i, option_id in enumerate(DETERMINISTIC_RANKING)}
    ranked = sorted(options, key=lambda o: order.get(o.option_id, len(order)))
    plan = []
    for rank, option in enumerate(ranked, start=1):
        pros, cons = _words(option)
        plan.append(
            PlanOption(
                option_id=option.option_id,
                rank=rank,
                how=option.action,
                pros=pros,
                cons=cons,
                estimated_cost_usd=option.fee_usd,
                figures=option,
            )
        )
    return tuple(plan)


def plan_lines(plan: tuple[PlanOption, ...]) -> tuple[str, ...]:
    """One plain line per option for channels that show ideas as a list."""
    lines = []
    for p in plan:
        f = p.figures
        lines.append(
            f"{p.rank}. {f.action}: fee {_usd(f.fee_usd)}, margin {_usd(f.margin_needed_usd)}, "
            f"net after {_usd(f.net_exposure_after_usd)}. {p.pros}; but {p.cons}"
        )
    return tuple(lines)
