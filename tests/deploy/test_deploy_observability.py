"""Prometheus, its alert rules and the Grafana dashboard (deploy/observability/).

promtool checks the config and the rules and runs the rule unit tests; every metric a panel
or a rule reads must be one a service really exports, read from the services' own metrics
modules; the Kubernetes component renders the same rules and scrapes every Service.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

REPO = Path(__file__).resolve().parents[2]
OBS = REPO / "deploy" / "observability"
RULES = OBS / "prometheus" / "rules" / "riskwatch.rules.yml"
CONFIG = OBS / "prometheus" / "prometheus.yml"
DASHBOARD = OBS / "grafana" / "dashboards" / "riskwatch.json"
DATASOURCES = OBS / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PREFIXES = ("ingestor_", "risk_processor_", "ai_analyst_", "notifier_", "bybit_sim_")
# PromQL words that look like metric names but are functions, keywords or label names
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not installed and scripts/ensure-promtool.sh could not install it "
            "(needs root and apt): the Prometheus config and rules are not checked"
        )
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def exported_names() -> set[str]:
    """Every sample name the services' metrics modules register (with _total, _bucket...)."""
    for module in (
        "ingestor.metrics",
        "ai_analyst.metrics",
        "notifier.metrics",
        "bybit_sim.metrics",
        "risk_processor.metrics",
    ):
        importlib.import_module(module)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


def metrics_in(expr: str) -> set[str]:
    # label matchers and label lists are not metric names: drop {...} and (by|on ...) lists
    bare = re.sub(r"\{[^}]*\}", "", expr)
    bare = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    words = set(_IDENT.findall(bare))
    return {w for w in words if w.startswith(PREFIXES)} | ({"up"} & words)


def rule_exprs() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_prometheus_config_and_its_rule_files_pass_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES.parent, rules)
    config = tmp_path / "prometheus.yml"
    # the config names the rules where compose mounts them
    text = CONFIG.read_text()
    assert "/etc/prometheus/rules/*.yml" in text
    config.write_text(text.replace("/etc/prometheus/rules", str(rules)))

    out = run_promtool("check", "config", str(config))

    assert f"SUCCESS: {len(rule_exprs())} rules found" in out


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    run_promtool("check", "rules", str(RULES))
    out = run_promtool(
        "test", "rules", "riskwatch.rules.test.yml", cwd=OBS / "prometheus" / "tests"
    )
    assert "SUCCESS" in out


def test_every_metric_of_a_panel_or_rule_is_exported_by_a_service() -> None:
    exported = exported_names()
    used: dict[str, set[str]] = {}
    for alert, expr in rule_exprs().items():
        for name in metrics_in(expr):
            used.setdefault(name, set()).add(f"rule {alert}")
    for panel in panels():
        for target in panel["targets"]:
            for name in metrics_in(target["expr"]):
                used.setdefault(name, set()).add(f"panel {panel['title']!r}")
    assert used, "no metric found in the rules and panels"
    missing = {n: sorted(w) for n, w in used.items() if n != "up" and n not in exported}
    assert not missing, f"read but exported by no service: {missing}"


def test_the_metric_check_recognises_a_name_no_service_exports() -> None:
    # the check above must be able to fail: a typo in a panel is caught
    exported = exported_names()
    names = metrics_in('sum by (account) (risk_processor_acount_mm_rate{account="main"})')
    assert names == {"risk_processor_acount_mm_rate"}
    assert not names <= exported


def test_dashboard_has_a_panel_for_each_thing_a_trader_watches() -> None:
    reads = {p["title"]: {n for t in p["targets"] for n in metrics_in(t["expr"])} for p in panels()}
    wanted = {
        "per-account exposure": "risk_processor_account_net_exposure_usd",
        "MM rate": "risk_processor_account_mm_rate",
        "liquidation distance": "risk_processor_account_liquidation_distance_percent",
        "alert rates": "risk_processor_alerts_total",
        "pipeline lag": "risk_processor_input_lag_seconds_bucket",
        "end-to-end latency": "notifier_alert_to_delivery_seconds_bucket",
        "link status": "ingestor_accounts",
        "LLM spend": "ai_analyst_llm_spend_today_usd",
    }
    for what, metric in wanted.items():
        assert any(metric in names for names in reads.values()), f"no panel shows {what}"
    (e2e,) = [names for title, names in reads.items() if title.startswith("End-to-end")]
    # every stage from Bybit's frame to the delivered message
    assert e2e == {
        "ingestor_exchange_to_publish_seconds_bucket",
        "risk_processor_input_to_alert_seconds_bucket",
        "notifier_alert_to_delivery_seconds_bucket",
    }


def test_dashboard_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    cells: dict[tuple[int, int], str] = {}
    for panel in panels():
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_compose_scrapes_every_riskwatch_service_on_its_metrics_port(kit: SimpleNamespace) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    targets: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                port = target.rsplit(":", 1)[1]
                targets[static["labels"]["service"]] = int(port)
        for dns in job.get("dns_sd_configs", []):
            (relabel,) = job["relabel_configs"]
            targets[relabel["replacement"]] = dns["port"]
    # the metrics port of each (docs/developing.md), never the API's
    assert targets == {name: svc.extra_ports[0] for name, svc in kit.SERVICES.items()}
    compose = yaml.safe_load((kit.REPO / "docker-compose.yml").read_text())
    ingestors = [s for n, s in compose["services"].items() if n.startswith("ingestor-")]
    assert ingestors
    for spec in ingestors:  # the DNS name the ingestor job looks up
        assert "ingestor" in spec["networks"]["default"]["aliases"]
    for name in ("prometheus", "grafana"):
        spec = compose["services"][name]
        assert spec["profiles"] == ["observability"]
        for volume in spec["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (kit.REPO / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_rule_object_is_written_from_the_rules_file() -> None:
    from riskwatch_cli.monitoring import PROMETHEUS_RULE, prometheus_rule

    assert PROMETHEUS_RULE.read_text() == prometheus_rule(RULES.read_text()), (
        "deploy/observability/prometheusrule.yaml is out of date: run `make monitoring`"
    )


def test_monitoring_component_scrapes_every_service_of_the_prod_overlay(
    tmp_path: Path, kit: SimpleNamespace
) -> None:
    up = os.path.relpath(kit.DEPLOY, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: riskwatch\n"
        f"resources: [{up}/k8s/overlays/prod]\ncomponents: [{up}/observability]\n"
    )

    objects = kit.render(tmp_path)

    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    (dashboard,) = [o for o in objects if o["metadata"]["name"] == "riskwatch-grafana-dashboard"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    services = [o for o in objects if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} >= {"risk-processor", "notifier", "ai-analyst"}
    for service in services:
        labels = service["metadata"].get("labels", {})
        assert selector.items() <= labels.items(), service["metadata"]["name"]
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert endpoint["port"] in ports, service["metadata"]["name"]
    assert endpoint["path"] == "/metrics"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["riskwatch.json"]) == json.loads(DASHBOARD.read_text())


def test_prometheus_rule_object_passes_promtool(tmp_path: Path) -> None:
    from riskwatch_cli.monitoring import PROMETHEUS_RULE

    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    extracted = tmp_path / "from-prometheusrule.yml"
    extracted.write_text(yaml.safe_dump(spec))

    run_promtool("check", "rules", str(extracted))
