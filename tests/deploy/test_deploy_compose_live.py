"""docker-compose.live.yml over docker-compose.yml: no simulator, your files, your groups.

The two files are merged the way Compose merges them (mappings merged, sequences appended,
volumes and ports unique by their target) and the result checked against the Compose
Specification and against what `riskwatch init` writes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml

HERE = Path(__file__).parent
REPO = HERE.parents[1]
Spec = dict[str, Any]
_UNIQUE_BY_TARGET = ("volumes", "ports")
_REPLACED = ("command", "entrypoint")


def _target(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("target"))
    # Compose interpolates before it splits source:target[:mode]
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(entry)).split(":")[1]


def merge(base: Any, override: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED:
        if key in _UNIQUE_BY_TARGET:
            replaced = {_target(e) for e in override}
            return [e for e in base if _target(e) not in replaced] + override
        return base + override
    return override


@pytest.fixture(scope="module")
def live() -> Spec:
    base = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    override = yaml.safe_load((REPO / "docker-compose.live.yml").read_text())
    return dict(merge(base, override))


def enabled(spec: Spec) -> dict[str, Spec]:
    """Services `docker compose up` starts with no profile selected."""
    return {n: s for n, s in spec["services"].items() if not s.get("profiles")}


@pytest.fixture
def init_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from riskwatch_cli.__main__ import main

    monkeypatch.setenv("BYBIT_MAIN_API_KEY", "live-key-main")
    monkeypatch.setenv("BYBIT_MAIN_API_SECRET", "live-secret-main")
    live = tmp_path / "live"
    args = ["init", "--no-input", "--dir", str(live), "--env-file", str(tmp_path / ".env")]
    assert main([*args, "--account", "main"]) == 0
    return live


def test_merged_live_compose_validates_against_the_compose_specification(live: Spec) -> None:
    schema = json.loads((HERE / "schemas" / "compose-spec.json").read_text())
    errors = [
        f"{e.json_path}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(live)
    ]
    assert not errors, "\n".join(errors)


def test_live_compose_starts_nothing_of_the_simulator(live: Spec) -> None:
    running = enabled(live)
    assert "bybit-sim" not in running
    assert not [n for n in running if n.startswith("ingestor-group-")]
    for name, spec in running.items():
        assert "bybit-sim" not in spec.get("depends_on", {}), name
        for volume in spec.get("volumes", []):
            assert "sim-credentials" not in volume, name
            assert "overlays/dev" not in volume, name
    # the profile brings the simulator back when asked for
    assert live["services"]["bybit-sim"]["profiles"] == ["sim"]


def test_live_ingestors_load_the_accounts_and_keys_riskwatch_init_writes(
    live: Spec, init_dir: Path, kit: SimpleNamespace
) -> None:
    from ingestor.accounts import load_group

    ingestors = {n: s for n, s in enabled(live).items() if n.startswith("ingestor-")}
    assert ingestors
    for name, spec in ingestors.items():
        env = spec["environment"]
        assert name == f"ingestor-{env['INGESTOR_GROUP']}"
        (mount,) = [v for v in spec["volumes"] if ":/etc/riskwatch/live" in v]
        assert mount.startswith("${RISKWATCH_LIVE_DIR:-./live}:")
        target = Path(mount.split(":")[-2])
        accounts = init_dir / Path(env["INGESTOR_ACCOUNTS_FILE"]).relative_to(target)
        group = load_group(accounts, env["INGESTOR_GROUP"], env={})
        (account,) = group.accounts
        assert account.credentials.api_secret.get_secret_value() == "live-secret-main"
        assert spec["healthcheck"] == live["services"]["notifier"]["healthcheck"] | {
            "test": spec["healthcheck"]["test"]
        }
        assert "http://127.0.0.1:8081/healthz" in " ".join(spec["healthcheck"]["test"])
        assert "ingestor" in spec["networks"]["default"]["aliases"]


def test_live_risk_processor_requires_a_real_query_token(live: Spec) -> None:
    # the simulator stack's made-up default must never serve real accounts: `${VAR:?...}`
    # makes compose refuse to start while the token is unset or empty
    token = live["services"]["risk-processor"]["environment"]["RISK_PROCESSOR_QUERY_TOKEN"]
    assert re.fullmatch(r"\$\{RISK_PROCESSOR_QUERY_TOKEN:\?[^}]+\}", token), token


def test_live_risk_processor_reads_the_thresholds_init_writes(live: Spec, init_dir: Path) -> None:
    from risk_processor.config import load_config

    spec = live["services"]["risk-processor"]
    path = Path(spec["environment"]["RISK_PROCESSOR_THRESHOLDS_FILE"])
    (mount,) = [v for v in spec["volumes"] if _target(v) == str(path)]
    assert mount.startswith("${RISKWATCH_LIVE_DIR:-./live}/thresholds.yaml:")
    config = load_config(init_dir / "thresholds.yaml")
    # init without --net-exposure-limit-usd keeps the USD net limit off (opt-in)
    assert config.base.net_exposure_usd is None
    assert config.base.unrealized_loss_usd < 0


def test_init_env_selects_the_live_file_and_names_groups_without_an_ingestor(
    init_dir: Path,
) -> None:
    from riskwatch_cli.doctor import load_env_file
    from riskwatch_cli.init import missing_compose_groups

    values: dict[str, str] = {}
    load_env_file(init_dir.parent / ".env", values)
    files = values["COMPOSE_FILE"].split(":")
    assert files == ["docker-compose.yml", "docker-compose.live.yml"]
    assert all((REPO / f).is_file() for f in files)
    assert values["RISKWATCH_LIVE_DIR"] == str(init_dir.resolve())
    assert missing_compose_groups(["main"]) == []
    (hint,) = missing_compose_groups(["main", "hedgers"])
    assert "ingestor-hedgers:" in hint
    assert "INGESTOR_GROUP: hedgers" in hint


def test_every_yaml_example_loads_in_its_services_own_environment(kit: SimpleNamespace) -> None:
    """A service that reads YAML declares the YAML library itself: `uv run --package
    <member> --no-dev` installs only what the member declares, and loads the example there."""
    import shutil
    import subprocess

    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("uv is not installed: the members' own environments cannot be built")
    examples = {
        "riskwatch-ingestor": (
            "from pathlib import Path; from ingestor.accounts import load_group; "
            "import os; os.environ.update({k: 'x' for k in ("
            "'BYBIT_SUB_HEDGE_API_KEY','BYBIT_SUB_HEDGE_API_SECRET','BYBIT_DEMO_API_KEY',"
            "'BYBIT_DEMO_API_SECRET','BYBIT_TESTNET_API_KEY','BYBIT_TESTNET_API_SECRET')}); "
            "print(len(load_group(Path('services/ingestor/config/accounts.example.yaml'), "
            "'staging').accounts))"
        ),
        "riskwatch-risk-processor": (
            "from pathlib import Path; from risk_processor.config import load_config; "
            "print(load_config(Path('services/risk_processor/config/thresholds.example.yaml'))"
            ".portfolio.net_exposure_usd)"
        ),
        "riskwatch-bybit-sim": (
            "from pathlib import Path; from bybit_sim.scenario import load_scenario; "
            "print(load_scenario(Path('services/bybit_sim/scenarios/sample_portfolio.yaml')).name)"
        ),
    }
    for package, code in examples.items():
        proc = subprocess.run(
            [
                uv,
                "run",
                "--frozen",
                "--isolated",
                "--no-dev",
                "--package",
                package,
                "python",
                "-c",
                code,
            ],
            cwd=kit.REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"{package}:\n{proc.stderr[-2000:]}"
