"""The bot token and the webhook URL never reach logs, errors, outcome events or metrics.

The secrets are deliberately not registered with the log redactor here, so this checks
that our own code never puts them anywhere, not that the redactor hides them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from pydantic import SecretStr

from notifier.app import outcome_event
from notifier.messages import from_alert
from riskwatch_common.broker import free_port

LEAKY_TOKEN = "7987654321:AAG-leakCheck_Zx9Qw8Er7Ty6Ui5Op4As3"
WEBHOOK_SECRET = "q7Xw9kLmN2pR4sT6vY8zA1bC"  # the secret part of FakeSlack.PATH


async def test_failures_never_expose_the_token_or_webhook(
    tmp_path: Path,
    telegram: Any,
    slack: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    scenarios = [
        # wrong token: the fake answers 401 Unauthorized
        settings_for(tmp_path / "a", telegram=telegram, slack=slack),
        # server errors until attempts run out, on both
        settings_for(tmp_path / "b", telegram=telegram, slack=slack),
        # nothing listening
        settings_for(
            tmp_path / "c",
            telegram=telegram,
            slack=slack,
            telegram_api_base=closed,
            slack_webhook_url=SecretStr(f"{closed}{slack.PATH}"),
        ),
        # no answer within the timeout
        settings_for(tmp_path / "d", telegram=telegram, slack=slack, request_timeout_seconds=0.3),
    ]
    scenarios[0] = scenarios[0].model_copy(update={"telegram_bot_token": SecretStr(LEAKY_TOKEN)})
    slack.fail(404, "channel_not_found")
    outcomes = []
    with caplog.at_level(logging.DEBUG):
        for i, settings in enumerate(scenarios):
            if i == 1:
                for _ in range(3):
                    telegram.fail(500, "Internal Server Error")
                    slack.fail(500, "rollup_error")
            if i == 3:
                for _ in range(3):
                    telegram.hang()
                    slack.hang()
            stack = await make_stack(settings.model_copy(update={"max_attempts": 3}))
            sent = await stack.send(from_alert(make_alert()))
            outcomes += [sent["telegram"], sent["slack"]]
            await stack.close()

    assert len(outcomes) == 8
    assert not any(o.delivered for o in outcomes)  # every scenario really failed
    assert "telegram HTTP 401: Unauthorized" in {o.error for o in outcomes}
    assert sum("not delivered" in r.getMessage() for r in caplog.records) == 8

    events = [
        outcome_event(o, source="notifier/0", now=lambda: make_alert().occurred_at)
        for o in outcomes
    ]
    haystacks = {
        "logs": caplog.text + "".join(str(vars(r)) for r in caplog.records),
        "errors": " ".join(o.error for o in outcomes),
        "events": " ".join(e.model_dump_json() for e in events),
        "metrics": generate_latest(REGISTRY).decode(),
    }
    for secret in (LEAKY_TOKEN, telegram.token, WEBHOOK_SECRET):
        for where, text in haystacks.items():
            assert secret not in text, f"secret found in {where}"
