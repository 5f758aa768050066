"""The Kubernetes overlays: rendered with ``kubectl kustomize``, every object validated
offline against the Kubernetes OpenAPI schemas (the ``kubernetes-validate`` package ships
them), then checked against the code and docs/developing.md."""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from riskwatch_common.broker import KAFKA_IMAGE

# the oldest Kubernetes we claim (docs/deployment.md) and the newest the schemas cover
OLDEST_KUBERNETES = "1.29.0"

Obj = dict[str, Any]


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in by_kind(objs, kind) if o["metadata"]["name"] == name]
    return found


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def app_name(obj: Obj) -> str:
    return str(obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"])


def service_workloads(objs: list[Obj], service: str) -> list[Obj]:
    return [w for w in workloads(objs) if app_name(w) == service]


def pod(w: Obj) -> Obj:
    return dict(w["spec"]["template"]["spec"])


def all_containers(w: Obj) -> list[Obj]:
    spec = pod(w)
    return [*spec.get("initContainers", []), *spec["containers"]]


def main_container(w: Obj) -> Obj:
    (c,) = [c for c in pod(w)["containers"] if c["name"] == app_name(w)]
    return dict(c)


def container_env(objs: list[Obj], c: Obj) -> dict[str, Any]:
    """Name -> value (a string, or the valueFrom mapping) as the container sees it."""
    env: dict[str, Any] = {}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(named(objs, "ConfigMap", ref).get("data", {}))
    for e in c.get("env", []):
        env[e["name"]] = e.get("value", e.get("valueFrom"))
    return env


def image_repo(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


# ---------------------------------------------------------------------------------------------


def test_base_alone_renders(kit: SimpleNamespace) -> None:
    objs = kit.render(kit.K8S / "base")
    assert {app_name(w) for w in workloads(objs)} == {"risk-processor", "ai-analyst", "notifier"}


def test_every_object_validates_against_the_kubernetes_schemas(
    overlay: tuple[str, list[Obj]],
) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate (offline Kubernetes schemas) is not installed",
    )
    name, objs = overlay
    problems = []
    for version in (OLDEST_KUBERNETES, kv.latest_version()):
        for obj in objs:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as exc:
                where = f"{obj['kind']}/{obj['metadata']['name']}"
                problems.append(f"{name} {version} {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_overlays_deploy_every_service_they_should(rendered: Any) -> None:
    assert {app_name(w) for w in workloads(rendered("dev"))} == {
        "ingestor",
        "risk-processor",
        "ai-analyst",
        "notifier",
        "bybit-sim",
        "kafka",
    }
    # prod: real Bybit and an external Kafka cluster
    assert {app_name(w) for w in workloads(rendered("prod"))} == {
        "ingestor",
        "risk-processor",
        "ai-analyst",
        "notifier",
    }


def test_every_pod_meets_the_restricted_pod_security_standard(
    overlay: tuple[str, list[Obj]],
) -> None:
    name, objs = overlay
    for ns in by_kind(objs, "Namespace"):
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for w in workloads(objs):
        spec, where = pod(w), f"{name} {w['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for c in all_containers(w):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "add" not in sc["capabilities"], (where, c["name"])
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) >= {"cpu", "memory"}, (where, c["name"], kind)


def test_service_containers_are_read_only_with_probes_and_scrape_annotations(
    overlay: tuple[str, list[Obj]], service: Any
) -> None:
    name, objs = overlay
    found = service_workloads(objs, service.name)
    if not found:
        pytest.skip(f"{service.name} is not part of the {name} overlay")
    for w in found:
        where = f"{name} {w['metadata']['name']}"
        spec = pod(w)
        # Service links would inject <SERVICE>_PORT=tcp://..., inside the settings' prefixes
        assert spec["enableServiceLinks"] is False, where
        for c in all_containers(w):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (where, c["name"])
        main = main_container(w)
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert ports["http"] == service.port, where
        if service.extra_ports:
            assert sorted(set(ports.values()) - {service.port}) == sorted(service.extra_ports)
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, where
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, where
        assert main["startupProbe"]["httpGet"]["path"] == "/healthz", where
        # /metrics on a port of its own: Prometheus is let in there, not to the API
        annotations = w["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(ports["metrics"]),
            "prometheus.io/path": "/metrics",
        }, where
        env = container_env(objs, main)
        assert env[f"{service.env_prefix}HTTP_HOST"] == "0.0.0.0", where
        assert env[f"{service.env_prefix}HTTP_PORT"] == str(service.port), where
        assert env[f"{service.env_prefix}METRICS_PORT"] == str(ports["metrics"]), where
        if service.name == "bybit-sim":
            assert env["BYBIT_SIM_HOST"] == "0.0.0.0", where
            assert env["BYBIT_SIM_PORT"] == str(ports["exchange"]), where


def test_images_objects_and_containers_carry_the_service_name(
    overlay: tuple[str, list[Obj]], service: Any
) -> None:
    name, objs = overlay
    found = service_workloads(objs, service.name)
    if not found:
        pytest.skip(f"{service.name} is not part of the {name} overlay")
    for w in found:
        object_name = w["metadata"]["name"]
        if service.name == "ingestor":
            group = container_env(objs, main_container(w))["INGESTOR_GROUP"]
            assert object_name == f"ingestor-{group}"
        else:
            assert object_name == service.name
        assert main_container(w)["name"] == service.name
        for c in all_containers(w):
            assert image_repo(c["image"]).rsplit("/", 1)[-1] == service.name, c["image"]
            assert ":" in c["image"].rsplit("/", 1)[-1], f"{c['image']} has no tag"
        assert w["metadata"]["labels"]["app.kubernetes.io/part-of"] == "riskwatch"


def test_every_service_selects_pods_and_names_their_ports(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    for svc in by_kind(objs, "Service"):
        selector = svc["spec"]["selector"]
        selected = [
            w
            for w in workloads(objs)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"{name} Service {svc['metadata']['name']} selects {selected}"
        (w,) = selected
        assert selector.items() <= w["spec"]["selector"]["matchLabels"].items()
        port_names = {p["name"] for c in pod(w)["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in port_names, f"{svc['metadata']['name']}: {p}"
    for w in by_kind(objs, "StatefulSet"):
        assert w["spec"]["serviceName"] in {s["metadata"]["name"] for s in by_kind(objs, "Service")}


def test_config_maps_and_secrets_referenced_exist_or_are_documented(
    overlay: tuple[str, list[Obj]], kit: SimpleNamespace
) -> None:
    name, objs = overlay
    config_maps = {o["metadata"]["name"] for o in by_kind(objs, "ConfigMap")}
    secrets = {o["metadata"]["name"] for o in by_kind(objs, "Secret")}
    claims = {o["metadata"]["name"] for o in by_kind(objs, "PersistentVolumeClaim")}
    external: set[str] = set()
    for w in workloads(objs):
        for c in all_containers(w):
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    assert ref.get("optional") is True or name == "prod", (name, ref)
                    external.add(ref["name"])
        for v in pod(w).get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                assert name == "prod", f"dev mounts a Secret it does not create: {v}"
                external.add(v["secret"]["secretName"])
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
    # a Secret made outside the repository is named in the deployment guide
    guide = (kit.REPO / "docs" / "deployment.md").read_text()
    for secret in external:
        assert re.sub(r"-group-[\w-]+$", "-<group>", secret) in guide, secret


def test_no_secret_value_is_written_into_a_manifest(
    overlay: tuple[str, list[Obj]], kit: SimpleNamespace
) -> None:
    name, objs = overlay
    for cm in by_kind(objs, "ConfigMap"):
        for key in cm.get("data", {}):
            assert not kit.secret_like(key), f"{cm['metadata']['name']}: {key} is a secret"
    for w in workloads(objs):
        for c in all_containers(w):
            for e in c.get("env", []):
                if kit.secret_like(e["name"]):
                    assert "secretKeyRef" in e.get("valueFrom", {}), (w["metadata"]["name"], e)
    if name == "prod":
        assert not by_kind(objs, "Secret"), "prod Secrets are created outside the repository"


def sim_scenario(kit: SimpleNamespace, objs: list[Obj]) -> dict[str, Any]:
    """The scenario the dev simulator runs (shipped in its image from the repository)."""
    (sim,) = service_workloads(objs, "bybit-sim")
    in_image = Path(container_env(objs, main_container(sim))["BYBIT_SIM_SCENARIO"])
    path = kit.REPO / "services/bybit_sim/scenarios" / in_image.relative_to(kit.SCENARIOS_IN_IMAGE)
    return dict(yaml.safe_load(path.read_text()))


def test_dev_secrets_hold_only_the_simulators_made_up_keys(
    rendered: Any, kit: SimpleNamespace
) -> None:
    objs = rendered("dev")
    scenario = sim_scenario(kit, objs)
    sim_keys = {
        f"{a['name']}.{kind}": a[kind]
        for a in scenario["accounts"]
        for kind in ("api_key", "api_secret")
    }
    # and the query API's token, a made-up value of the dev overlay
    made_up = {"token": (kit.REPO / "deploy/k8s/overlays/dev/dev-query-token.txt").read_text()}
    secrets = by_kind(objs, "Secret")
    assert secrets
    for secret in secrets:
        for key, value in secret["data"].items():
            expected = {**sim_keys, **made_up}[key]
            assert base64.b64decode(value).decode() == expected, (secret["metadata"], key)


def resolved_env(objs: list[Obj], c: Obj) -> dict[str, str]:
    """The container's environment as the kubelet would build it; a Secret made outside
    the repository stands as a placeholder, an absent optional one leaves the name unset."""
    secrets = {o["metadata"]["name"]: o for o in by_kind(objs, "Secret")}
    out = {}
    for k, v in container_env(objs, c).items():
        if isinstance(v, str):
            out[k] = v
        elif "fieldRef" in v:
            out[k] = "pod-0"
        elif "secretKeyRef" in v:
            ref = v["secretKeyRef"]
            if ref["name"] in secrets:
                out[k] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
            elif not ref.get("optional"):
                out[k] = "from-an-external-secret"
    return out


def test_service_settings_load_from_the_rendered_environment(
    overlay: tuple[str, list[Obj]],
    service: Any,
    env_of: Any,
    kit: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from riskwatch_common.settings import load_settings

    name, objs = overlay
    found = service_workloads(objs, service.name)
    if not found:
        pytest.skip(f"{service.name} is not part of the {name} overlay")
    known = env_of(service.name)
    cls = kit.settings_class(service)
    for w in found:
        for c in all_containers(w):
            env = resolved_env(objs, c)
            unknown = set(env) - set(known) - kit.RUNTIME_ENV
            assert not unknown, f"{name} {w['metadata']['name']}/{c['name']} sets {unknown}"
            if c["name"] != service.name:
                continue
            missing = {n for n, v in known.items() if v.required} - set(env)
            assert not missing, f"{name} {w['metadata']['name']} lacks {missing}"
            for var in known:
                monkeypatch.delenv(var, raising=False)
            for var, value in env.items():
                monkeypatch.setenv(var, kit.on_this_machine(value))
            load_settings(cls)


@dataclass
class IngestorPod:
    group: str
    config: Any  # the GroupConfig the pod loads
    accounts_text: str
    secret_name: str


def ingestor_pod(objs: list[Obj], w: Obj, files: Path) -> IngestorPod:
    """What one ingestor Deployment's pod reads: its accounts file from the ConfigMap and
    its group's keys from the Secret (a placeholder when the Secret is made outside)."""
    accounts_mod = pytest.importorskip("ingestor.accounts")
    secrets = {o["metadata"]["name"]: o for o in by_kind(objs, "Secret")}
    main = main_container(w)
    env = container_env(objs, main)
    group = env["INGESTOR_GROUP"]
    volumes = {v["name"]: v for v in pod(w)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    accounts_path = Path(env["INGESTOR_ACCOUNTS_FILE"])
    accounts_volume = volumes[mounts[str(accounts_path.parent)]]
    cm = named(objs, "ConfigMap", accounts_volume["configMap"]["name"])
    text = cm["data"][accounts_path.name]
    (cred_mount,) = [p for p, v in mounts.items() if "secret" in volumes[v]]
    secret_name = volumes[mounts[cred_mount]]["secret"]["secretName"]
    files.mkdir(parents=True)
    local = files / accounts_path.name
    local.write_text(text.replace(cred_mount + "/", f"{files}/"))
    for account in yaml.safe_load(text)["accounts"]:
        if account["group"] != group:
            continue
        for ref in account["credentials"].values():
            key = Path(ref).name
            value = (
                base64.b64decode(secrets[secret_name]["data"][key]).decode()
                if secret_name in secrets
                else "from-an-external-secret"
            )
            (files / key).write_text(value)
    config = accounts_mod.load_group(local, group, env={})
    return IngestorPod(group, config, text, secret_name)


def test_one_ingestor_per_account_group_streams_each_account_once(
    overlay: tuple[str, list[Obj]], kit: SimpleNamespace, tmp_path: Path
) -> None:
    name, objs = overlay
    groups: dict[str, Any] = {}
    accounts_docs = set()
    for w in service_workloads(objs, "ingestor"):
        where = f"{name} {w['metadata']['name']}"
        assert w["spec"]["replicas"] == 1, where
        assert w["spec"]["strategy"]["type"] == "Recreate", where
        seen = ingestor_pod(objs, w, tmp_path / w["metadata"]["name"])
        assert seen.group not in groups, f"two ingestors for {seen.group}"
        accounts_docs.add(seen.accounts_text)
        # the group's credentials, from its own Secret, as files
        secret = re.sub(r"-[a-z0-9]{10}$", "", seen.secret_name)
        assert secret == f"bybit-credentials-{seen.group}", where
        groups[seen.group] = seen.config
    assert len(accounts_docs) == 1, "every group reads the same accounts file"
    doc = yaml.safe_load(accounts_docs.pop())
    assert set(groups) == {a["group"] for a in doc["accounts"]}, "a group without an ingestor"
    for group, config in groups.items():
        assert {a.name for a in config.accounts} == {
            a["name"] for a in doc["accounts"] if a["group"] == group
        }
    if name == "dev":
        scenario = {a["name"]: a for a in sim_scenario(kit, objs)["accounts"]}
        sim_service = named(objs, "Service", "bybit-sim")
        exchange_port = {p["name"]: p["port"] for p in sim_service["spec"]["ports"]}["exchange"]
        for config in groups.values():
            for account in config.accounts:
                sim = scenario[account.name]
                assert account.credentials.api_key.get_secret_value() == sim["api_key"]
                assert account.credentials.api_secret.get_secret_value() == sim["api_secret"]
                assert account.position_mode.value == sim.get("position_mode", "one_way")
                for url in (account.endpoints.rest_url, account.endpoints.ws_private_url):
                    assert re.match(rf"^(http|ws)://bybit-sim:{exchange_port}(/|$)", url), url
    else:
        for config in groups.values():
            for account in config.accounts:
                assert account.environment.value == "mainnet", account.name


def test_risk_processor_scales_within_the_partition_count_with_its_store(
    overlay: tuple[str, list[Obj]],
) -> None:
    from riskwatch_common.topics import ACCOUNT_EVENTS, MARK_PRICES, RISK_LIMITS

    name, objs = overlay
    (w,) = service_workloads(objs, "risk-processor")
    assert w["kind"] == "StatefulSet"
    partitions = min(t.partitions for t in (ACCOUNT_EVENTS, MARK_PRICES, RISK_LIMITS))
    # a worker beyond the partition count would get no partition
    assert 1 <= w["spec"]["replicas"] <= partitions
    main = main_container(w)
    env = container_env(objs, main)
    data = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}["data"]
    assert env["RISK_PROCESSOR_DATA_DIR"] == data
    pod_volumes = {v["name"] for v in pod(w)["volumes"]}
    claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
    if name == "dev":
        assert env["RISK_PROCESSOR_STORE"] == "memory://"
        assert "data" in pod_volumes
    else:
        assert env["RISK_PROCESSOR_STORE"].startswith("rocksdb://")
        assert "data" in claims
        assert "data" not in pod_volumes
        assert w["spec"]["replicas"] > 1
        # with more than one worker, a standby keeps each table warm for a fail-over
        assert int(env["RISK_PROCESSOR_TABLE_STANDBY_REPLICAS"]) >= 1


def test_kafka_clients_get_settings_the_client_library_accepts(
    overlay: tuple[str, list[Obj]],
) -> None:
    from riskwatch_common.kafka import Producer
    from riskwatch_common.settings import KafkaSettings

    name, objs = overlay
    shared = named(objs, "ConfigMap", "riskwatch-kafka")["data"]
    fields = {k.removeprefix("KAFKA_").lower(): v for k, v in shared.items() if k[:6] == "KAFKA_"}
    if fields.get("sasl_mechanism"):
        fields["sasl_password"] = "from-an-external-secret"
    settings = KafkaSettings(**fields)

    async def build() -> None:
        Producer(settings, service="deploy-test")

    asyncio.run(build())
    if name == "dev":
        # the dev broker is Apache Kafka, which grants producer ids: idempotence stays on
        (kafka,) = [w for w in workloads(objs) if app_name(w) == "kafka"]
        # the Kafka version the suite runs on is the one the dev overlay ships
        assert main_container(kafka)["image"] == KAFKA_IMAGE
        assert settings.enable_idempotence is True
        advertised = container_env(objs, main_container(kafka))["KAFKA_ADVERTISED_LISTENERS"]
        assert f"PLAINTEXT://{settings.bootstrap_servers}" in advertised.split(",")


def test_kafka_clients_create_the_registry_topics_before_they_start(
    overlay: tuple[str, list[Obj]], kit: SimpleNamespace
) -> None:
    name, objs = overlay
    for w in workloads(objs):
        if app_name(w) not in kit.KAFKA_SERVICES:
            continue
        (init,) = pod(w)["initContainers"]
        assert init["name"] == "create-topics"
        assert init["image"] == main_container(w)["image"]
        assert init["command"][:2] == ["python", "-c"]
        kit.check_python_c(init["command"][2], calls="ensure_topics")
        kafka_env = [
            {k: v for k, v in container_env(objs, c).items() if k[:6] == "KAFKA_"}
            for c in (init, main_container(w))
        ]
        assert kafka_env[0] == kafka_env[1], f"{name} {w['metadata']['name']}"


def ingestor_budgets(
    objs: list[Obj], kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, tuple[float, float]]:
    """Group -> (REST requests per 5 s, new WebSockets per 5 min) each ingestor allows itself."""
    from ingestor.app import ip_budgets
    from riskwatch_common.settings import load_settings

    cls = kit.settings_class(kit.SERVICES["ingestor"])
    known = kit.settings_env(cls)
    out = {}
    for w in service_workloads(objs, "ingestor"):
        for var in known:
            monkeypatch.delenv(var, raising=False)
        for var, value in resolved_env(objs, main_container(w)).items():
            monkeypatch.setenv(var, value)
        s = load_settings(cls)
        seen = ingestor_pod(objs, w, tmp_path / w["metadata"]["name"])
        rest, ws = ip_budgets(s, seen.config)
        out[seen.group] = (rest * 5.0 / s.rest_ip_window_s, ws * 300.0 / s.ws_connect_window_s)
    return out


def test_prod_ingestors_share_bybits_per_ip_limits(
    rendered: Any, kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Bybit allows 600 REST calls per 5 s and 500 new WebSockets per 5 minutes per IP;
    the groups leave through one egress, so their budgets add up below that."""
    budgets = ingestor_budgets(rendered("prod"), kit, monkeypatch, tmp_path)
    assert len(budgets) == 2
    assert sum(rest for rest, _ in budgets.values()) <= 600
    assert sum(ws for _, ws in budgets.values()) <= 500


def locked_closure(lock: dict[str, Any], root: str) -> set[str]:
    """Every package ``root`` installs according to uv.lock, extras included."""
    packages = {p["name"]: p for p in lock["package"]}
    seen: set[str] = set()
    stack = [root]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for dep in packages[name].get("dependencies", []):
            stack.append(dep["name"])
            for extra in dep.get("extra", []):
                optional = packages[dep["name"]].get("optional-dependencies", {})
                stack.extend(d["name"] for d in optional.get(extra, []))
    return seen


def test_the_prod_store_has_its_driver_in_the_image(rendered: Any, kit: SimpleNamespace) -> None:
    import tomllib

    objs = rendered("prod")
    (w,) = service_workloads(objs, "risk-processor")
    assert container_env(objs, main_container(w))["RISK_PROCESSOR_STORE"].startswith("rocksdb://")
    lock = tomllib.loads((kit.REPO / "uv.lock").read_text())
    assert "rocksdict" in locked_closure(lock, "riskwatch-risk-processor")


def test_single_process_services_never_run_twice(overlay: tuple[str, list[Obj]]) -> None:
    """The AI budget is per process and the notifier's dedup memory is in the process: a
    second replica, or an old pod beside a new one during a rollout, doubles spend or
    sends."""
    name, objs = overlay
    for service in ("ai-analyst", "notifier", "ingestor"):
        for w in service_workloads(objs, service):
            assert w["spec"]["replicas"] == 1, (name, w["metadata"]["name"])
    for service in ("ai-analyst", "notifier", "ingestor"):
        for w in service_workloads(objs, service):
            assert w["spec"]["strategy"]["type"] == "Recreate", (name, w["metadata"]["name"])


def test_a_third_group_is_one_directory_and_divides_the_per_ip_budgets(
    kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """docs/deployment.md "Adding a group", done to a copy of the tree: the new group's
    objects carry its name everywhere, and every group's share of Bybit's per-IP limits
    shrinks without a budget written anywhere."""
    tree = tmp_path / "deploy"
    shutil.copytree(kit.DEPLOY, tree, ignore=shutil.ignore_patterns("*.md"))
    prod = tree / "k8s" / "overlays" / "prod"
    accounts = prod / "accounts.yaml"
    # step 1: the new group's accounts in the accounts file
    accounts.write_text(
        accounts.read_text()
        + "  - name: sub_scalper\n    group: group-c\n    account_type: unified\n"
        "    position_mode: one_way\n    environment: mainnet\n    credentials:\n"
        "      api_key_file: /etc/riskwatch/bybit/sub_scalper.api_key\n"
        "      api_secret_file: /etc/riskwatch/bybit/sub_scalper.api_secret\n"
    )
    # the recipe: a copy of a group directory with the new name, one line in resources
    shutil.copytree(prod / "ingestor-group-b", prod / "ingestor-group-c")
    group_file = prod / "ingestor-group-c" / "kustomization.yaml"
    group_file.write_text(group_file.read_text().replace("group-b", "group-c"))
    overlay = prod / "kustomization.yaml"
    overlay.write_text(
        overlay.read_text().replace(
            "  - ingestor-group-b\n", "  - ingestor-group-b\n  - ingestor-group-c\n"
        )
    )

    objs = kit.render(prod)

    ingestors = {w["metadata"]["name"]: w for w in service_workloads(objs, "ingestor")}
    assert set(ingestors) == {"ingestor-group-a", "ingestor-group-b", "ingestor-group-c"}
    c = ingestors["ingestor-group-c"]
    assert container_env(objs, main_container(c))["INGESTOR_GROUP"] == "group-c"
    instance = {"app.kubernetes.io/instance": "ingestor-group-c"}
    assert instance.items() <= c["spec"]["selector"]["matchLabels"].items()
    assert instance.items() <= c["spec"]["template"]["metadata"]["labels"].items()
    (service,) = [
        s for s in by_kind(objs, "Service") if s["metadata"]["name"] == "ingestor-group-c"
    ]
    assert instance.items() <= service["spec"]["selector"].items()
    (secret,) = [v["secret"]["secretName"] for v in pod(c)["volumes"] if "secret" in v]
    assert secret == "bybit-credentials-group-c"
    # no two groups' selectors match the same pods
    selectors = [
        tuple(sorted(w["spec"]["selector"]["matchLabels"].items())) for w in ingestors.values()
    ]
    assert len(set(selectors)) == 3
    budgets = ingestor_budgets(objs, kit, monkeypatch, tmp_path / "pods")
    assert set(budgets) == {"group-a", "group-b", "group-c"}
    assert sum(rest for rest, _ in budgets.values()) <= 600
    assert sum(ws for _, ws in budgets.values()) <= 500
    # three equal shares of the same per-IP budget the two groups split before
    assert len(set(budgets.values())) == 1
    two = ingestor_budgets(
        kit.render(kit.DEPLOY / "k8s" / "overlays" / "prod"), kit, monkeypatch, tmp_path / "two"
    )
    assert budgets["group-a"][0] < two["group-a"][0]


def test_risk_processor_reads_its_thresholds_from_the_mounted_config_map(
    overlay: tuple[str, list[Obj]], tmp_path: Path
) -> None:
    from risk_processor.config import load_config

    name, objs = overlay
    (w,) = service_workloads(objs, "risk-processor")
    main = main_container(w)
    path = Path(container_env(objs, main)["RISK_PROCESSOR_THRESHOLDS_FILE"])
    (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod(w)["volumes"] if v["name"] == mount["name"]]
    cm = named(objs, "ConfigMap", volume["configMap"]["name"])
    local = tmp_path / path.name
    local.write_text(cm["data"][path.name])
    config = load_config(local)
    assert config.portfolio.net_exposure_usd > config.base.net_exposure_usd, name


# --------------------------------------------------------------------------- network policies
# A small evaluator of NetworkPolicy semantics (one namespace; ipBlock matches only addresses
# outside the cluster): a flow is allowed when the source's egress and the destination's
# ingress both allow it. A pod no policy of a direction selects is open in that direction.

EXTERNAL = "external"
MONITORING = "monitoring"


@dataclass(frozen=True)
class Peer:
    """A pod of the overlay (its labels and named ports), or somewhere outside it."""

    labels: dict[str, str]
    namespace: str
    ports: dict[str, int]

    @property
    def outside(self) -> bool:
        return self.namespace == EXTERNAL


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
    return True


def _peer_matches(rule_peer: Obj, peer: Peer, home: str) -> bool:
    if "ipBlock" in rule_peer:
        return peer.outside
    if peer.outside:
        return False
    if "namespaceSelector" in rule_peer:
        ns_labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not _selects(rule_peer["namespaceSelector"], ns_labels):
            return False
    elif peer.namespace != home:
        return False
    return _selects(rule_peer.get("podSelector", {}), peer.labels)


def _port_matches(rule: Obj, port: int, target: Peer) -> bool:
    if "ports" not in rule:
        return True
    for p in rule["ports"]:
        wanted = p["port"]
        if wanted == port or (isinstance(wanted, str) and target.ports.get(wanted) == port):
            return True
    return False


def _allowed(policies: list[Obj], pod: Peer, other: Peer, port: int, direction: str) -> bool:
    """Whether ``pod``'s policies let traffic to (Egress) or from (Ingress) ``other``."""
    target = other if direction == "Egress" else pod
    relevant = [
        p
        for p in policies
        if p["metadata"].get("namespace", "") == pod.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not relevant:
        return True
    key, side = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in relevant:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(side)
            if (peers is None or any(_peer_matches(r, other, pod.namespace) for r in peers)) and (
                _port_matches(rule, port, target)
            ):
                return True
    return False


def flow_allowed(objs: list[Obj], src: Peer, dst: Peer, port: int) -> bool:
    policies = by_kind(objs, "NetworkPolicy")
    out = src.outside or _allowed(policies, src, dst, port, "Egress")
    into = dst.outside or _allowed(policies, dst, src, port, "Ingress")
    return out and into


def _pods(objs: list[Obj]) -> dict[str, Peer]:
    found = {}
    for w in workloads(objs):
        labels = dict(w["spec"]["template"]["metadata"]["labels"])
        ports = {
            p["name"]: p["containerPort"] for c in pod(w)["containers"] for p in c.get("ports", [])
        }
        found[app_name(w)] = Peer(labels, w["metadata"].get("namespace", ""), ports)
    return found


def test_network_policies_deny_by_default_and_allow_only_the_needed_flows(
    overlay: tuple[str, list[Obj]],
) -> None:
    name, objs = overlay
    pods = _pods(objs)
    ns = pods["ingestor"].namespace
    outside = Peer({}, EXTERNAL, {})
    prometheus = Peer({"app.kubernetes.io/name": "prometheus"}, MONITORING, {})
    dns = Peer({"k8s-app": "kube-dns"}, "kube-system", {})
    stranger = Peer({"app": "something-else"}, ns, {})
    query_client = Peer({"riskwatch.io/query-client": "true"}, "tools", {})
    default_deny = named(objs, "NetworkPolicy", "default-deny")["spec"]
    assert default_deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    clients = ("ingestor", "risk-processor", "ai-analyst", "notifier")
    kafka: Peer = pods.get("kafka", outside)
    kafka_port = 9092 if "kafka" in pods else 9096
    allowed = [
        *[(pods[c], kafka, kafka_port) for c in clients],
        *[(p, dns, 53) for p in pods.values()],
        *[(prometheus, p, p.ports["metrics"]) for p in pods.values() if "metrics" in p.ports],
        (query_client, pods["risk-processor"], pods["risk-processor"].ports["http"]),
        (pods["ai-analyst"], outside, 443),
        (pods["notifier"], outside, 443),
    ]
    if "bybit-sim" in pods:
        allowed.append((pods["ingestor"], pods["bybit-sim"], pods["bybit-sim"].ports["exchange"]))
    else:
        allowed.append((pods["ingestor"], outside, 443))
    denied = [
        (pods["ingestor"], pods["risk-processor"], pods["risk-processor"].ports["http"]),
        (pods["notifier"], pods["risk-processor"], pods["risk-processor"].ports["http"]),
        (stranger, pods["risk-processor"], pods["risk-processor"].ports["http"]),
        (outside, pods["ingestor"], pods["ingestor"].ports["http"]),
        (prometheus, pods["risk-processor"], pods["risk-processor"].ports["http"]),
        (pods["risk-processor"], outside, 443),
        (pods["ingestor"], outside, 80),
        (stranger, kafka, kafka_port),
    ]
    if "bybit-sim" in pods:
        denied.append((pods["bybit-sim"], outside, 443))
        denied.append((pods["notifier"], pods["bybit-sim"], pods["bybit-sim"].ports["exchange"]))
    for src, dst, port in allowed:
        assert flow_allowed(objs, src, dst, port), f"{name}: {src.labels} -> {dst.labels}:{port}"
    for src, dst, port in denied:
        assert not flow_allowed(objs, src, dst, port), (
            f"{name}: {src.labels} -> {dst.labels}:{port}"
        )
