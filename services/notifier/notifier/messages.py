"""What each notification says, per channel; built only from the event's own fields.

An alert's text is deterministic (our numbers, never an LLM's) so it can go out the moment
the alert arrives; an analysis is a follow-up that names the alert it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from riskwatch_common.contracts import (
    AlertTransition,
    AnalysisCompleted,
    AnalysisMode,
    NotificationKind,
    RiskAlertChanged,
)
from riskwatch_common.text import escape, format_number, plain_text, sanitize

MAX_REASON_CHARS = 500
MAX_NUMBERS = 8
ANALYSIS_HTML_LIMIT = 1500

ICONS = {
    AlertTransition.RAISED: "🚨",
    AlertTransition.ESCALATED: "⏫",
    AlertTransition.RESOLVED: "✅",
}


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to send on every channel; ``source_event_id`` is the dedup key."""

    kind: NotificationKind
    source_event_id: str
    alert_id: str
    alert_event_id: str
    account: str
    correlation_id: str
    html: str
    plain: str
    slack: str
    console: str
    record: dict[str, Any]


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters: &, < and > (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def from_alert(alert: RiskAlertChanged) -> Notification:
    icon = ICONS.get(alert.transition, "•")
    transition = alert.transition.value
    reason = _clip(alert.reason, MAX_REASON_CHARS)
    numbers = list(alert.numbers.items())[:MAX_NUMBERS]
    numbers_text = ", ".join(f"{k}={format_number(v)}" for k, v in numbers)
    refs = f"alert {alert.alert_id} · corr {alert.correlation_id}"

    html_lines = [
        f"{icon} <b>{escape(alert.severity.value)}</b> {escape(alert.rule)} {transition} · "
        f"<b>{escape(alert.account)}</b> / {escape(alert.subject)}",
        escape(reason),
    ]
    if numbers_text:
        html_lines.append(f"<code>{escape(numbers_text)}</code>")
    html_lines.append(
        f"alert <code>{escape(alert.alert_id)}</code> · corr "
        f"<code>{escape(alert.correlation_id)}</code>"
    )
    html = "\n".join(line for line in html_lines if line)

    plain_lines = [
        f"{icon} {alert.severity.value} {alert.rule} {transition} · "
        f"{alert.account} / {alert.subject}",
        reason,
        numbers_text,
        refs,
    ]
    plain = "\n".join(line for line in plain_lines if line)

    slack_lines = [
        f"{icon} *{slack_escape(alert.severity.value)}* {slack_escape(alert.rule)} {transition}"
        f" · *{slack_escape(alert.account)}* / {slack_escape(alert.subject)}",
        slack_escape(reason),
        f"`{slack_escape(numbers_text)}`" if numbers_text else "",
        f"alert `{slack_escape(alert.alert_id)}` · corr `{slack_escape(alert.correlation_id)}`",
    ]
    slack = "\n".join(line for line in slack_lines if line)

    console = _one_line(
        f"[ALERT {transition}] {alert.severity.value} {alert.account}/{alert.subject} "
        f"{alert.rule}: {reason}"
        + (f" | {numbers_text}" if numbers_text else "")
        + f" | alert={alert.alert_id} event={alert.event_id} corr={alert.correlation_id}"
    )
    record: dict[str, Any] = {
        "event_id": alert.event_id,
        "kind": NotificationKind.ALERT.value,
        "alert_id": alert.alert_id,
        "account": alert.account,
        "rule": alert.rule,
        "subject": alert.subject,
        "severity": alert.severity.value,
        "risk_level": alert.risk_level.value if alert.risk_level else None,
        "transition": transition,
        "reason": alert.reason,
        "numbers": {k: str(v) for k, v in alert.numbers.items()},
        "correlation_id": alert.correlation_id,
        "occurred_at": alert.occurred_at.isoformat(),
        "text": plain,
    }
    return Notification(
        kind=NotificationKind.ALERT,
        source_event_id=alert.event_id,
        alert_id=alert.alert_id,
        alert_event_id=alert.event_id,
        account=alert.account,
        correlation_id=alert.correlation_id,
        html=html,
        plain=plain,
        slack=slack,
        console=console,
        record=record,
    )


def from_analysis(analysis: AnalysisCompleted) -> Notification:
    by = (
        f"AI {analysis.model}"
        if analysis.mode == AnalysisMode.LLM and analysis.model
        else "deterministic"
    )
    # the analyst sanitizes already; a consumer of a shared topic checks again
    body_html = sanitize(analysis.text_html, ANALYSIS_HTML_LIMIT)
    body = plain_text(body_html)
    ideas = [_clip(_one_line(i), 200) for i in analysis.hedging_ideas[:5]]
    head_plain = f"💬 Analysis ({by}) · {analysis.rule} · {analysis.account}"
    refs = f"re alert {analysis.alert_id} · corr {analysis.correlation_id}"

    html = "\n".join(
        [
            f"💬 <b>Analysis</b> ({escape(by)}) · {escape(analysis.rule)} · "
            f"<b>{escape(analysis.account)}</b>",
            body_html,
            *(f"• {escape(i)}" for i in ideas),
            f"re alert <code>{escape(analysis.alert_id)}</code> · corr "
            f"<code>{escape(analysis.correlation_id)}</code>",
        ]
    )
    plain = "\n".join([head_plain, body, *(f"• {i}" for i in ideas), refs])
    slack = "\n".join(
        [
            f"💬 *Analysis* ({slack_escape(by)}) · {slack_escape(analysis.rule)} · "
            f"*{slack_escape(analysis.account)}*",
            slack_escape(body),
            *(f"• {slack_escape(i)}" for i in ideas),
            f"re alert `{slack_escape(analysis.alert_id)}` · corr "
            f"`{slack_escape(analysis.correlation_id)}`",
        ]
    )
    console = _one_line(
        f"[ANALYSIS {analysis.mode.value}] {analysis.severity.value} {analysis.account} "
        f"{analysis.rule}: {body}"
        + (f" | ideas: {'; '.join(ideas)}" if ideas else "")
        + f" | alert={analysis.alert_id} event={analysis.event_id} corr={analysis.correlation_id}"
    )
    record: dict[str, Any] = {
        "event_id": analysis.event_id,
        "kind": NotificationKind.ANALYSIS.value,
        "alert_id": analysis.alert_id,
        "alert_event_id": analysis.alert_event_id,
        "account": analysis.account,
        "rule": analysis.rule,
        "severity": analysis.severity.value,
        "subject": analysis.subject,
        "transition": analysis.transition.value if analysis.transition else None,
        "reason": analysis.note,
        "numbers": {},
        "mode": analysis.mode.value,
        "model": analysis.model,
        "hedging_ideas": list(analysis.hedging_ideas),
        "cost_usd": str(analysis.cost_usd),
        "correlation_id": analysis.correlation_id,
        "occurred_at": analysis.occurred_at.isoformat(),
        "text": plain,
    }
    return Notification(
        kind=NotificationKind.ANALYSIS,
        source_event_id=analysis.event_id,
        alert_id=analysis.alert_id,
        alert_event_id=analysis.alert_event_id,
        account=analysis.account,
        correlation_id=analysis.correlation_id,
        html=html,
        plain=plain,
        slack=slack,
        console=console,
        record=record,
    )
