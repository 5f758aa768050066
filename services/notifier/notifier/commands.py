"""What ``/status``, ``/mute``, ``/unmute``, ``/ack`` and ``/silences`` do, wherever they come
from (a Telegram chat, the CLI through the HTTP API). Pure: the caller publishes the
returned silence events and sends the reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from notifier.messages import Context, headline, local_time, quick_stats
from notifier.silences import (
    Silences,
    describe,
    lifted,
    new_silence,
    parse_duration,
    resolve_target,
)
from riskwatch_common.contracts import (
    PORTFOLIO_KEY,
    ExposureSnapshotted,
    RiskAlertChanged,
    SilenceChanged,
    SilenceScope,
)
from riskwatch_common.render import RULE_NAMES
from riskwatch_common.text import escape

DEFAULT_MUTE = "1h"
HELP = (
    "/status: portfolio, accounts, open alerts, silences\n"
    "/mute TARGET [30m|1h|2d] [why]: an account, rule or symbol off the phones\n"
    "/unmute TARGET|all\n"
    "/ack [ACCOUNT|all]: no more repeats (or reply /ack to an alert)\n"
    "/silences"
)


@dataclass(frozen=True, slots=True)
class State:
    """What the commands read: the notifier's latest view."""

    now: datetime
    tz: tzinfo
    exposures: Mapping[str, ExposureSnapshotted]
    open_alerts: Mapping[str, RiskAlertChanged]
    silences: Silences


@dataclass(slots=True)
class Reply:
    html: str
    events: list[SilenceChanged] = field(default_factory=list)
    ok: bool = True


def run(text: str, state: State, *, by: str, replied_alert_id: str | None = None) -> Reply:
    """Run one command line (``/mute sub_90x 1h``); a ``@botname`` suffix is ignored."""
    words = text.strip().split()
    if not words or not words[0].startswith("/"):
        return Reply(escape(HELP), ok=False)
    name = words[0][1:].split("@")[0].lower()
    args = words[1:]
    try:
        if name == "status":
            return Reply(status(state))
        if name == "silences":
            return Reply(silences_text(state))
        if name == "mute":
            return mute(args, state, by)
        if name == "unmute":
            return unmute(args, state, by)
        if name == "ack":
            return ack(args, state, by, replied_alert_id)
    except ValueError as exc:
        return Reply(f"⚠️ {escape(str(exc))}", ok=False)
    return Reply(escape(HELP), ok=name in ("help", "start"))


def _accounts(state: State) -> set[str]:
    return {k for k in state.exposures if k != PORTFOLIO_KEY} | {
        a.account for a in state.open_alerts.values()
    }


def _rules(state: State) -> set[str]:
    return set(RULE_NAMES) | {a.rule for a in state.open_alerts.values()}


def mute(args: list[str], state: State, by: str) -> Reply:
    if not args:
        raise ValueError("say /mute TARGET [30m|1h|2d] [why], e.g. /mute sub_90x 1h")
    scope, value = resolve_target(args[0], _accounts(state), _rules(state))
    span_text = args[1] if len(args) > 1 else DEFAULT_MUTE
    span = parse_duration(span_text)
    reason = " ".join(args[2:])[:200]
    event = new_silence(scope, value, now=state.now, until=state.now + span, by=by, reason=reason)
    until = local_time(state.now + span, state.tz)
    return Reply(
        f"🔕 {escape(describe(event, state.now))} (until {escape(until)}); "
        "still written to the alerts file",
        [event],
    )


def unmute(args: list[str], state: State, by: str) -> Reply:
    if not args:
        raise ValueError("say /unmute TARGET or /unmute all")
    active = [s for s in state.silences.active(state.now) if s.scope != SilenceScope.ACK]
    if args[0].lower() == "all":
        chosen = active
    else:
        by_id = state.silences.get(args[0])
        if by_id is not None:
            chosen = [by_id]
        else:
            scope, value = resolve_target(args[0], _accounts(state), _rules(state))
            chosen = state.silences.find(scope, value, state.now)
    if not chosen:
        return Reply(f"nothing muted for {escape(args[0])}", ok=False)
    events = [lifted(s, now=state.now, by=by) for s in chosen]
    names = ", ".join(f"{s.scope.value} {s.value}" for s in chosen)
    return Reply(f"🔔 unmuted {escape(names)}", events)


def ack(args: list[str], state: State, by: str, replied_alert_id: str | None) -> Reply:
    open_alerts = list(state.open_alerts.values())
    if replied_alert_id is not None:
        chosen = [a for a in open_alerts if a.alert_id == replied_alert_id]
        if not chosen:
            return Reply("that alert is no longer open", ok=False)
    elif not args:
        raise ValueError("reply /ack to an alert, or say /ack ACCOUNT or /ack all")
    elif args[0].lower() == "all":
        chosen = open_alerts
    else:
        target = args[0]
        chosen = [a for a in open_alerts if target in (a.account, a.alert_id)]
        if not chosen:
            return Reply(f"no open alert for {escape(target)}", ok=False)
    events = [
        new_silence(SilenceScope.ACK, a.alert_id, now=state.now, until=None, by=by)
        for a in chosen
        if state.silences.ack_of(a.alert_id) is None
    ]
    lines = [escape(headline(a)) for a in chosen]
    return Reply("👍 acknowledged, no more repeats:\n" + "\n".join(lines), events)


def silences_text(state: State) -> str:
    active = state.silences.active(state.now)
    if not active:
        return "🔔 no silences"
    return "🔕 silences:\n" + "\n".join(
        f"• {escape(describe(s, state.now))} <code>{escape(s.silence_id[:8])}</code>"
        for s in active
    )


def status(state: State) -> str:
    """The portfolio overview: totals, each account, open alerts and silences."""
    lines = [f"<b>📊 Portfolio · {escape(local_time(state.now, state.tz))}</b>"]
    portfolio = state.exposures.get(PORTFOLIO_KEY)
    if portfolio is not None:
        lines.append(escape(quick_stats(portfolio)))
    accounts = sorted(k for k in state.exposures if k != PORTFOLIO_KEY)
    for account in accounts:
        lines.append(f"• <b>{escape(account)}</b> {escape(quick_stats(state.exposures[account]))}")
    if not portfolio and not accounts:
        lines.append("no exposure snapshot yet")
    alerts = sorted(state.open_alerts.values(), key=lambda a: (-_rank(a), a.account))
    lines.append(f"<b>Open alerts ({len(alerts)})</b>")
    for a in alerts[:20]:
        mark = " 👍" if state.silences.ack_of(a.alert_id) else ""
        ctx = Context(exposure=state.exposures.get(a.account), tz=state.tz)
        lines.append(escape(headline(a, ctx)) + mark)
    if len(alerts) > 20:
        lines.append(f"… and {len(alerts) - 20} more")
    lines.append(silences_text(state))
    return "\n".join(lines)


def _rank(a: RiskAlertChanged) -> int:
    return ["INFO", "WARNING", "HIGH", "CRITICAL"].index(a.severity.value)
