"""Settings: the unprefixed gateway key, defaults from docs/product.md, secrets redacted."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ai_analyst.settings import AnalystSettings
from riskwatch_common.logs import redact
from riskwatch_common.settings import load_settings


@pytest.fixture(autouse=True)
def _kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")


def test_key_is_read_from_unprefixed_holysheep_api_key_and_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "hs-settings-test-5f4e3d2c1b0a"
    monkeypatch.setenv("HOLYSHEEP_API_KEY", key)
    settings = load_settings(AnalystSettings)
    assert settings.holysheep_api_key is not None
    assert settings.holysheep_api_key.get_secret_value() == key
    assert key not in repr(settings)
    assert redact(f"Bearer {key}") == "Bearer ***"


def test_blank_key_means_deterministic_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLYSHEEP_API_KEY", "  ")
    assert load_settings(AnalystSettings).holysheep_api_key is None


def test_defaults_follow_the_brief(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOLYSHEEP_API_KEY", raising=False)
    s = load_settings(AnalystSettings)
    assert s.http_port == 8083
    assert s.base_url == "https://api.holysheep.ai/v1"
    assert (s.cheap_model, s.strong_model) == ("deepseek-v3.2", "gpt-4.1")
    assert s.cheap_output_usd_per_mtok == Decimal("0.42")
    assert s.strong_output_usd_per_mtok == Decimal("8.00")
    assert s.daily_budget_usd == Decimal(5)
    assert s.read_timeout_seconds == 60


def test_prices_and_budget_are_exact_decimals_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI_ANALYST_DAILY_BUDGET_USD", "0.10")
    monkeypatch.setenv("AI_ANALYST_CHEAP_INPUT_USD_PER_MTOK", "0.028")
    s = load_settings(AnalystSettings)
    assert s.daily_budget_usd == Decimal("0.10")
    assert s.cheap_input_usd_per_mtok == Decimal("0.028")
