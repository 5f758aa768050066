"""The ``account_link`` rule: the ingestor's link statuses as alerts through the normal
alert path (engine.link, evaluate.evaluate_account, the risk book's changelog form)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from processor_testkit import T0, position, wallet
from risk_processor import state
from risk_processor.config import parse_config
from risk_processor.engine import link as link_rule
from risk_processor.evaluate import AccountState, evaluate_account
from risk_processor.outputs import Cause
from riskwatch_common.contracts import ActionKind, Severity, Side
from riskwatch_common.render import describe_action

CAUSE = Cause("corr-link", T0, T0)
MARKS = {"BTCUSDT": Decimal(70000)}
DOWN_SINCE = datetime(2026, 3, 2, 9, 2, tzinfo=UTC)
EXPIRES = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)


def _state(risk: state.RiskBook, *, with_data: bool = True) -> AccountState:
    positions: dict[str, state.PositionEntry] = {}
    held_wallet = None
    if with_data:
        state.apply_position(positions, position("sub_x", "BTCUSDT", Side.BUY, "0.1", 69000, 5))
        held_wallet = state.apply_wallet(None, wallet("sub_x", equity=10000))
    return AccountState("sub_x", positions, state.EMPTY_ORDERS, held_wallet, risk)


def _run(risk: state.RiskBook, now: datetime = T0, *, with_data: bool = True):  # type: ignore[no-untyped-def]
    return evaluate_account(
        _state(risk, with_data=with_data),
        marks=MARKS,
        tiers={},
        config=parse_config({}),
        now=now,
        cause=CAUSE,
        source="risk-processor/test",
    )


def _status(risk: state.RiskBook, status: str, **kw: object) -> state.RiskBook:
    at = kw.pop("at", T0)
    link = link_rule.step(risk.link, status, at, **kw)  # type: ignore[arg-type]
    return replace(risk, link=link)


def _link_alerts(result) -> list:  # type: ignore[no-untyped-def]
    return [a for a in result.alerts if a.rule == "account_link"]


def test_link_down_raises_high_naming_the_time_and_resynced_resolves_at_once() -> None:
    risk = _status(state.EMPTY_RISK, "connected")
    risk = _status(risk, "resynced")
    assert _link_alerts(_run(risk)) == []
    risk = _status(risk, "link_down", down_since=DOWN_SINCE, reason="no message for 90 s")
    first = _run(risk)
    [raised] = _link_alerts(first)
    assert raised.transition.value == "raised"
    assert raised.severity is Severity.HIGH
    assert raised.subject == "account"
    assert "no data from Bybit for sub_x since 09:02 UTC" in raised.reason
    assert "positions are not watched" in raised.reason
    assert raised.action is not None
    assert raised.action.kind is ActionKind.CHECK_LINK
    assert raised.action.account == "sub_x"
    # A broken link is not fixed by trading: no hedge plan, although sub_x holds BTCUSDT.
    assert raised.hedge_options == ()
    # Still down: the alert stays open and silent.
    again = _run(first.risk, T0 + timedelta(seconds=5))
    assert _link_alerts(again) == []
    # One evaluation after the link recovers: resolved (a discrete state, no hysteresis).
    recovered = _status(again.risk, "resynced")
    [resolved] = _link_alerts(_run(recovered, T0 + timedelta(seconds=10)))
    assert resolved.transition.value == "resolved"
    assert resolved.alert_id == raised.alert_id


def test_auth_failed_is_critical_and_connected_resolves_it() -> None:
    risk = _status(state.EMPTY_RISK, "auth_failed", reason="retCode 10003: API key is invalid")
    # No position or wallet ever arrived: the alert is raised all the same.
    first = _run(risk, with_data=False)
    [raised] = _link_alerts(first)
    assert raised.severity is Severity.CRITICAL
    assert "Bybit refused the API key of sub_x" in raised.reason
    assert "10003" in raised.reason
    # A link_down while the key is refused does not hide the refusal.
    down = _status(first.risk, "link_down", down_since=DOWN_SINCE)
    assert down.link is not None
    assert down.link.stream == "auth_failed"
    assert _link_alerts(_run(down, with_data=False)) == []
    [resolved] = _link_alerts(_run(_status(down, "connected"), with_data=False))
    assert resolved.transition.value == "resolved"


def test_key_expiring_is_a_warning_with_the_date_and_key_ok_resolves_it() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    risk = _status(state.EMPTY_RISK, "key_expiring", key_expires_at=EXPIRES, at=now)
    first = _run(risk, now)
    [raised] = _link_alerts(first)
    assert raised.severity is Severity.WARNING
    assert "expires on 2026-03-05 (in 4 day(s))" in raised.reason
    assert raised.action is not None
    assert raised.action.deadline == EXPIRES
    assert describe_action(raised.action) == "renew sub_x's API key on Bybit before Thu 5 Mar 12:00"
    # A stream recovery does not end an expiring key.
    assert _link_alerts(_run(_status(first.risk, "resynced"), now)) == []
    [resolved] = _link_alerts(_run(_status(first.risk, "key_ok"), now))
    assert resolved.transition.value == "resolved"


def test_a_down_link_escalates_an_expiring_key_alert_and_recovery_keeps_the_expiry() -> None:
    risk = _status(state.EMPTY_RISK, "key_expiring", key_expires_at=EXPIRES)
    first = _run(risk)
    [raised] = _link_alerts(first)
    down = _run(_status(first.risk, "link_down", down_since=DOWN_SINCE))
    [escalated] = _link_alerts(down)
    assert escalated.transition.value == "escalated"
    assert escalated.severity is Severity.HIGH
    assert escalated.alert_id == raised.alert_id
    assert escalated.action is not None
    assert escalated.action.deadline is None
    back = _status(down.risk, "resynced")
    assert back.link is not None
    assert back.link.key_expires_at == EXPIRES
    assert link_rule.link_candidate("sub_x", back.link, T0) is not None


def test_disconnected_short_of_the_threshold_changes_nothing() -> None:
    risk = _status(state.EMPTY_RISK, "resynced")
    assert link_rule.step(risk.link, "disconnected", T0) == risk.link
    assert _link_alerts(_run(_status(risk, "disconnected"))) == []


def test_the_link_and_its_open_alert_survive_a_restart_through_the_changelog_form() -> None:
    risk = _status(state.EMPTY_RISK, "link_down", down_since=DOWN_SINCE, reason="stale")
    first = _run(risk)
    assert len(_link_alerts(first)) == 1
    stored = orjson.loads(orjson.dumps(state.risk_to_json(first.risk)))
    restored = state.risk_from_json(stored)
    assert restored.link == first.risk.link
    assert restored.link is not None
    assert restored.link.since == DOWN_SINCE
    # After the restart: no second raise, and the recovery still resolves it.
    assert _link_alerts(_run(restored)) == []
    [resolved] = _link_alerts(_run(_status(restored, "resynced")))
    assert resolved.transition.value == "resolved"
    # Resynced once is remembered too (the portfolio warm-up reads it).
    assert state.risk_from_json(state.risk_to_json(_status(restored, "resynced"))).link == (
        link_rule.LinkState(resynced=True)
    )
