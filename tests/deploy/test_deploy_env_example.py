""".env.example names every variable the services read (derived from their settings
classes), shows true defaults, keeps secrets empty, and what it sets is accepted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

LINE = re.compile(r"^(#\s?)?([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class Entry:
    name: str
    value: str
    commented: bool


@pytest.fixture(scope="module")
def entries(kit: SimpleNamespace) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for line in (kit.REPO / ".env.example").read_text().splitlines():
        m = LINE.match(line)
        if m:
            assert m[2] not in out, f"{m[2]} appears twice"
            out[m[2]] = Entry(m[2], m[3], m[1] is not None)
    return out


def compose_variables(kit: SimpleNamespace) -> set[str]:
    """Variables the compose files interpolate (``${NAME:-default}``), and those Compose
    itself reads from .env (which files, which profiles)."""
    text = "".join(
        (kit.REPO / f).read_text() for f in ("docker-compose.yml", "docker-compose.live.yml")
    )
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text)) | {"COMPOSE_FILE", "COMPOSE_PROFILES"}


def test_every_setting_of_every_service_is_listed(
    entries: dict[str, Entry], service: Any, env_of: Any
) -> None:
    missing = set(env_of(service.name)) - set(entries)
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_every_listed_variable_is_read_by_something(
    entries: dict[str, Entry], kit: SimpleNamespace, env_of: Any
) -> None:
    known = compose_variables(kit)
    absent = []
    for service in kit.SERVICES:
        env = env_of(service, skip=False)
        if env is None:
            absent.append(service)
        else:
            known |= set(env)
    prefixes = tuple(kit.SERVICES[s].env_prefix for s in absent)
    unknown = {n for n in set(entries) - known if not (prefixes and n.startswith(prefixes))}
    assert not unknown, f".env.example lists {sorted(unknown)}, which nothing reads"
    if absent:
        pytest.skip(f"settings of {absent} do not exist yet; their variables were not checked")


def test_secrets_are_empty(entries: dict[str, Entry], kit: SimpleNamespace, env_of: Any) -> None:
    secrets = {n for n in entries if kit.secret_like(n)}
    for service in kit.SERVICES:
        env = env_of(service, skip=False) or {}
        secrets |= {n for n, v in env.items() if v.secret and n in entries}
    assert secrets >= {"HOLYSHEEP_API_KEY", "NOTIFIER_TELEGRAM_BOT_TOKEN", "KAFKA_SASL_PASSWORD"}
    for name in secrets:
        assert entries[name].value == "", f"{name} has a value in .env.example"


def test_defaults_shown_are_the_settings_defaults_and_values_set_are_accepted(
    entries: dict[str, Entry],
    service: Any,
    env_of: Any,
    kit: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from riskwatch_common.settings import load_settings

    known = env_of(service.name)
    cls = kit.settings_class(service)
    for var in known:
        monkeypatch.delenv(var, raising=False)
    # the required ones, as docker-compose.yml gives them
    compose = yaml.safe_load((kit.REPO / "docker-compose.yml").read_text())
    given = next(
        s.get("environment", {})
        for s in compose["services"].values()
        if s.get("image", "").startswith(f"riskwatch/{service.name}:")
    )
    for var, var_env in known.items():
        if var_env.required:
            monkeypatch.setenv(var, kit.on_this_machine(str(given[var])))
    baseline = load_settings(cls)
    for name in known:
        entry = entries[name]
        if not entry.commented or known[name].required:
            continue
        with monkeypatch.context() as m:
            m.setenv(name, entry.value)
            shown = load_settings(cls)
        # a value without a default shows an example, which must still be accepted
        if known[name].default is not None:
            assert shown == baseline, f"{name}={entry.value} is not the default"
    # what a user gets from `cp .env.example .env`: the uncommented lines, accepted
    for name in known:
        if not entries[name].commented:
            monkeypatch.setenv(name, entries[name].value)
    load_settings(cls)
