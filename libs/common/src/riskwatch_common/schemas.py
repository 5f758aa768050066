"""JSON Schemas of every event, generated from the contracts into ``schemas/``.

The committed files are what outside subscribers validate against; a test regenerates them
and fails on any drift, so the contract and its published schema cannot diverge.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from riskwatch_common.contracts import event_models


def render_schemas() -> dict[str, bytes]:
    """File name -> schema document, one per event model."""
    out: dict[str, bytes] = {}
    for name, model in sorted(event_models().items()):
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://riskwatch.local/schemas/{name}.json"
        out[f"{name}.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return out


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` and remove stale ones; returns the written paths."""
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, body in rendered.items():
        path = directory / name
        path.write_bytes(body)
        written.append(path)
    return written


def drifted(directory: Path) -> list[str]:
    """Names of schema files that are missing, stale or different from the contracts."""
    rendered = render_schemas()
    present = {p.name for p in directory.glob("*.json")}
    problems = sorted(present - rendered.keys())
    for name, body in rendered.items():
        path = directory / name
        if not path.exists() or path.read_bytes() != body:
            problems.append(name)
    return problems
