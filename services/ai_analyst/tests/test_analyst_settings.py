"""Settings: the unprefixed gateway key, defaults from docs/product.md, secrets redacted."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ai_analyst.pricing import ModelPrice
from ai_analyst.settings import AnalystSettings
from riskwatch_common.logs import redact
from riskwatch_common.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")


@pytest.mark.parametrize("variable", ["AI_ANALYST_API_KEY", "HOLYSHEEP_API_KEY"])
def test_key_is_read_from_the_generic_variable_or_its_holysheep_alias_and_redacted(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv("AI_ANALYST_API_KEY", raising=False)
    monkeypatch.delenv("HOLYSHEEP_API_KEY", raising=False)
    key = "hs-settings-test-5f4e3d2c1b0a"
    monkeypatch.setenv(variable, key)
    settings = load_settings(AnalystSettings)
    assert settings.gateway_key is not None
    assert settings.gateway_key.get_secret_value() == key
    assert key not in repr(settings)
    assert redact(f"Bearer {key}") == "Bearer ***"


def test_blank_key_means_deterministic_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AI_ANALYST_API_KEY", raising=False)
    monkeypatch.setenv("HOLYSHEEP_API_KEY", "  ")
    assert load_settings(AnalystSettings).gateway_key is None


def test_a_blank_generic_key_does_not_hide_the_holysheep_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI_ANALYST_API_KEY", "")  # as .env.example leaves it
    monkeypatch.setenv("HOLYSHEEP_API_KEY", "hs-alias-key-0123456789")
    key = load_settings(AnalystSettings).gateway_key
    assert key is not None
    assert key.get_secret_value() == "hs-alias-key-0123456789"
    monkeypatch.setenv("AI_ANALYST_API_KEY", "generic-key-0123456789")
    key = load_settings(AnalystSettings).gateway_key
    assert key is not None
    assert key.get_secret_value() == "generic-key-0123456789"


def test_defaults_follow_the_users_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOLYSHEEP_API_KEY", raising=False)
    monkeypatch.delenv("AI_ANALYST_API_KEY", raising=False)
    s = load_settings(AnalystSettings)
    assert s.http_port == 8083
    assert s.base_url == "https://api.holysheep.ai/v1"
    assert (s.cheap_model, s.strong_model) == ("deepseek-v3.2", "gpt-4.1")
    # flat prices per million tokens, input and output alike
    assert s.cheap_price == ModelPrice(Decimal("0.42"), Decimal("0.42"))
    assert s.strong_price == ModelPrice(Decimal(8), Decimal(8))
    assert s.daily_budget_usd == Decimal(5)
    assert s.read_timeout_seconds == 60
    assert s.spend_key == "ai-analyst/0"


def test_an_input_output_split_overrides_the_flat_price(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_ANALYST_STRONG_INPUT_USD_PER_MTOK", "2")
    s = load_settings(AnalystSettings)
    assert s.strong_price == ModelPrice(Decimal(2), Decimal(8))


def test_prices_and_budget_are_exact_decimals_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI_ANALYST_DAILY_BUDGET_USD", "0.10")
    monkeypatch.setenv("AI_ANALYST_CHEAP_INPUT_USD_PER_MTOK", "0.028")
    s = load_settings(AnalystSettings)
    assert s.daily_budget_usd == Decimal("0.10")
    assert s.cheap_input_usd_per_mtok == Decimal("0.028")


@pytest.mark.parametrize("variable", ["AI_ANALYST_API_KEY", "HOLYSHEEP_API_KEY"])
def test_key_with_surrounding_whitespace_is_stripped(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # a key from a mounted secret file keeps its newline; sent as is it breaks every call
    monkeypatch.delenv("AI_ANALYST_API_KEY", raising=False)
    monkeypatch.delenv("HOLYSHEEP_API_KEY", raising=False)
    monkeypatch.setenv(variable, " hs-stripped-key-1234\n")

    key = load_settings(AnalystSettings).gateway_key

    assert key is not None
    assert key.get_secret_value() == "hs-stripped-key-1234"


def test_plain_http_gateway_is_refused_but_loopback_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI_ANALYST_BASE_URL", "http://api.holysheep.ai/v1")
    with pytest.raises(ConfigError, match="AI_ANALYST_BASE_URL must be https://"):
        load_settings(AnalystSettings)

    monkeypatch.setenv("AI_ANALYST_BASE_URL", "http://127.0.0.1:9999/v1")
    assert load_settings(AnalystSettings).base_url == "http://127.0.0.1:9999/v1"
