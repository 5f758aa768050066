"""Prometheus metrics of the risk processor (prefix ``risk_processor_``), declared as every
service declares them: module-level get-or-create collectors (``riskwatch_common.metrics``).

The ``account_*`` gauges carry an ``account`` label: the number of accounts is bounded by the
deployment, and "which account" is what the dashboard's risk panels are for.
"""

from __future__ import annotations

from risk_processor.engine import AccountExposure
from riskwatch_common import metrics as m

_P = "risk_processor"
_EVAL_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)

EVENTS_PROCESSED = m.counter(
    f"{_P}_events_processed_total", "Input records handled, by event type", ["type"]
)
EVALUATION_SECONDS = m.histogram(
    f"{_P}_evaluation_seconds",
    "Engine time of one account or portfolio evaluation",
    ["scope"],
    buckets=_EVAL_BUCKETS,
)
BATCH_SECONDS = m.histogram(f"{_P}_batch_seconds", "Time to handle one batch of records", ["agent"])
SNAPSHOTS_EMITTED = m.counter(
    f"{_P}_exposure_snapshots_emitted_total", "Exposure snapshots published", ["scope"]
)
ALERTS = m.counter(f"{_P}_alerts_total", "Alert transitions published", ["rule", "transition"])
INPUT_TO_ALERT_SECONDS = m.histogram(
    f"{_P}_input_to_alert_seconds",
    "From the causing input's produced_at to publishing the alert",
    [],
)
STALE_DROPPED = m.counter(
    f"{_P}_stale_updates_dropped_total",
    "Updates dropped as duplicates or older than the state held",
    ["type"],
)
RISK_ID_DISAGREEMENTS = m.counter(
    f"{_P}_risk_id_disagreements_total",
    "Positions whose Bybit riskId differs from the tier the engine computed",
)
DEAD_LETTERED = m.counter(
    f"{_P}_records_dead_lettered_total",
    "Input records sent to a dead-letter topic",
    ["topic", "reason"],
)
REEVALUATIONS_REQUESTED = m.counter(
    f"{_P}_reevaluations_requested_total",
    "Re-evaluations requested for an account, by reason",
    ["reason"],
)
PLATFORM_CHANGES = m.counter(
    f"{_P}_platform_changes_detected_total",
    "Tier-table changes found affecting an account",
)
REPLAYED_ALERTS_SUPPRESSED = m.counter(
    f"{_P}_replayed_alerts_suppressed_total",
    "Transitions found already published (replay after a crash) and not re-sent",
)
EVALUATION_FAILURES = m.counter(
    f"{_P}_evaluation_failures_total", "Evaluations that raised", ["scope"]
)
ALERT_PUBLISH_RETRIES = m.counter(
    f"{_P}_alert_publish_retries_total",
    "Alert transitions sent again because their first send failed",
)
DEAD_LETTER_RETRIES = m.counter(
    f"{_P}_dead_letter_retries_total",
    "Dead letters sent again because their first send failed",
)
HEARTBEATS_FORWARDED = m.counter(
    f"{_P}_heartbeats_forwarded_total",
    "Pipeline heartbeats forwarded to the heartbeats topic",
)
ACCOUNTS = m.gauge(f"{_P}_accounts", "Accounts held by this worker")
INPUT_LAG_SECONDS = m.histogram(
    f"{_P}_input_lag_seconds",
    "Age (now - produced_at) of the newest account event when its batch is handled",
    [],
)
ACCOUNT_NET_EXPOSURE = m.gauge(
    f"{_P}_account_net_exposure_usd",
    "Net exposure (long - short) of an account",
    ["account"],
)
ACCOUNT_GROSS_EXPOSURE = m.gauge(
    f"{_P}_account_gross_exposure_usd",
    "Gross exposure (long + short) of an account",
    ["account"],
)
ACCOUNT_MM_RATE = m.gauge(
    f"{_P}_account_mm_rate",
    "Account maintenance-margin rate (fraction; NaN when unknown, e.g. isolated margin)",
    ["account"],
)
ACCOUNT_LIQUIDATION_DISTANCE = m.gauge(
    f"{_P}_account_liquidation_distance_percent",
    "Closest position's distance from mark to liquidation price, percent (NaN: none)",
    ["account"],
)
ACCOUNT_RISK_LEVEL = m.gauge(
    f"{_P}_account_risk_level", "Account risk level: 1 low, 2 medium, 3 high", ["account"]
)
LAST_EVALUATION = m.gauge(
    f"{_P}_last_evaluation_timestamp_seconds",
    "When an account was last evaluated (epoch seconds); the staleness rule reads it",
)


def record_exposure(exposure: AccountExposure, at_s: float) -> None:
    """The dashboard's view of one account after an evaluation at ``at_s`` (epoch s)."""
    account = exposure.profile.account
    ACCOUNT_NET_EXPOSURE.labels(account).set(float(exposure.net))
    ACCOUNT_GROSS_EXPOSURE.labels(account).set(float(exposure.gross))
    rate = exposure.margin_ratio
    # NaN, not 0: "unknown" must not draw as "no margin used"
    ACCOUNT_MM_RATE.labels(account).set(float(rate) if rate is not None else float("nan"))
    distances = [p.liq_distance_pct for p in exposure.positions if p.liq_distance_pct is not None]
    ACCOUNT_LIQUIDATION_DISTANCE.labels(account).set(
        float(min(distances)) if distances else float("nan")
    )
    ACCOUNT_RISK_LEVEL.labels(account).set(int(exposure.risk_level))
    LAST_EVALUATION.set(at_s)
