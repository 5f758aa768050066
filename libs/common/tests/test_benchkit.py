from __future__ import annotations

import math

import pytest

from riskwatch_common.benchkit import hop_breakdown, percentile


def test_percentile_by_rank_and_nan_for_no_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert math.isnan(percentile([], 0.5))


def test_hop_breakdown_gives_each_hop_its_figures_and_share_of_the_mean_total() -> None:
    # two hops; stamps in seconds: hop a lasts 10 / 30 ms, hop b 30 / 10 ms
    traces = [(100.0, 100.010, 100.040), (200.0, 200.030, 200.040)]
    a, b, total = hop_breakdown(["a", "b"], traces)
    assert (a.name, b.name, total.name) == ("a", "b", "total")
    assert a.max_ms == pytest.approx(30)
    assert a.mean_ms == pytest.approx(20)
    assert b.p50_ms == pytest.approx(30)  # by rank: the upper of two
    assert total.p50_ms == pytest.approx(40)
    assert total.mean_ms == pytest.approx(40)
    assert a.share + b.share == pytest.approx(1)
    assert total.share == pytest.approx(1)


def test_hop_breakdown_of_no_traces_is_nan_not_an_error() -> None:
    rows = hop_breakdown(["a"], [])
    assert [r.name for r in rows] == ["a", "total"]
    assert all(math.isnan(r.p99_ms) for r in rows)


def test_hop_breakdown_refuses_a_trace_with_the_wrong_number_of_stamps() -> None:
    with pytest.raises(ValueError, match="3 expected"):
        hop_breakdown(["a", "b"], [(1.0, 2.0)])
