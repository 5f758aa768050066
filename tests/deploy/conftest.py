"""Shared facts for the deployment tests: the service table of docs/developing.md, the
environment variables each settings class reads, and the rendered Kubernetes overlays.

Nothing here needs a container engine or the network: docker-compose.yml, the Dockerfile
and the manifests are checked statically, against offline schemas and against the code
(settings classes, the topic registry, the ingestor's accounts loader).
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, SecretStr
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")

# Variables a container may carry that are not riskwatch settings.
RUNTIME_ENV = frozenset({"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})
# The services that talk to Kafka (the simulator does not).
KAFKA_SERVICES = frozenset({"ingestor", "risk-processor", "ai-analyst", "notifier"})
# Where deploy/Dockerfile puts the simulator's scenarios (services/bybit_sim/scenarios).
SCENARIOS_IN_IMAGE = Path("/opt/riskwatch/scenarios")
SCENARIOS = REPO / "services" / "bybit_sim" / "scenarios"


def on_this_machine(value: str) -> str:
    """A value as a test on this machine can use it: a path into the image's scenario
    directory becomes the repository's (settings check that a scenario file exists)."""
    path = Path(value)
    if path.is_absolute() and path.is_relative_to(SCENARIOS_IN_IMAGE):
        return str(SCENARIOS / path.relative_to(SCENARIOS_IN_IMAGE))
    return value


@dataclass(frozen=True)
class Service:
    """One row of the service table in docs/developing.md."""

    name: str
    module: str
    env_prefix: str
    port: int
    extra_ports: tuple[int, ...]


def _service_table() -> dict[str, Service]:
    text = (REPO / "docs" / "developing.md").read_text()
    row = re.compile(r"^\| ([a-z][a-z-]*) \| `python -m (\w+)` \| `(\w+_)` \| ([^|]+) \|$")
    services = {}
    for line in text.splitlines():
        m = row.match(line.strip())
        if m:
            ports = [int(p) for p in re.findall(r"\d+", m[4])]
            services[m[1]] = Service(m[1], m[2], m[3], ports[0], tuple(ports[1:]))
    return services


SERVICES = _service_table()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``service``: one run per row of the service table."""
    if "service" in metafunc.fixturenames:
        metafunc.parametrize("service", list(SERVICES.values()), ids=list(SERVICES))


# ---------------------------------------------------------------------------------------------
# settings -> environment variable names


@dataclass(frozen=True)
class EnvVar:
    name: str
    required: bool
    secret: bool
    default: Any = None


def _unwrap(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def settings_env(cls: type[BaseSettings]) -> dict[str, EnvVar]:
    """Every environment variable a pydantic-settings class reads, as pydantic-settings names
    it: an alias as given, otherwise ``env_prefix + field name``; a nested settings class
    (e.g. ``KafkaSettings``) under its own prefix; names are case-insensitive, so upper."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    out: dict[str, EnvVar] = {}
    for field_name, field in cls.model_fields.items():
        kinds = _unwrap(field.annotation)
        nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseSettings)]
        if nested:
            out.update(settings_env(nested[0]))
            continue
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names = [c for c in alias.choices if isinstance(c, str)]
        elif isinstance(alias, str):
            names = [alias]
        elif field.alias:
            names = [field.alias]
        else:
            names = [prefix + field_name]
        secret = any(k is SecretStr for k in kinds)
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        for n in names:
            out[n.upper()] = EnvVar(n.upper(), required, secret, default)
    return out


def settings_class(service: Service) -> type[BaseSettings] | None:
    """The service's settings class (the BaseServiceSettings subclass defined in its
    ``settings`` module), or None while the module does not exist yet."""
    from riskwatch_common.settings import BaseServiceSettings, ServiceSettings

    try:
        module = importlib.import_module(f"{service.module}.settings")
    except ModuleNotFoundError as exc:
        if exc.name in (f"{service.module}.settings", service.module):
            return None
        raise
    classes = [
        v
        for v in vars(module).values()
        if isinstance(v, type)
        and issubclass(v, BaseServiceSettings)
        and v not in (BaseServiceSettings, ServiceSettings)
        and v.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"{module.__name__} defines {len(classes)} settings classes"
    return classes[0]


@pytest.fixture(scope="session")
def env_of() -> Any:
    """``env_of("notifier")`` -> {NAME: EnvVar}; skips (visibly) while the service's
    settings module is not written yet."""

    def get(service: str, *, skip: bool = True) -> dict[str, EnvVar] | None:
        cls = settings_class(SERVICES[service])
        if cls is None:
            if skip:
                pytest.skip(f"{SERVICES[service].module}.settings does not exist yet")
            return None
        env = settings_env(cls)
        prefix = SERVICES[service].env_prefix
        assert cls.model_config.get("env_prefix") == prefix, (
            f"{cls.__name__} env_prefix is {cls.model_config.get('env_prefix')!r}, "
            f"docs/developing.md says {prefix!r}"
        )
        return env

    return get


SECRET_WORDS = frozenset({"KEY", "SECRET", "TOKEN", "PASSWORD", "WEBHOOK", "CREDENTIALS"})


def secret_like(name: str) -> bool:
    """Names whose value is a credential, whatever the settings class says: one of their
    words is KEY, TOKEN, ... (``*_FILE``/``*_ENV`` name where a secret is, not the secret)."""
    words = name.upper().split("_")
    return bool(SECRET_WORDS & set(words)) and words[-1] not in ("FILE", "ENV")


def check_python_c(code: str, *, calls: str) -> None:
    """A ``python -c`` program parses, its imports resolve, and it calls ``calls``."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(str(node.module))
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
    called = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert calls in called, f"{code!r} does not call {calls}"


# ---------------------------------------------------------------------------------------------
# kustomize


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: the Kubernetes overlays cannot be rendered")
    return path


def render(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


_rendered: dict[str, list[dict[str, Any]]] = {}


@pytest.fixture(scope="session")
def rendered() -> Any:
    """``rendered("prod")`` -> the overlay's objects, rendered once per session."""

    def get(name: str) -> list[dict[str, Any]]:
        if name not in _rendered:
            _rendered[name] = render(K8S / "overlays" / name)
        return _rendered[name]

    return get


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: Any) -> tuple[str, list[dict[str, Any]]]:
    """(name, rendered objects) of each overlay."""
    return request.param, rendered(request.param)


@pytest.fixture(scope="session")
def kit() -> types.SimpleNamespace:
    """The helpers above, for test modules (importlib mode cannot import conftest)."""
    return types.SimpleNamespace(
        REPO=REPO,
        DEPLOY=DEPLOY,
        K8S=K8S,
        OVERLAYS=OVERLAYS,
        RUNTIME_ENV=RUNTIME_ENV,
        KAFKA_SERVICES=KAFKA_SERVICES,
        SCENARIOS_IN_IMAGE=SCENARIOS_IN_IMAGE,
        SCENARIOS=SCENARIOS,
        on_this_machine=on_this_machine,
        SERVICES=SERVICES,
        settings_env=settings_env,
        settings_class=settings_class,
        check_python_c=check_python_c,
        secret_like=secret_like,
        render=render,
    )
