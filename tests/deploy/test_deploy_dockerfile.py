"""deploy/Dockerfile, read statically (no engine here): one stage per service runs the
service's module as a non-root user, on the documented port, with a health check that
works; the build installs exactly that workspace member; the build context carries what
the COPY lines need."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        (args,) = self.all(keyword)
        return args

    def env(self) -> dict[str, str]:
        out = {}
        for args in self.all("ENV"):
            out.update(dict(re.findall(r"(\w+)=(\S+)", args)))
        return out


@dataclass
class Dockerfile:
    global_args: list[str]
    stages: dict[str, Stage]
    final: Stage


def parse(text: str) -> Dockerfile:
    """Instructions with continuations joined and comments dropped, grouped by stage."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            logical.append(pending)
            pending = ""
    global_args: list[str] = []
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"^(\S+)(?:\s+AS\s+(\S+))?$", args.strip(), re.IGNORECASE)
            assert m, line
            current = Stage(m[2] or "<final>", m[1])
            stages[current.name] = current
        elif current is None:
            assert keyword == "ARG", line
            global_args.append(args.strip())
        else:
            current.instructions.append((keyword, args.strip()))
    assert current is not None
    return Dockerfile(global_args, stages, current)


@pytest.fixture(scope="module")
def dockerfile(kit: SimpleNamespace) -> Dockerfile:
    return parse((kit.DEPLOY / "Dockerfile").read_text())


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; the shell form is refused."""
    value = json.loads(args)
    assert isinstance(value, list), args
    return [str(v) for v in value]


def test_the_final_image_is_the_stage_of_the_service_built(dockerfile: Dockerfile) -> None:
    assert dockerfile.final.base == "svc-${SERVICE}"
    assert "SERVICE" in dockerfile.global_args
    build = dockerfile.stages["build"]
    syncs = [a for a in build.all("RUN") if "uv sync" in a]
    assert len(syncs) == 2
    for sync in syncs:
        assert '--package "riskwatch-${SERVICE}"' in sync
        assert "--no-dev" in sync
    # dependencies from the lock only, then the member itself installed for real
    assert "--no-install-workspace" in syncs[0]
    assert "--no-editable" in syncs[1]
    assert build.env()["UV_FROZEN"] == "1"


def test_each_service_stage_runs_its_module_on_its_port(
    dockerfile: Dockerfile, service: Any, env_of: Any
) -> None:
    stage = dockerfile.stages[f"svc-{service.name}"]
    assert stage.base == "runtime"
    assert exec_form(stage.one("CMD")) == ["python", "-m", service.module]
    exposed = {int(p) for p in stage.one("EXPOSE").split()}
    assert exposed == {service.port, *service.extra_ports}
    env = stage.env()
    host, port = f"{service.env_prefix}HTTP_HOST", f"{service.env_prefix}HTTP_PORT"
    assert env[host] == "0.0.0.0", "the health server must be reachable from outside"
    assert env[port] == str(service.port)
    known = env_of(service.name, skip=False)
    if known is not None:
        assert set(env) <= set(known), f"{set(env) - set(known)} are not settings"
        # every server the service binds listens beyond the container's loopback
        for var, setting in known.items():
            if var.endswith("HOST") and setting.default == "127.0.0.1":
                assert env.get(var) == "0.0.0.0", f"{var} stays on loopback"


def test_the_cli_stage_runs_the_developer_command(dockerfile: Dockerfile) -> None:
    stage = dockerfile.stages["svc-cli"]
    assert exec_form(stage.one("CMD"))[0] == "riskwatch"
    assert stage.one("HEALTHCHECK") == "NONE"


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[200, 503], ids=["healthy", "unhealthy"])
def health_server(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    handler = type("Handler", (_Health,), {"status": request.param})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], request.param
    finally:
        server.shutdown()
        server.server_close()


def test_the_health_check_fails_exactly_when_healthz_fails(
    dockerfile: Dockerfile, service: Any, health_server: tuple[int, int]
) -> None:
    port, status = health_server
    check = dockerfile.stages[f"svc-{service.name}"].one("HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options
    assert "--timeout=" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert f"'{service.port}'" in argv[2], "the default port is the documented one"
    env = {**os.environ, f"{service.env_prefix}HTTP_PORT": str(port)}
    proc = subprocess.run(
        [sys.executable, "-c", argv[2]], env=env, capture_output=True, timeout=30, check=False
    )
    assert (proc.returncode == 0) == (status == 200), proc.stderr


def test_the_image_runs_as_a_numeric_non_root_user(
    dockerfile: Dockerfile, rendered: Any, kit: SimpleNamespace
) -> None:
    runtime = dockerfile.stages["runtime"]
    user, _, group = runtime.one("USER").partition(":")
    # runAsNonRoot can only verify a numeric user
    assert user.isdigit(), user
    assert group.isdigit(), group
    assert int(user) > 0
    assert int(group) > 0
    # the manifests run the same user
    for obj in rendered("dev"):
        if obj["kind"] in ("Deployment", "StatefulSet"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
            if labels["app.kubernetes.io/name"] in kit.SERVICES:
                ctx = obj["spec"]["template"]["spec"]["securityContext"]
                assert (ctx["runAsUser"], ctx["runAsGroup"]) == (int(user), int(group))


def workspace_members(repo: Path) -> dict[str, Path]:
    """Package name -> directory of every uv workspace member."""
    root = tomllib.loads((repo / "pyproject.toml").read_text())
    members = {}
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for directory in sorted(repo.glob(pattern)):
            if (directory / "pyproject.toml").is_file():
                name = tomllib.loads((directory / "pyproject.toml").read_text())["project"]["name"]
                members[name] = directory
    return members


def test_every_service_of_the_docs_is_a_workspace_member_and_back(kit: SimpleNamespace) -> None:
    members = workspace_members(kit.REPO)
    services = {n for n, d in members.items() if d.parent == kit.REPO / "services"}
    assert services == {f"riskwatch-{s}" for s in kit.SERVICES}
    for service in kit.SERVICES.values():
        directory = members[f"riskwatch-{service.name}"]
        assert (directory / service.module / "__init__.py").is_file(), service


def test_every_stage_installs_a_workspace_member_whose_manifest_is_copied_first(
    dockerfile: Dockerfile, kit: SimpleNamespace
) -> None:
    members = workspace_members(kit.REPO)
    for name in dockerfile.stages:
        if name.startswith("svc-"):
            assert f"riskwatch-{name.removeprefix('svc-')}" in members, name
    # uv resolves the workspace from every member's manifest, so all are copied
    copied = {
        src
        for args in dockerfile.stages["build"].all("COPY")
        if not args.startswith("--")
        for src in args.split()[:-1]
    }
    for directory in members.values():
        assert str((directory / "pyproject.toml").relative_to(kit.REPO)) in copied, directory


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether the build context leaves ``path`` out, by the .dockerignore rules: the last
    matching pattern wins, and a pattern matching a parent directory matches the path."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
            out += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        return re.compile(f"^{out}$")

    parents = [str(Path(*Path(path).parts[: i + 1])) for i in range(len(Path(path).parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        rx = regex(raw.removeprefix("!"))
        if any(rx.match(p) for p in parents):
            excluded = not negate
    return excluded


def test_the_build_context_holds_what_the_copies_need_and_nothing_else(
    dockerfile: Dockerfile, kit: SimpleNamespace
) -> None:
    ignore = kit.DEPLOY / "Dockerfile.dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = []
    for stage in dockerfile.stages.values():
        for args in stage.all("COPY"):
            if args.startswith("--from"):
                continue
            for src in args.split()[:-1]:
                assert (kit.REPO / src).exists(), f"COPY {src}: not in the repository"
                needed.append(src.rstrip("/"))
    members = workspace_members(kit.REPO)
    for directory in members.values():
        for source in directory.rglob("*.py"):
            rel = str(source.relative_to(kit.REPO))
            if "/tests/" not in rel and "__pycache__" not in rel:
                needed.append(rel)
    needed += [
        str(p.relative_to(kit.REPO)) for p in (kit.REPO / "services/bybit_sim/scenarios").iterdir()
    ]
    for path in needed:
        assert not dockerignore_excludes(patterns, path), f"{path} is left out of the context"
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "var/demo/broker.log",
        "services/ingestor/tests/test_x.py",
        "libs/common/src/riskwatch_common/__pycache__/kafka.cpython-311.pyc",
        "deploy/k8s/overlays/dev/sim-credentials/group-a/main.api_key",
    ):
        assert dockerignore_excludes(patterns, path), f"{path} would be sent to the builder"


def test_the_simulator_image_carries_its_scenarios(
    dockerfile: Dockerfile, kit: SimpleNamespace
) -> None:
    copy = dockerfile.stages["svc-bybit-sim"].one("COPY")
    source, target = copy.removeprefix("--from=build ").split()
    assert source == "/src/services/bybit_sim/scenarios"
    assert Path(target) == kit.SCENARIOS_IN_IMAGE
    assert (kit.REPO / "services/bybit_sim/scenarios").is_dir()
