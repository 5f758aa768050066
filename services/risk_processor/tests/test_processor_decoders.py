"""Every decoder of the processor rejects malformed input with its documented error.

Internal records (re-evaluate requests, account exposures) and the tables' changelog
codecs raise ``ValueError`` (pydantic's ``ValidationError`` is one) on anything they
cannot read, never ``KeyError``/``AttributeError``/``IndexError`` from deep inside, which
escaped the agents' ``except`` lists and stopped the worker (issue 10).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk_processor import state
from risk_processor.agents.portfolio import decode_summary
from risk_processor.faust_codecs import JsonValue
from riskwatch_common.topics import (
    ACCOUNT_EVENTS,
    MARK_PRICES,
    REEVALUATE,
    RISK_LIMITS,
    TopicSpec,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

# Keys the real documents have, so the generated ones get past the first lookups.
EXPOSURE_KEYS = ["profile", "positions", "net", "gross", "long", "short", "drivers", "account"]
exposure_like = st.dictionaries(st.sampled_from(EXPOSURE_KEYS), json_values, max_size=8)

CODECS = {
    "positions": (state.positions_to_json, state.positions_from_json),
    "orders": (state.orders_to_json, state.orders_from_json),
    "wallets": (state.wallet_to_json, state.wallet_from_json),
    "risk": (state.risk_to_json, state.risk_from_json),
    "portfolio": (state.portfolio_value_to_json, state.portfolio_value_from_json),
    "marks": (state.mark_to_json, state.mark_from_json),
    "tiers": (state.tiers_to_json, state.tiers_from_json),
}


@settings(max_examples=300, deadline=None)
@given(doc=json_values | st.fixed_dictionaries({"account": json_values, "reason": json_values}))
def test_reevaluate_request_decoder_raises_only_value_error(doc: Any) -> None:
    with contextlib.suppress(ValueError):
        REEVALUATE.decode(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(
    doc=json_values
    | st.fixed_dictionaries(
        {
            "account": st.text(min_size=1, max_size=5),
            "at": st.integers(0, 2**40),
            "corr": st.text(max_size=5),
            "produced": st.integers(0, 2**40),
            "e": exposure_like,
        }
    )
)
def test_account_exposure_decoder_raises_only_value_error(doc: Any) -> None:
    with contextlib.suppress(ValueError):
        decode_summary(json.dumps(doc).encode())


@pytest.mark.parametrize("table", sorted(CODECS))
def test_changelog_codec_raises_only_value_error_on_malformed_values(table: str) -> None:
    codec = JsonValue(*CODECS[table])

    @settings(max_examples=300, deadline=None)
    @given(doc=json_values | st.dictionaries(st.sampled_from(EXPOSURE_KEYS), json_values))
    def check(doc: Any) -> None:
        with contextlib.suppress(ValueError):
            codec.loads(json.dumps(doc).encode())

    check()


def test_changelog_codec_reports_what_was_wrong() -> None:
    codec = JsonValue(state.mark_to_json, state.mark_from_json)
    with pytest.raises(ValueError, match="malformed table value"):
        codec.loads(b"[]")
    with pytest.raises(ValueError, match="invalid literal"):
        codec.loads(b"not json")


@pytest.mark.parametrize("spec", [ACCOUNT_EVENTS, MARK_PRICES, RISK_LIMITS], ids=lambda s: s.name)
def test_input_topic_decoders_raise_only_value_error(spec: TopicSpec) -> None:
    @settings(max_examples=200, deadline=None)
    @given(
        doc=json_values
        | st.fixed_dictionaries(
            {
                "event_type": st.sampled_from(
                    [
                        "PositionUpdated",
                        "OrderUpdated",
                        "WalletUpdated",
                        "PipelineHeartbeat",
                        "MarkPriceUpdated",
                        "x",
                    ]
                )
            },
            optional={k: json_values for k in ("account", "symbol", "event_id", "size", "tiers")},
        ),
        raw=st.binary(max_size=64),
    )
    def check(doc: Any, raw: bytes) -> None:
        for value in (json.dumps(doc).encode(), raw):
            with contextlib.suppress(ValueError):
                spec.decode(value)

    check()
