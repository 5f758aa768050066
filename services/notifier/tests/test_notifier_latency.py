"""The alert-to-delivery histogram the dashboard's latency panel reads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from notifier.messages import from_alert, from_analysis


def _count_and_sum(channel: str) -> tuple[float, float]:
    labels = {"channel": channel}
    count = REGISTRY.get_sample_value("notifier_alert_to_delivery_seconds_count", labels) or 0.0
    total = REGISTRY.get_sample_value("notifier_alert_to_delivery_seconds_sum", labels) or 0.0
    return count, total


async def test_delivered_alert_is_timed_from_its_transition_and_commentary_is_not(
    tmp_path: Path,
    slack: Any,
    make_stack: Any,
    settings_for: Any,
    make_alert: Any,
    make_analysis: Any,
) -> None:
    stack = await make_stack(settings_for(tmp_path, slack=slack))
    alert = make_alert()  # occurred_at is a fixed moment in the past
    before = _count_and_sum("slack")

    await stack.send(from_alert(alert))
    await stack.send(from_analysis(make_analysis(alert)))

    count, total = _count_and_sum("slack")
    assert count - before[0] == 1  # the alert only, not the commentary
    least = (datetime.now(UTC) - alert.occurred_at).total_seconds()
    assert least - 5 <= total - before[1] <= least
