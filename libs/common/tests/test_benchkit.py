from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from riskwatch_common.benchkit import hop_breakdown, percentile, trace_alerts
from riskwatch_common.contracts import AlertTransition, RiskAlertChanged, Severity


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


def _alert(event_id: str, corr: str, produced: float, transition: str = "raised") -> Any:
    at = datetime.fromtimestamp(produced, UTC)
    return RiskAlertChanged(
        event_id=event_id,
        occurred_at=at,
        produced_at=at,
        source="risk-processor/0",
        correlation_id=corr,
        alert_id=f"a-{corr}",
        transition=AlertTransition(transition),
        account="main",
        rule="net_exposure_usd",
        subject="account",
        severity=Severity.WARNING,
        reason="r",
    )


def test_trace_alerts_follows_the_correlation_id_from_frame_to_delivery() -> None:
    alerts = [
        _alert("e1", "frame-1", 10.030),
        _alert("e1", "frame-1", 10.030),  # redelivered record: one alert
        _alert("e2", "frame-2", 11.030, "resolved"),
        _alert("e3", "frame-3", 12.030),  # never delivered
        _alert("e4", "frame-4", 13.030),  # delivered, its account event unknown
        _alert("e5", "frame-0", 5.030),  # caused before the window
        _alert("e6", "tickers.BTCUSDT@1", 11.5),  # caused by no frame
    ]
    traced = trace_alerts(
        alerts,
        frame_times={
            "frame-0": 5.0,
            "frame-1": 10.0,
            "frame-2": 11.0,
            "frame-3": 12.0,
            "frame-4": 13.0,
        },
        event_times={"frame-0": 5.01, "frame-1": 10.01, "frame-2": 11.01, "frame-3": 12.01},
        deliveries=[
            (10.09, "e1"),  # a second delivery of the same (another record): the first counts
            (10.05, "e1"),
            (11.06, "e2"),
            (13.05, "e4"),
            (5.05, "e5"),
            (11.6, "e6"),
            (12.5, "someone else's alert"),
        ],
        window=(9.0, 14.0),
    )
    assert traced.traces == [
        pytest.approx((10.0, 10.01, 10.03, 10.05)),
        pytest.approx((11.0, 11.01, 11.03, 11.06)),
    ]
    assert traced.transitions == {"raised": 1, "resolved": 1}
    assert traced.undelivered == 1
    assert traced.untraced == 1
