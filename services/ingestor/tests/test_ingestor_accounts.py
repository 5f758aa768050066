"""The accounts file: validation errors name the account and the field; credentials by ref."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ingestor.accounts import AccountType, Environment, PositionMode, load_group
from riskwatch_common.logs import redact
from riskwatch_common.settings import ConfigError

CONFIG = Path(__file__).resolve().parents[1] / "config"
ENV = {"K1": "key-number-one", "S1": "secret-number-one", "K2": "key-two-xx", "S2": "secret-two-x"}


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "accounts.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def account(name: str = "main", group: str = "g", **fields: str) -> str:
    lines = {
        "name": name,
        "group": group,
        "account_type": "unified",
        "position_mode": "one_way",
        "environment": "mainnet",
        **fields,
    }
    body = "".join(f"    {k}: {v}\n" for k, v in lines.items())
    return f"  -\n{body}    credentials:\n      api_key_env: K1\n      api_secret_env: S1\n"


def test_valid_group_is_loaded_with_known_endpoints_and_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n" + account() + account("other", group="h"))

    group = load_group(path, "g", env=ENV)

    (acc,) = group.accounts
    assert acc.name == "main"
    assert acc.account_type is AccountType.UNIFIED
    assert acc.position_mode is PositionMode.ONE_WAY
    assert acc.environment is Environment.MAINNET
    assert acc.endpoints.rest_url == "https://api.bybit.com"
    assert acc.endpoints.ws_private_url == "wss://stream.bybit.com/v5/private"
    assert group.market.ws_public_url == "wss://stream.bybit.com/v5/public/linear"
    assert acc.credentials.api_secret.get_secret_value() == "secret-number-one"
    assert acc.wallet_account_type == "UNIFIED"
    # loaded secrets are registered with the log redactor at once
    assert redact("sig secret-number-one key-number-one") == "sig *** ***"


def test_errors_name_the_account_and_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "accounts:\n"
        + account(account_type="classic")
        + account("sub", position_mode="twoway", environment="moon"),
    )

    with pytest.raises(ConfigError) as err:
        load_group(path, "g", env=ENV)

    text = str(err.value)
    assert "account 'main' (accounts[0]): field 'account_type' is 'classic'" in text
    assert "account 'sub' (accounts[1]): field 'position_mode' is 'twoway'" in text
    assert "account 'sub' (accounts[1]): field 'environment' is 'moon'" in text


def test_missing_env_variable_names_account_field_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n" + account())

    with pytest.raises(ConfigError) as err:
        load_group(path, "g", env={"K1": "key-number-one"})

    assert "account 'main' (accounts[0]): field 'credentials.api_secret_env'" in str(err.value)
    assert "S1" in str(err.value)


def test_secret_values_in_the_file_are_refused(tmp_path: Path) -> None:
    body = """\
    accounts:
      - name: main
        group: g
        account_type: unified
        position_mode: one_way
        environment: mainnet
        api_secret: hunter2hunter2
        credentials: {api_key_env: K1, api_secret_env: S1}
    """
    with pytest.raises(ConfigError) as err:
        load_group(write(tmp_path, body), "g", env=ENV)
    assert "account 'main' (accounts[0]): field 'api_secret' holds a secret value" in str(err.value)


def test_credentials_from_files_relative_to_the_accounts_file(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("file-key-123\n")
    (tmp_path / "s").write_text("file-secret-123\n")
    body = """\
    accounts:
      - name: main
        group: g
        account_type: standard
        position_mode: hedge
        environment: testnet
        credentials: {api_key_file: k, api_secret_file: s}
    """
    (acc,) = load_group(write(tmp_path, body), "g", env={}).accounts

    assert acc.credentials.api_key.get_secret_value() == "file-key-123"
    assert acc.endpoints.rest_url == "https://api-testnet.bybit.com"
    assert acc.wallet_account_type == "CONTRACT"


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    body = """\
    accounts:
      - name: main
        group: g
        account_type: unified
        position_mode: one_way
        environment: mainnet
        credentials: {api_key_file: /nonexistent/k, api_secret_env: S1}
    """
    with pytest.raises(
        ConfigError, match=r"account 'main'.*credentials.api_key_file.*/nonexistent/k"
    ):
        load_group(write(tmp_path, body), "g", env=ENV)


def test_simulator_needs_urls_and_takes_the_top_level_block(tmp_path: Path) -> None:
    no_urls = "accounts:\n" + account(environment="simulator")
    with pytest.raises(ConfigError, match=r"account 'main'.*field 'urls.rest_url' is required"):
        load_group(write(tmp_path, no_urls), "g", env=ENV)

    with_block = (
        "simulator:\n  rest_url: http://127.0.0.1:1\n  ws_private_url: ws://127.0.0.1:1/v5/private\n"
        "  ws_public_url: ws://127.0.0.1:1/v5/public/linear\n" + no_urls
    )
    (acc,) = load_group(write(tmp_path, with_block), "g", env=ENV).accounts
    assert acc.endpoints.market_rest_url == "http://127.0.0.1:1"


def test_demo_reads_market_data_from_mainnet_and_may_share_a_group_with_it(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n" + account() + account("d", environment="demo"))

    group = load_group(path, "g", env=ENV)

    demo = group.accounts[1]
    assert demo.endpoints.ws_private_url == "wss://stream-demo.bybit.com/v5/private"
    assert demo.endpoints.ws_public_url == "wss://stream.bybit.com/v5/public/linear"


def test_group_mixing_market_data_sources_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n" + account() + account("t", environment="testnet"))

    with pytest.raises(ConfigError, match=r"account 't'.*field 'environment'.*one market-data"):
        load_group(path, "g", env=ENV)


def test_unknown_group_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n" + account())
    with pytest.raises(ConfigError, match=r"group 'nope' has no accounts \(groups: g\)"):
        load_group(path, "nope", env=ENV)


def test_duplicate_names_and_unknown_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n" + account() + account(colour="red"))
    with pytest.raises(ConfigError) as err:
        load_group(path, "g", env=ENV)
    assert "field 'colour' is not a known field" in str(err.value)


def test_shipped_sim_config_matches_the_simulator_sample_keys() -> None:
    env = {}
    for line in (CONFIG / "sim.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value

    group = load_group(CONFIG / "accounts.sim.yaml", "sim", env=env)

    assert [a.name for a in group.accounts] == ["main", "sub_trading", "sub_hedge"]
    assert group.accounts[0].credentials.api_key.get_secret_value() == "sim-main-key"
    assert group.market.ws_public_url == "ws://127.0.0.1:8090/v5/public/linear"


def test_shipped_example_config_is_valid(tmp_path: Path) -> None:
    env = {
        "BYBIT_SUB_HEDGE_API_KEY": "k" * 8,
        "BYBIT_SUB_HEDGE_API_SECRET": "s" * 8,
        "BYBIT_DEMO_API_KEY": "d" * 8,
        "BYBIT_DEMO_API_SECRET": "e" * 8,
        "BYBIT_TESTNET_API_KEY": "t" * 8,
        "BYBIT_TESTNET_API_SECRET": "u" * 8,
    }
    staging = load_group(CONFIG / "accounts.example.yaml", "staging", env=env)
    assert staging.accounts[0].environment is Environment.TESTNET
    # the prod group reads mounted files that do not exist here; the error names them
    with pytest.raises(ConfigError, match=r"account 'main'.*api_key_file.*/run/secrets"):
        load_group(CONFIG / "accounts.example.yaml", "prod", env=env)


def test_groups_sharing_an_egress_ip_split_bybits_per_ip_budgets(tmp_path: Path) -> None:
    from ingestor.app import ip_budgets
    from ingestor.settings import IngestorSettings

    body = (
        "accounts:\n"
        + account("a1", group="a")
        + account("b1", group="b")
        + account("c1", group="c")
    )
    path = write(tmp_path, body + "egress:\n  c: nat-eu-2\n")
    settings = IngestorSettings(accounts_file=path, group="a", kafka={"bootstrap_servers": "k:1"})

    a, c = load_group(path, "a", env=ENV), load_group(path, "c", env=ENV)

    assert (a.egress_peers, c.egress_peers) == (2, 1)
    assert ip_budgets(settings, a) == (250, 225)  # a and b share 500 REST / 450 connects
    assert ip_budgets(settings, c) == (500, 450)  # c leaves through its own IP
    explicit = settings.model_copy(update={"rest_ip_requests": 100, "ws_connects_per_window": 50})
    assert ip_budgets(explicit, a) == (100, 50)


def test_egress_naming_an_unknown_group_is_an_error_naming_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n" + account(group="a") + "egress:\n  typo: nat-1\n")

    with pytest.raises(ConfigError, match=r"egress.*typo.*is not a group of this file \(a\)"):
        load_group(path, "a", env=ENV)


def test_second_top_level_accounts_key_is_refused_not_silently_replacing_the_first(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "accounts:\n" + account() + "accounts:\n" + account("other"))

    with pytest.raises(ConfigError) as err:
        load_group(path, "g", env=ENV)

    assert str(path) in str(err.value)
    assert "duplicate key 'accounts'" in str(err.value)
    assert "\n" not in str(err.value)


def test_duplicate_field_inside_an_account_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n" + account(group="g\n    group: h"))

    with pytest.raises(ConfigError, match="duplicate key 'group'"):
        load_group(path, "g", env=ENV)


@pytest.mark.parametrize("name", ["portfolio", "Portfolio", "PORTFOLIO"])
def test_reserved_account_name_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "accounts:\n" + account(name))

    with pytest.raises(ConfigError) as err:
        load_group(path, "g", env=ENV)

    assert f"account '{name}' (accounts[0]): field 'name' is reserved" in str(err.value)


def test_non_utf8_accounts_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_bytes(b"accounts:\n  - name: caf\xe9\n")

    with pytest.raises(ConfigError, match=r"accounts file .*accounts.yaml: not UTF-8 text"):
        load_group(path, "g", env=ENV)


def test_plain_http_bybit_url_is_refused_except_to_loopback(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "accounts:\n"
        + account(urls="{rest_url: 'http://api.bybit.com'}")
        + account("local", urls="{rest_url: 'http://127.0.0.1:9000'}"),
    )

    with pytest.raises(ConfigError) as err:
        load_group(path, "g", env=ENV)

    assert "account 'main' (accounts[0]): field 'urls.rest_url' must be https://" in str(err.value)
    assert "'local'" not in str(err.value)


def test_secrets_from_env_and_files_are_stripped(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("  secret-from-file\n")
    path = write(
        tmp_path,
        "accounts:\n" + account().replace("api_secret_env: S1", "api_secret_file: secret.txt"),
    )

    group = load_group(path, "g", env={"K1": "key-with-newline\n"})

    creds = group.accounts[0].credentials
    assert creds.api_key.get_secret_value() == "key-with-newline"
    assert creds.api_secret.get_secret_value() == "secret-from-file"
