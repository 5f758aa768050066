"""Every decoder rejects every malformed input with its documented error type, and only that.

Bybit frames (private and public WebSocket), REST bodies and rows, risk-limit tables, and
every registry topic's records through ``TopicSpec.decode``. A decoder that raises anything
else (AttributeError, IndexError, ...) would escape its caller's ``except`` and stop a loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import typing
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ingestor import normalize
from ingestor.bybit.rest import BybitError, decode_body
from ingestor.normalize import ROW_ERRORS, FrameError
from riskwatch_common.topics import ALL_TOPICS, TopicSpec, encode

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))

# ---------------------------------------------------------------- malformed-input strategies
# Raw bytes, JSON of the wrong shape, and real recorded frames with parts replaced, removed
# or retyped (what an exchange bug or a hostile peer sends).

FRAMES = Path(__file__).resolve().parents[2] / "services" / "ingestor" / "tests" / "frames"

# Names decoders look for, so generated objects reach past the first key check.
KEYS = [
    "topic", "data", "id", "creationTime", "type", "ts", "cs", "retCode", "retMsg", "result",
    "time", "list", "nextPageCursor", "category", "symbol", "side", "size", "positionIdx",
    "markPrice", "indexPrice", "lastPrice", "orderId", "orderStatus", "price", "qty",
    "execId", "execTime", "execQty", "execPrice", "coin", "equity", "walletBalance",
    "totalEquity", "accountType", "updatedTime", "createdTime", "seq", "riskLimitValue",
    "maintenanceMargin", "initialMargin", "maxLeverage", "mmDeduction", "isLowestRisk",
    "event_type", "event_id", "schema_version", "occurred_at", "produced_at", "source",
    "correlation_id", "account", "status", "severity", "transition", "tiers", "value",
]  # fmt: skip

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["", "0", "-1", "1e999", "NaN", "-Infinity", "linear", "Buy", "Sell", "snapshot",
         "delta", "wallet", "position", "order", "execution", "tickers.BTCUSDT", "None",
         "1700000000000", "0.1", "BTCUSDT", "USDT", "UNIFIED", "1" * 40]
    ),
)  # fmt: skip

JSON = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=6
        ),
    ),
    max_leaves=24,
)


def dumps(value: Any) -> bytes:
    # allow_nan: NaN/Infinity tokens are invalid JSON a decoder must refuse, not crash on
    return json.dumps(value, allow_nan=True).encode()


def seeds(prefix: str) -> list[Any]:
    return [json.loads(p.read_text()) for p in sorted(FRAMES.glob(f"{prefix}*.json"))]


def _paths(doc: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*here, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*here, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, docs: list[Any]) -> Any:
    """A seed document with 1 to 4 nodes replaced by arbitrary JSON or removed."""
    doc = json.loads(json.dumps(draw(st.sampled_from(docs))))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = draw(JSON)
            continue
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the shape under this path
    return doc


def inputs(docs: list[Any]) -> st.SearchStrategy[bytes]:
    """Raw bytes, arbitrary JSON, and mutated seeds (most of them, to get deep)."""
    return st.one_of(
        st.binary(max_size=64),
        JSON.map(dumps),
        *([mutated(docs).map(dumps)] * 3 if docs else []),
    )


SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _instance(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> Any:
    """A plausible document for a JSON Schema: every property with a value of its type."""
    if "$ref" in schema:
        return _instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return _instance(options[0], defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: _instance(v, defs, depth + 1) for k, v in props.items()} if depth < 6 else {}
    if kind == "array":
        return [_instance(schema.get("items", {}), defs, depth + 1)] if depth < 6 else []
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    if "pattern" in schema and "d" in schema["pattern"]:
        return "1.5"  # Decimal strings
    return "x"


def schema_seed(model_name: str) -> Any:
    """A plausible record of a contract model, from its committed JSON Schema."""
    path = SCHEMAS / f"{model_name}.json"
    if not path.exists():
        return {}
    schema = json.loads(path.read_text())
    return _instance(schema, schema.get("$defs", {}))


# ------------------------------------------------------------------------------- decoders

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
ANY_JSON = st.one_of(JSON, *[mutated(seeds(p)) for p in ("ws_", "rest_")])


@FUZZ
@given(inputs(seeds("ws_")))
def test_private_frames_raise_only_frame_error(fuzz_counts: Counter[str], raw: bytes) -> None:
    fuzz_counts["bybit ws private frame"] += 1
    try:
        frame = normalize.parse(raw)
        out = normalize.private_frame(frame, account="a", source="s", produced_at=NOW)
    except FrameError:
        return
    for event in out.events:
        encode(event)  # what was accepted is publishable


@FUZZ
@given(inputs(seeds("ws_tickers")))
def test_public_ticker_frames_raise_only_frame_error(fuzz_counts: Counter[str], raw: bytes) -> None:
    fuzz_counts["bybit ws public ticker frame"] += 1
    try:
        ticker = normalize.ticker_frame(normalize.parse(raw))
    except FrameError:
        return
    with contextlib.suppress(ROW_ERRORS):
        normalize.mark_price_event(
            ticker.symbol, ticker.data, ts_ms=ticker.ts_ms, ticks=1, produced_at=NOW, source="s"
        )


def _envelopes() -> list[Any]:
    rows = [r for doc in seeds("rest_") for r in doc.get("result", {}).get("list", [])]
    return [
        {"retCode": 0, "retMsg": "OK", "result": {"list": rows, "nextPageCursor": "c"}, "time": 1},
        {"retCode": 10004, "retMsg": "error sign!", "result": {}, "time": 1700000000000},
        *seeds("rest_"),
    ]


@FUZZ
@given(st.one_of(st.binary(max_size=64), JSON.map(dumps), mutated(_envelopes()).map(dumps)))
def test_rest_bodies_raise_only_bybit_error(fuzz_counts: Counter[str], body: bytes) -> None:
    fuzz_counts["bybit rest body"] += 1
    try:
        code, _, response = decode_body("/v5/x", body, now_ms=1)
    except BybitError:
        return
    assert isinstance(code, int)
    assert isinstance(response.result, dict)
    assert isinstance(response.time_ms, int)


_BUILDERS = {
    "position": normalize.position_event,
    "order": normalize.order_event,
    "execution": normalize.execution_event,
}


@FUZZ
@given(st.sampled_from(sorted(_BUILDERS)), st.lists(ANY_JSON, max_size=4))
def test_rest_rows_are_reported_bad_never_raised(
    fuzz_counts: Counter[str], kind: str, rows: list[Any]
) -> None:
    fuzz_counts["bybit rest rows (position, order, execution)"] += 1
    meta = normalize.Meta("a", "s", NOW, "c")
    events, bad = normalize.snapshot_events(rows, _BUILDERS[kind], meta)
    assert len(events) + len(bad) <= len(rows)


@FUZZ
@given(ANY_JSON)
def test_wallet_rows_raise_only_row_errors(fuzz_counts: Counter[str], row: Any) -> None:
    fuzz_counts["bybit wallet row"] += 1
    meta = normalize.Meta("a", "s", NOW, "c")
    with contextlib.suppress(ROW_ERRORS):
        normalize.wallet_event(row, meta, time_ms=1, identity="i")


@FUZZ
@given(st.lists(ANY_JSON, max_size=4))
def test_risk_limit_tables_raise_only_row_errors(
    fuzz_counts: Counter[str], rows: list[Any]
) -> None:
    fuzz_counts["bybit risk-limit table"] += 1
    with contextlib.suppress(ROW_ERRORS):
        normalize.risk_limit_table("BTCUSDT", rows, produced_at=NOW, source="s")


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=lambda s: s.name)
def test_topic_records_raise_only_validation_error(
    fuzz_counts: Counter[str], spec: TopicSpec
) -> None:
    docs = [schema_seed(m.__name__) for m in _models(spec.value)]

    @FUZZ
    @given(inputs(docs))
    def decode(raw: bytes) -> None:
        fuzz_counts[f"topic {spec.name}"] += 1
        with contextlib.suppress(ValidationError):
            spec.decode(raw)

    decode()
