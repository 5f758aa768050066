"""Prometheus metrics of the risk processor (prefix ``risk_processor_``).

The ``account_*`` gauges carry an ``account`` label: the number of accounts is bounded by the
deployment, and "which account" is what the dashboard's risk panels are for.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from risk_processor.engine import AccountExposure
from riskwatch_common import metrics as m

_EVAL_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


@dataclass(frozen=True, slots=True)
class Metrics:
    events_processed: Counter
    evaluation_seconds: Histogram
    batch_seconds: Histogram
    snapshots_emitted: Counter
    alerts: Counter
    input_to_alert_seconds: Histogram
    stale_dropped: Counter
    risk_id_disagreements: Counter
    dead_lettered: Counter
    reevaluations_requested: Counter
    platform_changes: Counter
    replayed_alerts_suppressed: Counter
    evaluation_failures: Counter
    alert_publish_retries: Counter
    dead_letter_retries: Counter
    heartbeats_forwarded: Counter
    accounts: Gauge
    input_lag_seconds: Histogram
    account_net_exposure: Gauge
    account_gross_exposure: Gauge
    account_mm_rate: Gauge
    account_liquidation_distance: Gauge
    account_risk_level: Gauge
    last_evaluation: Gauge

    def record_exposure(self, exposure: AccountExposure, at_s: float) -> None:
        """The dashboard's view of one account after an evaluation at ``at_s`` (epoch s)."""
        account = exposure.profile.account
        self.account_net_exposure.labels(account).set(float(exposure.net))
        self.account_gross_exposure.labels(account).set(float(exposure.gross))
        rate = exposure.margin_ratio
        # NaN, not 0: "unknown" must not draw as "no margin used"
        self.account_mm_rate.labels(account).set(float(rate) if rate is not None else float("nan"))
        distances = [
            p.liq_distance_pct for p in exposure.positions if p.liq_distance_pct is not None
        ]
        self.account_liquidation_distance.labels(account).set(
            float(min(distances)) if distances else float("nan")
        )
        self.account_risk_level.labels(account).set(int(exposure.risk_level))
        self.last_evaluation.set(at_s)


def build() -> Metrics:
    """Get-or-create every collector (tests build several processors in one process)."""
    p = "risk_processor"
    return Metrics(
        events_processed=m.counter(
            f"{p}_events_processed_total", "Input records handled, by event type", ["type"]
        ),
        evaluation_seconds=m.histogram(
            f"{p}_evaluation_seconds",
            "Engine time of one account or portfolio evaluation",
            ["scope"],
            buckets=_EVAL_BUCKETS,
        ),
        batch_seconds=m.histogram(
            f"{p}_batch_seconds", "Time to handle one batch of records", ["agent"]
        ),
        snapshots_emitted=m.counter(
            f"{p}_exposure_snapshots_emitted_total", "Exposure snapshots published", ["scope"]
        ),
        alerts=m.counter(
            f"{p}_alerts_total", "Alert transitions published", ["rule", "transition"]
        ),
        input_to_alert_seconds=m.histogram(
            f"{p}_input_to_alert_seconds",
            "From the causing input's produced_at to publishing the alert",
            [],
        ),
        stale_dropped=m.counter(
            f"{p}_stale_updates_dropped_total",
            "Updates dropped as duplicates or older than the state held",
            ["type"],
        ),
        risk_id_disagreements=m.counter(
            f"{p}_risk_id_disagreements_total",
            "Positions whose Bybit riskId differs from the tier the engine computed",
        ),
        dead_lettered=m.counter(
            f"{p}_records_dead_lettered_total",
            "Input records sent to a dead-letter topic",
            ["topic", "reason"],
        ),
        reevaluations_requested=m.counter(
            f"{p}_reevaluations_requested_total",
            "Re-evaluations requested for an account, by reason",
            ["reason"],
        ),
        platform_changes=m.counter(
            f"{p}_platform_changes_detected_total",
            "Tier-table changes found affecting an account",
        ),
        replayed_alerts_suppressed=m.counter(
            f"{p}_replayed_alerts_suppressed_total",
            "Transitions found already published (replay after a crash) and not re-sent",
        ),
        evaluation_failures=m.counter(
            f"{p}_evaluation_failures_total", "Evaluations that raised", ["scope"]
        ),
        alert_publish_retries=m.counter(
            f"{p}_alert_publish_retries_total",
            "Alert transitions sent again because their first send failed",
        ),
        dead_letter_retries=m.counter(
            f"{p}_dead_letter_retries_total",
            "Dead letters sent again because their first send failed",
        ),
        heartbeats_forwarded=m.counter(
            f"{p}_heartbeats_forwarded_total",
            "Pipeline heartbeats forwarded to the heartbeats topic",
        ),
        accounts=m.gauge(f"{p}_accounts", "Accounts held by this worker"),
        input_lag_seconds=m.histogram(
            f"{p}_input_lag_seconds",
            "Age (now - produced_at) of the newest account event when its batch is handled",
            [],
        ),
        account_net_exposure=m.gauge(
            f"{p}_account_net_exposure_usd",
            "Net exposure (long - short) of an account",
            ["account"],
        ),
        account_gross_exposure=m.gauge(
            f"{p}_account_gross_exposure_usd",
            "Gross exposure (long + short) of an account",
            ["account"],
        ),
        account_mm_rate=m.gauge(
            f"{p}_account_mm_rate",
            "Account maintenance-margin rate (fraction; NaN when unknown, e.g. isolated margin)",
            ["account"],
        ),
        account_liquidation_distance=m.gauge(
            f"{p}_account_liquidation_distance_percent",
            "Closest position's distance from mark to liquidation price, percent (NaN: none)",
            ["account"],
        ),
        account_risk_level=m.gauge(
            f"{p}_account_risk_level", "Account risk level: 1 low, 2 medium, 3 high", ["account"]
        ),
        last_evaluation=m.gauge(
            f"{p}_last_evaluation_timestamp_seconds",
            "When an account was last evaluated (epoch seconds); the staleness rule reads it",
        ),
    )
