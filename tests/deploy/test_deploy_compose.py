"""docker-compose.yml, checked without a container engine: against the Compose
Specification's JSON Schema (vendored in schemas/, see schemas/README.md), against the
settings classes and the ingestor's accounts loader, and for the wiring (health checks,
start order, names)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml

from riskwatch_common.broker import KAFKA_IMAGE

HERE = Path(__file__).resolve().parent
COMPOSE = HERE.parents[1] / "docker-compose.yml"
# the one made-up dev token: the k8s dev overlay's, and the simulator stack's default
DEV_QUERY_TOKEN = (
    (HERE.parents[1] / "deploy/k8s/overlays/dev/dev-query-token.txt").read_text().strip()
)

Spec = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Spec:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def riskwatch_services(compose: Spec, kit: SimpleNamespace) -> dict[str, tuple[str, Spec]]:
    """Compose service name -> (riskwatch service, spec), for images riskwatch/<service>."""
    out = {}
    for name, spec in compose["services"].items():
        m = re.match(r"^riskwatch/([a-z-]+):", spec.get("image", ""))
        if m and m[1] in kit.SERVICES:
            out[name] = (m[1], spec)
    return out


def one_shot(spec: Spec) -> bool:
    return spec.get("restart") == "no"


def host_path(kit: SimpleNamespace, volume: str) -> tuple[Path, str] | None:
    """(repository path, container path) of a bind mount; None for a named volume."""
    source, target = volume.split(":")[:2]
    if not source.startswith("./"):
        return None
    return kit.REPO / source, target


def test_compose_file_validates_against_the_compose_specification(compose: Spec) -> None:
    schema = json.loads((HERE / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_schema_rejects_what_compose_rejects(compose: Spec) -> None:
    """The vendored schema is strict enough to catch a misspelt or mistyped key."""
    schema = json.loads((HERE / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    broken = json.loads(json.dumps(compose))
    broken["services"]["notifier"]["helthcheck"] = broken["services"]["notifier"]["healthcheck"]
    broken["services"]["kafka"]["restart"] = 3
    assert len(list(validator.iter_errors(broken))) == 2


def test_every_service_runs_once_under_its_own_name(compose: Spec, kit: SimpleNamespace) -> None:
    services = riskwatch_services(compose, kit)
    assert {svc for svc, _ in services.values()} == set(kit.SERVICES)
    for name, (svc, spec) in services.items():
        # one name everywhere: image, compose service (a group suffix for ingestors), build
        assert name == svc or (svc == "ingestor" and name.startswith("ingestor-")), name
        assert spec["build"]["args"]["SERVICE"] == svc, name
        assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
        assert spec["build"]["context"] == "."


def test_every_long_running_service_has_a_health_check_and_a_restart_policy(
    compose: Spec, kit: SimpleNamespace
) -> None:
    for name, spec in compose["services"].items():
        if one_shot(spec):
            continue
        assert spec["restart"] in ("unless-stopped", "always", "on-failure"), name
        check = spec["healthcheck"]
        assert not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    for name, (svc, spec) in riskwatch_services(compose, kit).items():
        port = kit.SERVICES[svc].port
        probe = " ".join(spec["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz" in probe, name


def test_start_order_waits_on_health_and_on_topic_creation(
    compose: Spec, kit: SimpleNamespace
) -> None:
    services = compose["services"]
    for name, spec in services.items():
        for dep, cond in spec.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no health check"
            elif condition == "service_completed_successfully":
                assert one_shot(services[dep]), f"{dep} is not a one-shot"
            else:
                pytest.fail(f"{name} -> {dep}: {condition} waits for nothing")
    one_shots = [n for n, s in services.items() if one_shot(s)]
    assert one_shots == ["topic-init"]
    for name, (svc, spec) in riskwatch_services(compose, kit).items():
        if svc in kit.KAFKA_SERVICES:
            assert spec["depends_on"]["topic-init"]["condition"] == (
                "service_completed_successfully"
            ), name
            assert spec["depends_on"]["kafka"]["condition"] == "service_healthy", name
    for name in ("ingestor-group-a", "ingestor-group-b"):
        assert services[name]["depends_on"]["bybit-sim"]["condition"] == "service_healthy"


def test_topic_init_creates_the_registry_topics_on_the_compose_broker(
    compose: Spec, kit: SimpleNamespace
) -> None:
    spec = compose["services"]["topic-init"]
    assert spec["build"]["args"]["SERVICE"] == "cli"
    assert spec["command"][:2] == ["python", "-c"]
    kit.check_python_c(spec["command"][2], calls="ensure_topics")
    assert spec["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_services_reach_apache_kafka_with_idempotent_producers(
    compose: Spec, kit: SimpleNamespace
) -> None:
    kafka = compose["services"]["kafka"]
    # the Kafka version the suite runs on is the one compose ships
    assert kafka["image"] == KAFKA_IMAGE
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", "one KRaft node, no ZooKeeper"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    from riskwatch_common.topics import DEFAULT_PARTITIONS

    assert int(env["KAFKA_NUM_PARTITIONS"]) == DEFAULT_PARTITIONS
    for name, (svc, spec) in riskwatch_services(compose, kit).items():
        if svc in kit.KAFKA_SERVICES:
            assert spec["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
            # Apache Kafka grants producer ids (only the embedded Tansu broker does not)
            assert spec["environment"]["KAFKA_ENABLE_IDEMPOTENCE"] == "true", name


def test_containers_are_read_only_without_capabilities(compose: Spec, kit: SimpleNamespace) -> None:
    for name, (_, spec) in riskwatch_services(compose, kit).items():
        assert spec["read_only"] is True, name
        assert spec["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in spec["security_opt"], name
        # state only on volumes mounted where the image's user may write
        for volume in spec.get("volumes", []):
            mount = host_path(kit, volume)
            if mount is None:
                assert volume.split(":")[1] == "/var/lib/riskwatch", (name, volume)
            else:
                assert volume.endswith(":ro"), (name, volume)


def test_no_secret_value_is_written_into_the_compose_file(
    compose: Spec, kit: SimpleNamespace
) -> None:
    for name, spec in compose["services"].items():
        for var, value in spec.get("environment", {}).items():
            if kit.secret_like(var):
                # only passed through from the shell or .env, under its own name; the query
                # token alone has a default, the made-up dev one (next test)
                allowed = [f"${{{var}}}", f"${{{var}:-}}"]
                if var == "RISK_PROCESSOR_QUERY_TOKEN":
                    allowed.append(f"${{{var}:-{DEV_QUERY_TOKEN}}}")
                assert value in allowed, f"{name} writes {var}"
            assert value is not None, f"{name}: {var} without a value"
        for env_file in spec.get("env_file", []):
            # .env is optional: `docker compose up` works from a fresh clone
            assert env_file == {"path": ".env", "required": False}, name


def test_a_fresh_simulator_stack_gives_the_processor_the_dev_overlays_made_up_token(
    compose: Spec, kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a token in .env the processor stopped at startup: `docker compose up` from a
    # fresh clone did not work.
    from risk_processor.settings import RiskProcessorSettings
    from riskwatch_common.settings import load_settings

    env = compose["services"]["risk-processor"]["environment"]
    assert env["RISK_PROCESSOR_QUERY_TOKEN"] == (
        f"${{RISK_PROCESSOR_QUERY_TOKEN:-{DEV_QUERY_TOKEN}}}"
    )
    assert DEV_QUERY_TOKEN.startswith("dev-")
    assert "not-secret" in DEV_QUERY_TOKEN
    monkeypatch.setenv("RISK_PROCESSOR_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("RISK_PROCESSOR_QUERY_TOKEN", DEV_QUERY_TOKEN)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    settings = load_settings(RiskProcessorSettings)
    assert settings.query_token is not None


def test_environment_names_are_settings_of_the_service(
    compose: Spec, kit: SimpleNamespace, env_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riskwatch_common.settings import load_settings

    checked = set()
    for name, (svc, spec) in riskwatch_services(compose, kit).items():
        known = env_of(svc, skip=False)
        if known is None:
            continue
        # a pass-through (${NAME:-}) with nothing in the shell or .env is empty
        env = {
            k: re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", str(v)) for k, v in spec["environment"].items()
        }
        unknown = set(env) - set(known) - kit.RUNTIME_ENV
        assert not unknown, f"{name} sets {unknown}, which {svc}'s settings do not read"
        required = {n for n, v in known.items() if v.required}
        assert required <= set(env), f"{name} lacks {required - set(env)}"
        for var in known:
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, kit.on_this_machine(value))
        load_settings(kit.settings_class(kit.SERVICES[svc]))
        checked.add(svc)
    missing = set(kit.SERVICES) - checked
    if missing:
        pytest.skip(f"settings of {sorted(missing)} do not exist yet; the others passed")


def test_the_simulator_runs_a_scenario_that_is_mounted(compose: Spec, kit: SimpleNamespace) -> None:
    spec = compose["services"]["bybit-sim"]
    scenario = Path(spec["environment"]["BYBIT_SIM_SCENARIO"])
    mounts = [m for m in (host_path(kit, v) for v in spec["volumes"]) if m]
    (source,) = [src for src, target in mounts if scenario.is_relative_to(target)]
    target = next(t for s, t in mounts if s == source)
    path = source / scenario.relative_to(target)
    assert path.is_file(), path
    # the image carries the same directory, for Kubernetes (deploy/Dockerfile)
    assert Path(target) == kit.SCENARIOS_IN_IMAGE
    assert source == kit.REPO / "services/bybit_sim/scenarios"
    scenario_mod = pytest.importorskip("bybit_sim.scenario")
    if hasattr(scenario_mod, "load_scenario"):
        scenario_mod.load_scenario(path)


def test_each_ingestor_group_streams_its_own_simulator_accounts(
    compose: Spec, kit: SimpleNamespace, tmp_path: Path
) -> None:
    accounts_mod = pytest.importorskip("ingestor.accounts")
    sim = compose["services"]["bybit-sim"]
    sim_scenario = yaml.safe_load(
        (kit.REPO / "services/bybit_sim/scenarios")
        .joinpath(Path(sim["environment"]["BYBIT_SIM_SCENARIO"]).name)
        .read_text()
    )
    keys = {a["name"]: a for a in sim_scenario["accounts"]}
    exchange_port = kit.SERVICES["bybit-sim"].extra_ports[-1]  # after the metrics port
    seen: dict[str, str] = {}
    groups = set()
    for name, (svc, spec) in riskwatch_services(compose, kit).items():
        if svc != "ingestor":
            continue
        env = spec["environment"]
        group = env["INGESTOR_GROUP"]
        assert name == f"ingestor-{group}"
        groups.add(group)
        mounts = dict(m for m in (host_path(kit, v) for v in spec["volumes"]) if m)
        by_target = {Path(t): s for s, t in mounts.items()}
        accounts_file = by_target[Path(env["INGESTOR_ACCOUNTS_FILE"])]
        text = accounts_file.read_text()
        # the group's key files, where the accounts file says they are
        for target, source in by_target.items():
            if source.is_dir():
                text = text.replace(f"{target}/", f"{source}/")
        local = tmp_path / f"{group}.yaml"
        local.write_text(text)
        config = accounts_mod.load_group(local, group, env={})
        for account in config.accounts:
            assert account.name not in seen, f"{account.name} in {seen[account.name]} and {name}"
            seen[account.name] = name
            sim_account = keys[account.name]
            assert account.credentials.api_key.get_secret_value() == sim_account["api_key"]
            assert account.credentials.api_secret.get_secret_value() == sim_account["api_secret"]
            for url in (
                account.endpoints.rest_url,
                account.endpoints.ws_private_url,
                account.endpoints.ws_public_url,
            ):
                assert re.match(rf"^(http|ws)://bybit-sim:{exchange_port}(/|$)", url), url
    all_groups = {a["group"] for a in yaml.safe_load(accounts_file.read_text())["accounts"]}
    assert groups == all_groups, "every account group has exactly one ingestor"


def test_every_container_has_cpu_and_memory_limits() -> None:
    for path in (COMPOSE, COMPOSE.with_name("docker-compose.live.yml")):
        for name, spec in yaml.safe_load(path.read_text())["services"].items():
            if "image" not in spec:
                continue  # an override of a service docker-compose.yml defines
            limits = spec.get("deploy", {}).get("resources", {}).get("limits", {})
            assert float(limits.get("cpus", 0)) > 0, f"{path.name} {name}: no CPU limit"
            assert limits.get("memory"), f"{path.name} {name}: no memory limit"
