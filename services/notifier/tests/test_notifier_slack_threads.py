"""Slack with a bot token: Block Kit messages, and the analysis threaded under its alert
(``thread_ts``), also after a restart; against the fake Slack Web API over real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from notifier.messages import from_analysis
from riskwatch_common.fakes import FakeSlack

ROUTING = """
channels:
  desk-slack: {type: slack, bot_token_env: SLACK_DESK_BOT_TOKEN, channel: C0RISKDESK}
routes:
  - to: desk-slack
"""


async def test_analysis_is_a_thread_reply_to_its_alert_even_after_a_restart(
    tmp_path: Path,
    slack: FakeSlack,
    settings_for: Any,
    make_app: Any,
    stop_app: Any,
    make_alert: Any,
    make_analysis: Any,
    clock: Any,
    handle: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_DESK_BOT_TOKEN", FakeSlack.BOT_TOKEN)
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    settings = settings_for(tmp_path, routing_file=str(routing), slack_api_base=slack.api_base)
    app = await make_app(settings, clock)
    first, second = make_alert(account="a1"), make_alert(account="a2")
    await handle(app, first, second, make_analysis(first))
    alert_post, other_post, reply = slack.posts
    assert alert_post["text"] == "🔴 HIGH · a1 · net exposure 12,500 USD"  # the fallback
    assert [b["type"] for b in alert_post["blocks"]] == ["section", "context"]
    assert "thread_ts" not in alert_post
    assert reply["thread_ts"] == alert_post["ts"]
    await stop_app(app)

    again = await make_app(settings, clock)  # the alert's ts comes from the delivery log
    futures = await again.dispatcher.dispatch(from_analysis(make_analysis(second)))
    await asyncio.gather(*futures)
    assert slack.posts[-1]["thread_ts"] == other_post["ts"]


async def test_a_bot_channel_whose_token_variable_is_unset_stops_startup(
    tmp_path: Path, settings_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_DESK_BOT_TOKEN", raising=False)
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    with pytest.raises(
        ValueError, match=r"channels\.desk-slack\.bot_token_env: SLACK_DESK_BOT_TOKEN is not set"
    ):
        settings_for(tmp_path, routing_file=str(routing))
