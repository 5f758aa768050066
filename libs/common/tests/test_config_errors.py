"""Config errors: one line naming the file, field or variable, every problem at once; secrets
stripped; outbound base URLs https-only except to loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict

from riskwatch_common.settings import (
    ConfigError,
    ServiceSettings,
    check_outbound_url,
    load_config_file,
    load_settings,
)


class _Svc(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CFGTEST_")
    http_port: int = 1


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "LOG_", "CFGTEST_")):
            monkeypatch.delenv(name)


def test_duplicate_yaml_key_is_refused_naming_file_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("limits:\n  a: 1\nlimits:\n  a: 2\n")

    with pytest.raises(ConfigError) as err:
        load_config_file(path, "thresholds file")

    text = str(err.value)
    assert text.startswith(f"thresholds file {path}: not valid YAML")
    assert "duplicate key 'limits' (line 3)" in text
    assert "\n" not in text


def test_duplicate_json_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"a": 1, "a": 2}')

    with pytest.raises(ConfigError, match=r"not valid JSON .*duplicate key 'a'"):
        load_config_file(path, "thresholds file")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"a: \xff\n")

    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xff at offset 3\)"):
        load_config_file(path, "thresholds file")


def test_valid_yaml_loads(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("a: {b: 1}\nc: [1, 2]\n")

    assert load_config_file(path, "x") == {"a": {"b": 1}, "c": [1, 2]}


def test_bad_log_level_and_format_are_named_by_their_own_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "x:1")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("LOG_FORMAT", "xml")

    with pytest.raises(ConfigError) as err:
        load_settings(_Svc)

    text = str(err.value)
    assert "LOG_LEVEL is 'LOUD', expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in text
    assert "LOG_FORMAT Input should be 'json' or 'console'" in text
    assert "CFGTEST_LOG" not in text


def test_every_problem_is_reported_together_with_kafka_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("CFGTEST_HTTP_PORT", "many")

    with pytest.raises(ConfigError) as err:
        load_settings(_Svc)

    text = str(err.value)
    assert "KAFKA_BOOTSTRAP_SERVERS is required but not set" in text
    assert "CFGTEST_HTTP_PORT" in text
    assert "LOG_LEVEL" in text


def test_secrets_from_the_environment_are_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "x:1")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "  pass-word-123\n")

    settings = load_settings(_Svc)

    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "pass-word-123"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.example.com/v1", True),
        ("wss://stream.example.com", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080/v1", True),
        ("http://[::1]:80", True),
        ("http://api.example.com", False),
        ("ws://stream.example.com", False),
        ("ftp://example.com", False),
        ("api.example.com", False),
    ],
)
def test_outbound_urls_must_be_https_except_to_loopback(url: str, ok: bool) -> None:
    if ok:
        assert check_outbound_url(url) == url
    else:
        with pytest.raises(ValueError, match="must be"):
            check_outbound_url(url)


def _service(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LOG_"))}
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_analyst_exits_2_with_one_line_naming_every_bad_variable() -> None:
    done = _service(
        "ai_analyst",
        {
            "LOG_LEVEL": "chatty",
            "LOG_FORMAT": "xml",
            "AI_ANALYST_BASE_URL": "http://gateway.example/v1",
            "AI_ANALYST_API_KEY": "sk-test-secret-123456",
        },
    )

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    (line,) = lines
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "LOG_LEVEL", "LOG_FORMAT", "AI_ANALYST_BASE_URL"):
        assert var in line
    assert "AI_ANALYST_LOG_FORMAT" not in line
    assert "Traceback" not in done.stderr


def test_slack_webhook_must_be_https_and_the_error_does_not_quote_it() -> None:
    hook = "http://hooks.slack.com/services/T0/B0/webhook-secret-xyz"
    done = _service(
        "notifier",
        {
            "KAFKA_BOOTSTRAP_SERVERS": "x:1",
            "NOTIFIER_SLACK_WEBHOOK_URL": hook,
            "NOTIFIER_TELEGRAM_API_BASE": "http://api.telegram.org",
        },
    )

    assert done.returncode == 2
    assert "NOTIFIER_SLACK_WEBHOOK_URL must be an https:// URL" in done.stderr
    assert "NOTIFIER_TELEGRAM_API_BASE must be https://" in done.stderr
    assert "webhook-secret-xyz" not in done.stderr
