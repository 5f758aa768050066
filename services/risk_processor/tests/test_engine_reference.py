"""The engine's hand-inlined fast paths against a readable reference implementation.

``engine.exposure._fresh_position`` inlines the tier lookups, the maintenance margin and
the liquidation distance for speed, and ``_at_mark`` re-uses a previous exposure when only
the mark moved. ``reference_position`` below computes the same figures the slow, obvious
way, from the engine's public functions, one call per figure; the property tests prove
the fast paths equal to it on generated positions, tables and marks. (The engine folder
belongs to the engine's owners; the reference lives with the tests.)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from risk_processor.engine import (
    Position,
    Side,
    TierTable,
    isolated_liq_price,
    liq_distance_pct,
    load_tier_table,
    maintenance_margin_for_value,
    max_leverage_for_value,
    max_position_value_at_leverage,
    tier_for_value,
    unrealized_pnl,
)
from risk_processor.engine.exposure import PositionExposure, _at_mark, _fresh_position
from risk_processor.engine.types import Tier

D = Decimal
ZERO = D(0)


@dataclass(frozen=True)
class Figures:
    notional: Decimal
    unrealized_pnl: Decimal
    risk_score: Decimal
    tier: Tier | None
    leverage_cap: Decimal | None
    max_leverage_allowing: Decimal | None
    maintenance_margin: Decimal | None
    liq_price: Decimal | None
    liq_distance_pct: Decimal | None


def reference_position(
    p: Position, mark: Decimal, effective: Decimal, table: TierTable | None, isolated: bool
) -> Figures:
    """A position's exposure figures, the readable way (docs/product.md's definitions)."""
    assert p.side is not None
    notional = p.size * mark
    pnl = unrealized_pnl(p.side, p.size, p.entry_price, mark)
    risk_score = notional * p.leverage if p.leverage else notional
    tier = cap = max_lev = mm = None
    if table is not None:
        tier = tier_for_value(table, effective).tier  # the tier the effective value is in
        max_lev = max_leverage_for_value(table, effective)
        if p.leverage:
            cap = max_position_value_at_leverage(table, p.leverage)
        mm = maintenance_margin_for_value(table, notional)
    liq = p.liq_price or None
    if liq is None and isolated and p.leverage and tier is not None:
        liq = isolated_liq_price(
            p.side, p.size, p.entry_price, p.leverage, tier.mmr, tier.mm_deduction
        )
    distance = None
    if liq is not None and liq > ZERO and mark > ZERO:
        distance = liq_distance_pct(p.side, mark, liq)
    return Figures(notional, pnl, risk_score, tier, cap, max_lev, mm, liq, distance)


def figures(pe: PositionExposure) -> Figures:
    return Figures(
        pe.notional,
        pe.unrealized_pnl,
        pe.risk_score,
        pe.tier,
        pe.leverage_cap,
        pe.max_leverage_allowing,
        pe.maintenance_margin,
        pe.liq_price,
        pe.liq_distance_pct,
    )


@st.composite
def tier_tables(draw: st.DrawFn) -> TierTable:
    """1-5 tiers with rising limits and maintenance rates, falling leverage."""
    n = draw(st.integers(1, 5))
    limit = draw(st.integers(10_000, 2_000_000))
    mmr = D(draw(st.integers(5, 50))) / 1000
    lev = draw(st.integers(20, 100))
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": i + 1,
                "riskLimitValue": str(limit),
                "maintenanceMargin": str(mmr),
                "initialMargin": str(D(1) / D(lev)),
                "maxLeverage": str(lev),
                "mmDeduction": "",
            }
        )
        limit += draw(st.integers(10_000, 2_000_000))
        mmr += D(draw(st.integers(1, 20))) / 1000
        lev = max(1, lev - draw(st.integers(1, 15)))
    return load_tier_table("BTCUSDT", rows).table


money = st.decimals(min_value=D("0.01"), max_value=D(200_000), places=2)
sizes = st.decimals(min_value=D("0.001"), max_value=D(500), places=3)
leverages = st.none() | st.decimals(min_value=1, max_value=125, places=1)


@st.composite
def positions(draw: st.DrawFn) -> Position:
    return Position(
        account="main",
        symbol="BTCUSDT",
        position_idx=0,
        side=draw(st.sampled_from([Side.BUY, Side.SELL])),
        size=draw(sizes),
        entry_price=draw(money),
        leverage=draw(leverages),
        liq_price=draw(st.none() | st.just(ZERO) | money),
    )


@settings(max_examples=400, deadline=None)
@given(
    p=positions(),
    mark=money,
    extra=st.decimals(min_value=0, max_value=D(5_000_000), places=2),
    table=st.none() | tier_tables(),
    isolated=st.booleans(),
)
def test_fresh_position_fast_path_equals_the_reference(
    p: Position, mark: Decimal, extra: Decimal, table: TierTable | None, isolated: bool
) -> None:
    effective = p.size * mark + extra  # position plus open orders on its side
    fast = _fresh_position(p, mark, effective, table, isolated)
    assert figures(fast) == reference_position(p, mark, effective, table, isolated)


@settings(max_examples=400, deadline=None)
@given(
    p=positions(),
    first=money,
    moved=money,
    extra=st.decimals(min_value=0, max_value=D(5_000_000), places=2),
    table=st.none() | tier_tables(),
    isolated=st.booleans(),
)
def test_mark_only_fast_path_equals_the_reference_at_the_new_mark(
    p: Position,
    first: Decimal,
    moved: Decimal,
    extra: Decimal,
    table: TierTable | None,
    isolated: bool,
) -> None:
    # _at_mark re-uses the tiers of an exposure computed at another mark with the same
    # effective value: the reference at the new mark with that effective value must agree.
    effective = p.size * first + extra
    old = _fresh_position(p, first, effective, table, isolated)
    fast = _at_mark(old, p, moved, effective)
    assert figures(fast) == reference_position(p, moved, effective, table, isolated)
