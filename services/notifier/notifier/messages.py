"""What each notification says, per channel; built only from our own computed fields.

A phone message is read in two seconds: a headline (severity, account, what and how far),
one action line (the engine's computed ``alert.action``, never inferred from key names),
quick stats from the account's latest exposure snapshot and the time in the configured
timezone. Ids and correlation ids are only in the file record and Slack's context block.
An analysis is a short follow-up sent as a reply to its alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

from riskwatch_common.contracts import (
    PORTFOLIO_KEY,
    AlertTransition,
    AnalysisCompleted,
    AnalysisMode,
    ExposureSnapshotted,
    NotificationKind,
    RiskAlertChanged,
    Severity,
    derived_event_id,
)
from riskwatch_common.render import describe_action, leverage, percent, rule_name, usd
from riskwatch_common.text import escape, plain_text, sanitize

MAX_REASON_CHARS = 300
ANALYSIS_HTML_LIMIT = 1500
TELEGRAM_LIMIT = 4096
"""Telegram's ``sendMessage`` text limit; longer texts are split, never clipped."""

SEVERITY_ICONS = {
    Severity.CRITICAL: "🚨",
    Severity.HIGH: "🔴",
    Severity.WARNING: "🟠",
    Severity.INFO: "🔵",
}
SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.HIGH: 1, Severity.WARNING: 2, Severity.INFO: 3}
"""Queue order: lower goes first."""
RESOLVED_RANK = 3
RESOLVED_ICON = "✅"
STALLED_RULE = "monitoring_stalled"
LINK_RULE = "account_link"
"""The notifier's own alert: a group's heartbeats stopped (see ``watchdog.py``)."""
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to send on every channel; ``source_event_id`` is the dedup key."""

    kind: NotificationKind
    source_event_id: str
    alert_id: str
    alert_event_id: str
    account: str
    correlation_id: str
    severity: Severity
    transition: AlertTransition | None
    rule: str
    subject: str
    headline: str  # plain, one line: what a digest lists
    html: str
    plain: str
    slack: str  # Slack's fallback text (notifications, screen readers)
    console: str
    record: dict[str, Any]
    slack_blocks: tuple[dict[str, Any], ...] = field(default=())

    @property
    def rank(self) -> int:
        """Queue order, lower first: CRITICAL, HIGH, WARNING, then INFO and every resolve
        (good news waits behind a new problem, and can go into a digest)."""
        if self.transition == AlertTransition.RESOLVED:
            return RESOLVED_RANK
        return SEVERITY_RANK.get(self.severity, RESOLVED_RANK)


def notification_to_dict(n: Notification) -> dict[str, Any]:
    """The notification as JSON-ready data (the outbox keeps it across restarts)."""
    return {
        "kind": n.kind.value,
        "source_event_id": n.source_event_id,
        "alert_id": n.alert_id,
        "alert_event_id": n.alert_event_id,
        "account": n.account,
        "correlation_id": n.correlation_id,
        "severity": n.severity.value,
        "transition": n.transition.value if n.transition else None,
        "rule": n.rule,
        "subject": n.subject,
        "headline": n.headline,
        "html": n.html,
        "plain": n.plain,
        "slack": n.slack,
        "console": n.console,
        "record": n.record,
        "slack_blocks": list(n.slack_blocks),
    }


def notification_from_dict(doc: dict[str, Any]) -> Notification:
    return Notification(
        kind=NotificationKind(doc["kind"]),
        source_event_id=str(doc["source_event_id"]),
        alert_id=str(doc["alert_id"]),
        alert_event_id=str(doc["alert_event_id"]),
        account=str(doc["account"]),
        correlation_id=str(doc["correlation_id"]),
        severity=Severity(doc["severity"]),
        transition=AlertTransition(doc["transition"]) if doc.get("transition") else None,
        rule=str(doc["rule"]),
        subject=str(doc["subject"]),
        headline=str(doc["headline"]),
        html=str(doc["html"]),
        plain=str(doc["plain"]),
        slack=str(doc["slack"]),
        console=str(doc["console"]),
        record=dict(doc["record"]),
        slack_blocks=tuple(doc.get("slack_blocks") or ()),
    )


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters: &, < and > (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _subject(subject: str) -> str:
    # hedge-mode position subjects are "BTCUSDT:Buy"
    return subject.replace(":", " ")


def _n(numbers: dict[str, Decimal], key: str) -> Decimal | None:
    return numbers.get(key)


def _position_distance(exposure: ExposureSnapshotted | None, subject: str) -> Decimal | None:
    if exposure is None:
        return None
    symbol, _, side = subject.partition(":")
    for p in exposure.positions or exposure.riskiest_positions:
        if p.symbol == symbol and (not side or p.side.value == side):
            return p.liquidation_distance_pct
    return None


def _what(
    rule: str, subject: str, numbers: dict[str, Decimal], exposure: ExposureSnapshotted | None
) -> str:
    """The headline's 'what and how far' for a rule, from the alert's own numbers."""
    s = _subject(subject)
    if rule == STALLED_RULE:
        seconds = int(numbers.get("stalled_seconds", 0))
        return f"monitoring stalled: no fresh data from {subject} for {seconds} s"
    if rule == "liquidation_distance" and (d := _n(numbers, "liq_distance_pct")) is not None:
        return f"{s} {percent(d / HUNDRED)} from liquidation"
    if rule == "account_mm_rate":
        rate = _n(numbers, "account_mm_rate")
        if rate is None:
            return "margin balance not positive: liquidation"
        return f"MM rate {percent(rate)} (liquidation at 100%)"
    if rule == "net_exposure_share" and (share := _n(numbers, "net_share")) is not None:
        return f"net exposure {percent(abs(share))} of equity"
    if rule == "net_exposure_usd" and (net := _n(numbers, "net")) is not None:
        return f"net exposure {usd(net)}"
    if rule == "tier_cap_proximity" and (u := _n(numbers, "cap_utilization")) is not None:
        return f"{s} at {percent(u)} of its cap"
    if rule == "unrealized_loss" and (upl := _n(numbers, "unrealized_pnl")) is not None:
        return f"unrealized P&L {usd(upl)}"
    if rule == "direction_bias" and (buy := _n(numbers, "buy_share")) is not None:
        return f"{percent(buy)} of positions on the buy side"
    if rule == "order_blocked_by_leverage":
        lev = _n(numbers, "leverage")
        return f"{s} new orders blocked" + (f" at {leverage(lev)}" if lev else "")
    name = rule_name(rule)
    return name if subject in ("account", PORTFOLIO_KEY) else f"{s} {name.lower()}"


def _link_what(alert: RiskAlertChanged, tz: tzinfo) -> str:
    """The headline of an ``account_link`` alert: its severity says which problem it is
    (the risk processor's engine.link: CRITICAL key refused, HIGH no data, WARNING key
    expiring, with the expiry as the action's deadline)."""
    if alert.severity is Severity.CRITICAL:
        return "Bybit refused the API key: positions not watched"
    if alert.severity is Severity.HIGH:
        return "no data from Bybit: positions not watched"
    expires = alert.action.deadline if alert.action is not None else None
    if expires is None:
        return "API key expiring"
    local = expires.astimezone(tz)
    return f"API key expires {local:%a} {local.day} {local:%b}"


def _now_text(rule: str, subject: str, exposure: ExposureSnapshotted | None) -> str | None:
    """What a resolved alert's measure is now, from the latest snapshot, when we know it."""
    if rule == STALLED_RULE:
        return f"data flows again from {subject}"
    if rule == LINK_RULE:
        return "Bybit link OK: positions watched again"
    if exposure is None:
        return None
    if rule == "liquidation_distance":
        d = _position_distance(exposure, subject)
        if d is not None:
            return f"{_subject(subject)} back to {percent(d / HUNDRED)} from liquidation"
        return f"{_subject(subject)} position closed"
    if rule == "account_mm_rate" and exposure.account_mm_rate is not None:
        return f"MM rate back to {percent(exposure.account_mm_rate)}"
    if rule == "net_exposure_share" and exposure.net_share_of_equity is not None:
        share = abs(exposure.net_share_of_equity)
        return f"net exposure back to {percent(share)} of equity"
    if rule == "net_exposure_usd":
        return f"net exposure back to {usd(exposure.net)}"
    if rule == "unrealized_loss":
        return f"unrealized P&L now {usd(exposure.unrealised_pnl)}"
    if rule == "direction_bias" and exposure.buy_side_share is not None:
        return f"buy side back to {percent(exposure.buy_side_share)} of positions"
    return None


def quick_stats(exposure: ExposureSnapshotted | None) -> str:
    """Equity, net, UPL, MM rate and open positions of the latest snapshot, on one line."""
    if exposure is None:
        return ""
    parts = []
    if exposure.equity is not None:
        parts.append(f"Equity {usd(exposure.equity)}")
    parts.append(f"Net {usd(exposure.net)}")
    parts.append(f"UPL {usd(exposure.unrealised_pnl)}")
    if exposure.account_mm_rate is not None:
        parts.append(f"MM {percent(exposure.account_mm_rate)}")
    count = len(exposure.positions)
    parts.append(f"{count} position{'' if count == 1 else 's'}")
    return " · ".join(parts)


def local_time(at: datetime, tz: tzinfo) -> str:
    """``Sun 6 Dec 14:02 CET``: what a trader reads without converting from UTC."""
    local = at.astimezone(tz)
    return f"{local:%a} {local.day} {local:%b %H:%M} {local.tzname() or ''}".rstrip()


@dataclass(frozen=True, slots=True)
class Context:
    """What an alert's text needs beyond the alert: the latest snapshot and the timezone."""

    exposure: ExposureSnapshotted | None = None
    tz: tzinfo = UTC
    reminder_open_since: datetime | None = None  # set on a repeat of an open alert
    now: datetime | None = None  # a repeat shows when it is sent, not when it was raised


def headline(alert: RiskAlertChanged, ctx: Context = Context()) -> str:
    """``🔴 HIGH · sub_90x · BTCUSDT 4.8% from liquidation`` (plain text)."""
    if alert.transition == AlertTransition.RESOLVED:
        now = _now_text(alert.rule, alert.subject, ctx.exposure)
        what = now or f"{_what(alert.rule, alert.subject, {}, None)} cleared"
        return f"{RESOLVED_ICON} RESOLVED · {alert.account} · {what}"
    icon = SEVERITY_ICONS.get(alert.severity, "•")
    label = alert.severity.value
    if alert.transition == AlertTransition.ESCALATED:
        label += " ↑"
    if alert.rule == LINK_RULE:
        what = _link_what(alert, ctx.tz)
    else:
        what = _what(alert.rule, alert.subject, dict(alert.numbers), ctx.exposure)
    return f"{icon} {label} · {alert.account} · {what}"


def from_alert(alert: RiskAlertChanged, ctx: Context = Context()) -> Notification:
    head = headline(alert, ctx)
    resolved = alert.transition == AlertTransition.RESOLVED
    reason = "" if resolved else _one_line(_clip(alert.reason, MAX_REASON_CHARS))
    action = "" if resolved or alert.action is None else describe_action(alert.action, tz=ctx.tz)
    stats = quick_stats(ctx.exposure)
    at = ctx.now or alert.occurred_at
    when = local_time(at, ctx.tz)
    rule = rule_name(alert.rule)
    if ctx.reminder_open_since is not None:
        minutes = int((at - ctx.reminder_open_since).total_seconds() // 60)
        when = f"🔁 still open after {minutes} min · {when}"
    foot = f"{rule} · {when}"

    html_lines = [f"<b>{escape(head)}</b>"]
    if reason:
        html_lines.append(escape(reason))
    if action:
        html_lines.append(f"👉 <b>{escape(action)}</b>")
    if stats:
        html_lines.append(f"<i>{escape(stats)}</i>")
    html_lines.append(escape(foot))
    html = "\n".join(html_lines)
    plain = "\n".join(x for x in (head, reason, f"👉 {action}" if action else "", stats, foot) if x)

    refs = f"alert `{slack_escape(alert.alert_id)}` · corr `{slack_escape(alert.correlation_id)}`"
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*{slack_escape(head)}*" + (f"\n{slack_escape(reason)}" if reason else ""),
            },
        }
    ]
    if action:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"👉 *{slack_escape(action)}*"}}
        )
    context = [x for x in (stats, foot) if x]
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": slack_escape(x)} for x in context]
            + [{"type": "mrkdwn", "text": refs}],
        }
    )

    console = _one_line(
        f"[{alert.transition.value}] {head}"
        + (f" | {reason}" if reason else "")
        + (f" | do: {action}" if action else "")
        + (f" | {stats}" if stats else "")
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
        "transition": alert.transition.value,
        "reason": alert.reason,
        "numbers": {k: str(v) for k, v in alert.numbers.items()},
        "action": alert.action.model_dump(mode="json") if alert.action else None,
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
        severity=alert.severity,
        transition=alert.transition,
        rule=alert.rule,
        subject=alert.subject,
        headline=head,
        html=html,
        plain=plain,
        slack=head,
        console=console,
        record=record,
        slack_blocks=tuple(blocks),
    )


