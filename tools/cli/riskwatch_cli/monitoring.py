"""``riskwatch monitoring``: the Kubernetes PrometheusRule, written from the Prometheus rules file.

Prometheus (compose) reads the plain rules file and promtool tests it; the Prometheus Operator
wants the same groups inside a PrometheusRule object. Writing one from the other keeps a single
source of rules; ``--check`` fails when the object is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
OBSERVABILITY = REPO / "deploy" / "observability"
RULES = OBSERVABILITY / "prometheus" / "rules" / "riskwatch.rules.yml"
PROMETHEUS_RULE = OBSERVABILITY / "prometheusrule.yaml"

_HEADER = (
    "# Written by `make monitoring` from prometheus/rules/riskwatch.rules.yml: edit that file,\n"
    "# not this one (a test fails when they differ).\n"
)


def prometheus_rule(rules_text: str) -> str:
    """The PrometheusRule object holding the groups of a Prometheus rules file."""
    groups = yaml.safe_load(rules_text)["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "riskwatch", "labels": {"app.kubernetes.io/part-of": "riskwatch"}},
        "spec": {"groups": groups},
    }
    return _HEADER + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def run(check: bool) -> int:
    wanted = prometheus_rule(RULES.read_text())
    if check:
        if not PROMETHEUS_RULE.exists() or PROMETHEUS_RULE.read_text() != wanted:
            print(f"{PROMETHEUS_RULE} is out of date: run `make monitoring`", file=sys.stderr)
            return 1
        print(f"{PROMETHEUS_RULE.name} matches {RULES.name}")
        return 0
    PROMETHEUS_RULE.write_text(wanted)
    print(PROMETHEUS_RULE)
    return 0
