"""Settings: channels off without credentials, blanks mean unset, secrets redacted."""

from __future__ import annotations

import pytest

from notifier.settings import NotifierSettings
from riskwatch_common.logs import redact
from riskwatch_common.settings import load_settings


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    for name in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID", "SLACK_WEBHOOK_URL", "ALERTS_FILE"):
        monkeypatch.delenv(f"NOTIFIER_{name}", raising=False)


def test_defaults() -> None:
    s = load_settings(NotifierSettings)
    assert s.http_port == 8084
    assert s.alerts_file == "var/alerts.jsonl"
    assert s.telegram_api_base == "https://api.telegram.org"
    assert s.telegram_bot_token is None
    assert s.slack_webhook_url is None


def test_blank_credentials_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_TELEGRAM_BOT_TOKEN", "")
    monkeypatch.setenv("NOTIFIER_TELEGRAM_CHAT_ID", " ")
    monkeypatch.setenv("NOTIFIER_SLACK_WEBHOOK_URL", "")
    s = load_settings(NotifierSettings)
    assert (s.telegram_bot_token, s.telegram_chat_id, s.slack_webhook_url) == (None, None, None)


def test_token_and_webhook_are_registered_with_the_log_redactor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "7111111111:AAsettingsTestToken_abcdef"
    webhook = "https://hooks.slack.com/services/T1/B1/settingsTestSecret"
    monkeypatch.setenv("NOTIFIER_TELEGRAM_BOT_TOKEN", token)
    monkeypatch.setenv("NOTIFIER_SLACK_WEBHOOK_URL", webhook)
    s = load_settings(NotifierSettings)
    assert token not in repr(s)
    assert webhook not in repr(s)
    assert redact(f"POST https://api.telegram.org/bot{token}/sendMessage") == (
        "POST https://api.telegram.org/bot***/sendMessage"
    )
    assert redact(webhook) == "***"