def from_analysis(analysis: AnalysisCompleted) -> Notification:
    by = (
        f"AI {analysis.model}"
        if analysis.mode == AnalysisMode.LLM and analysis.model
        else "riskwatch"
    )
    # the analyst sanitizes already; a consumer of a shared topic checks again
    body_html = sanitize(analysis.text_html, ANALYSIS_HTML_LIMIT)
    body = plain_text(body_html)
    ideas = [_clip(_one_line(i), 200) for i in analysis.hedging_ideas[:3]]
    head = f"💬 {by} on {analysis.account} · {rule_name(analysis.rule)}"

    html = "\n".join([f"<i>{escape(head)}</i>", body_html, *(f"• {escape(i)}" for i in ideas)])
    plain = "\n".join([head, body, *(f"• {i}" for i in ideas)])
    slack_text = "\n".join([f"_{slack_escape(head)}_", slack_escape(body)])
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": slack_text + "".join(f"\n• {slack_escape(i)}" for i in ideas),
            },
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"re alert `{slack_escape(analysis.alert_id)}` · corr "
                    f"`{slack_escape(analysis.correlation_id)}`",
                }
            ],
        },
    ]
    console = _one_line(
        f"[analysis {analysis.mode.value}] {head}: {body}"
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
        severity=analysis.severity,
        transition=analysis.transition,
        rule=analysis.rule,
        subject=analysis.subject or "",
        headline=head,
        html=html,
        plain=plain,
        slack=head,
        console=console,
        record=record,
        slack_blocks=tuple(blocks),
    )


