from __future__ import annotations

import io
import logging

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from riskwatch_common.logs import configure_logging
from riskwatch_common.settings import ConfigError, ServiceSettings, load_settings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_SVC_", frozen=True, extra="ignore")

    accounts_file: str = Field(min_length=1)
    api_token: SecretStr | None = None
    http_port: int = 0


def test_missing_required_setting_names_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("DEMO_SVC_ACCOUNTS_FILE", raising=False)
    with pytest.raises(ConfigError, match="DEMO_SVC_ACCOUNTS_FILE is required"):
        load_settings(DemoSettings)


def test_missing_kafka_bootstrap_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("DEMO_SVC_ACCOUNTS_FILE", "accounts.yaml")
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS is required"):
        load_settings(DemoSettings)


def test_invalid_value_names_the_variable_and_the_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("DEMO_SVC_ACCOUNTS_FILE", "accounts.yaml")
    monkeypatch.setenv("DEMO_SVC_HTTP_PORT", "seventy")
    with pytest.raises(ConfigError, match="DEMO_SVC_HTTP_PORT"):
        load_settings(DemoSettings)


def test_loaded_secret_never_appears_in_log_output(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "123456789:AAfake-token-for-tests-only-xyz"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("DEMO_SVC_ACCOUNTS_FILE", "accounts.yaml")
    monkeypatch.setenv("DEMO_SVC_API_TOKEN", token)
    settings = load_settings(DemoSettings)
    assert settings.api_token is not None
    for fmt in ("json", "console"):
        configure_logging("demo", "DEBUG", fmt)
        stream = io.StringIO()
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        log = logging.getLogger("demo.test")
        log.info("calling https://api.example/bot%s/sendMessage", token)
        log.warning("failed", extra={"url": f"https://api.example/bot{token}/x"})
        try:
            raise RuntimeError(f"boom {token}")
        except RuntimeError:
            log.exception("request failed")
        out = stream.getvalue()
        assert token not in out
        assert out.count("***") >= 3
