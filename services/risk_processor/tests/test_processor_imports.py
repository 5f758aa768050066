"""The import contract: the pure part of the processor never imports Faust, aiokafka or
the shell, directly or through another module of the package. ``make lint`` runs this.

An equivalent of import-linter's "forbidden" contract, without the extra dependency: it
reads the import statements (including those inside functions) of every pure module and
follows the package's own imports transitively.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "risk_processor"
PURE = ("engine", "evaluate", "state", "outputs", "codec", "config")
FORBIDDEN_EXTERNAL = ("faust", "aiokafka", "mode", "aiohttp", "prometheus_client")
SHELL = (
    "app",
    "faust_app",
    "agents",
    "outbox",
    "coalesce",
    "reevaluate",
    "batching",
    "transport",
    "tables",
    "faust_codecs",
    "metrics",
    "api",
    "bench",
    "testing",
    "repartition",
)


def _module_file(name: str) -> Path | None:
    rel = name.removeprefix("risk_processor").lstrip(".").replace(".", "/")
    for candidate in (PACKAGE / f"{rel}.py", PACKAGE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module == "risk_processor":
                out.update(f"risk_processor.{a.name}" for a in node.names)
    return out


def violations() -> list[str]:
    found: list[str] = []
    start = [f"risk_processor.{p}" for p in PURE]
    start += [f"risk_processor.engine.{f.stem}" for f in (PACKAGE / "engine").glob("*.py")]
    seen: set[str] = set()
    todo = [(m, m) for m in start]
    while todo:
        module, root = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is None:
            continue
        for name in sorted(_imports(path)):
            top = name.split(".")[0]
            if top in FORBIDDEN_EXTERNAL:
                found.append(f"{module} imports {name} (pure: {root})")
            elif top == "risk_processor":
                first = name.removeprefix("risk_processor.").split(".")[0]
                if first in SHELL:
                    found.append(f"{module} imports the shell module {name} (pure: {root})")
                else:
                    todo.append((name, root))
    return found


def test_pure_modules_import_no_faust_aiokafka_or_shell_module() -> None:
    assert violations() == []


def test_the_contract_sees_every_pure_module() -> None:
    for name in PURE:
        assert _module_file(f"risk_processor.{name}") is not None, name