def digest(notifications: list[Notification]) -> Notification:
    """One message for a burst: ``14 alerts on 5 accounts: …`` and a line per alert."""
    alerts = [n for n in notifications if n.kind == NotificationKind.ALERT]
    accounts = sorted({n.account for n in notifications})
    head = (
        f"📋 {len(alerts)} alert{'' if len(alerts) == 1 else 's'} on {len(accounts)} "
        f"account{'' if len(accounts) == 1 else 's'}: {', '.join(accounts[:8])}"
        + (" …" if len(accounts) > 8 else "")
    )
    lines = [n.headline for n in sorted(alerts, key=lambda n: (n.rank, n.account))]
    shown = lines[:30]
    more = len(lines) - len(shown)
    tail = [f"… and {more} more"] if more else []
    html = "\n".join([f"<b>{escape(head)}</b>", *map(escape, shown + tail)])
    plain = "\n".join([head, *shown, *tail])
    slack = "\n".join([f"*{slack_escape(head)}*", *map(slack_escape, shown + tail)])
    first = min(notifications, key=lambda n: n.record["occurred_at"])
    ids = sorted(n.source_event_id for n in notifications)
    return Notification(
        kind=NotificationKind.ALERT,
        source_event_id=derived_event_id("digest", *ids),
        alert_id="digest",
        alert_event_id=derived_event_id("digest", *ids),
        account=first.account,
        correlation_id=first.correlation_id,
        severity=max((n.severity for n in notifications), key=lambda s: -SEVERITY_RANK[s]),
        transition=None,
        rule="digest",
        subject="",
        headline=head,
        html=html,
        plain=plain,
        slack=head,
        console=_one_line(plain),
        record={**first.record, "text": plain},
        slack_blocks=({"type": "section", "text": {"type": "mrkdwn", "text": slack}},),
    )


