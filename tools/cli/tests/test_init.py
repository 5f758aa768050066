"""``riskwatch init`` writes files the services load as they are."""

from __future__ import annotations

import stat
from decimal import Decimal
from pathlib import Path

import pytest

from ingestor.accounts import load_group
from risk_processor.config import load_config
from riskwatch_cli.__main__ import main
from riskwatch_cli.doctor import load_env_file


def test_init_from_flags_writes_accounts_keys_thresholds_and_env_the_services_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    live, env = tmp_path / "live", tmp_path / ".env"
    monkeypatch.setenv("BYBIT_MAIN_API_KEY", "k-main-123")
    monkeypatch.setenv("BYBIT_MAIN_API_SECRET", "s-main-456")
    monkeypatch.setenv("BYBIT_SUB_HEDGE_API_KEY", "k-hedge-123")
    monkeypatch.setenv("BYBIT_SUB_HEDGE_API_SECRET", "s-hedge-456")
    monkeypatch.setenv("NOTIFIER_TELEGRAM_BOT_TOKEN", "123:tok")
    monkeypatch.delenv("NOTIFIER_SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("HOLYSHEEP_API_KEY", raising=False)

    code = main(
        ["init", "--no-input", "--dir", str(live), "--env-file", str(env),
         "--account", "main:core", "--account", "sub_hedge:core:mainnet:hedge",
         "--telegram-chat-id", "-100123", "--net-exposure-limit-usd", "7500"]
    )  # fmt: skip

    assert code == 0
    group = load_group(live / "accounts.yaml", "core", env={})
    assert [(a.name, a.position_mode.value) for a in group.accounts] == [
        ("main", "one_way"),
        ("sub_hedge", "hedge"),
    ]
    assert group.accounts[1].credentials.api_secret.get_secret_value() == "s-hedge-456"
    assert load_config(live / "thresholds.yaml").base.net_exposure_usd == Decimal(7500)
    values: dict[str, str] = {}
    load_env_file(env, values)
    assert values["NOTIFIER_TELEGRAM_BOT_TOKEN"] == "123:tok"
    assert values["NOTIFIER_TELEGRAM_CHAT_ID"] == "-100123"
    assert "NOTIFIER_SLACK_WEBHOOK_URL" not in values
    assert Path(values["INGESTOR_ACCOUNTS_FILE"]) == (live / "accounts.yaml").resolve()
    token = values["RISK_PROCESSOR_QUERY_TOKEN"]  # generated: the query API's bearer token
    assert len(token) == 48
    for private in (env, live / "keys" / "main.api_secret"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    printed = capsys.readouterr()
    assert "s-main-456" not in printed.out + printed.err
    assert "123:tok" not in printed.out + printed.err
    assert token not in printed.out + printed.err


def test_init_leaves_existing_files_alone_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = tmp_path / ".env"
    env.write_text("HOLYSHEEP_API_KEY=mine\n")

    code = main(["init", "--no-input", "--dir", str(tmp_path / "live"), "--env-file", str(env),
                 "--account", "main"])  # fmt: skip

    assert code == 1
    assert env.read_text() == "HOLYSHEEP_API_KEY=mine\n"
    assert "--force overwrites" in capsys.readouterr().err


def test_init_rejects_an_unknown_environment_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["init", "--no-input", "--account", "main:core:mainnett"])

    assert "--account 'main:core:mainnett': environment must be one of" in capsys.readouterr().err