class _Splitter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.tokens: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tokens.append(("open", tag))

    def handle_endtag(self, tag: str) -> None:
        self.tokens.append(("close", tag))

    def handle_data(self, data: str) -> None:
        self.tokens.append(("text", data))

    def handle_entityref(self, name: str) -> None:
        self.tokens.append(("entity", f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.tokens.append(("entity", f"&#{name};"))


def split_html(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Cut Telegram HTML into parts of at most ``limit`` characters, each valid on its own.

    Parts end at a line break where one is near; tags open at a cut are closed at the end
    of the part and opened again at the start of the next; entities are never cut.
    """
    if len(text) <= limit:
        return [text]
    parser = _Splitter()
    parser.feed(text)
    parser.close()
    atoms: list[tuple[str, str]] = []
    for kind, value in parser.tokens:
        if kind == "text":
            # one atom per line so a part can end at a line break
            for line in value.splitlines(keepends=True):
                atoms.extend(("text", line[i : i + 200]) for i in range(0, len(line), 200))
        else:
            atoms.append((kind, value))
    parts: list[str] = []
    out: list[str] = []
    stack: list[str] = []
    length = 0

    def closing() -> int:
        return sum(len(t) + 3 for t in stack)

    def cut() -> None:
        nonlocal out, length
        parts.append("".join(out) + "".join(f"</{t}>" for t in reversed(stack)))
        out = [f"<{t}>" for t in stack]
        length = sum(len(t) + 2 for t in stack)

    for kind, value in atoms:
        piece = f"<{value}>" if kind == "open" else f"</{value}>" if kind == "close" else value
        extra = len(value) + 3 if kind == "open" else 0
        if length + len(piece) + closing() + extra > limit and length > closing():
            cut()
        if kind == "text" and length + len(piece) + closing() > limit:
            room = max(limit - length - closing(), 1)
            while len(piece) > room:
                out.append(piece[:room])
                length += room
                piece = piece[room:]
                cut()
                room = max(limit - length - closing(), 1)
        out.append(piece)
        length += len(piece)
        if kind == "open":
            stack.append(value)
        elif kind == "close" and stack and stack[-1] == value:
            stack.pop()
    if length > sum(len(t) + 2 for t in stack):
        parts.append("".join(out) + "".join(f"</{t}>" for t in reversed(stack)))
    return [p for p in parts if plain_text(p).strip()]
