"""The ingestor's Prometheus metrics (prefix ``ingestor_``).

Labels stay low-cardinality except ``account`` on the per-account gauges: the number of
accounts per process is bounded by its group, and "which account went quiet" is the
question those gauges exist to answer.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Histogram

from riskwatch_common import metrics as m

FRAMES_RECEIVED = m.counter(
    "ingestor_frames_received_total",
    "WebSocket data frames received, by topic (position, order, execution, wallet, tickers)",
    ["topic"],
)
ROWS_DROPPED = m.counter(
    "ingestor_rows_dropped_total",
    "Rows not published: stale (older seq/updatedTime), duplicate, or other category",
    ["kind", "reason"],
)
DEAD_LETTERED = m.counter(
    "ingestor_frames_dead_lettered_total",
    "Frames sent to the dead-letter topic, by reason",
    ["reason"],
)
RECONNECTS = m.counter(
    "ingestor_reconnects_total",
    "WebSocket reconnect attempts after a lost or failed link, by link (private, public)",
    ["link"],
)
LINK_LOST = m.counter(
    "ingestor_links_lost_total",
    "WebSocket links lost, by link and cause (closed, dead, error)",
    ["link", "cause"],
)
RESYNCS = m.counter(
    "ingestor_resyncs_total",
    "REST resyncs merged with the stream, by trigger (connect, drift) and outcome",
    ["trigger", "outcome"],
)
RESYNC_CORRECTIONS = m.counter(
    "ingestor_resync_corrections_total",
    "State a resync found changed while the stream was down (orders closed, positions flat)",
    ["kind"],
)
EXECUTIONS_BACKFILLED = m.counter(
    "ingestor_executions_backfilled_total",
    "Fills the stream had not delivered, read from /v5/execution/list by a resync",
)
EXECUTION_BACKFILLS_TRUNCATED = m.counter(
    "ingestor_execution_backfills_truncated_total",
    "Backfills that found more fills than one resync reads; the oldest were not read",
)
SECONDS_SINCE_MESSAGE = m.gauge(
    "ingestor_seconds_since_last_message",
    "Seconds since the last message (data or pong) on an account's private link",
    ["account"],
)
PUBLISH_LATENCY = m.histogram(
    "ingestor_exchange_to_publish_seconds",
    "From the exchange's frame time to the broker's acknowledgement",
    ["kind"],
)
PUBLISHED = m.counter(
    "ingestor_events_published_total", "Events acknowledged by the broker, by event type", ["type"]
)
UNPUBLISHABLE = m.counter(
    "ingestor_records_unpublishable_total",
    "Records the broker can never take (too large, invalid), dead-lettered instead",
    ["error"],
)
PUBLISH_RETRIES = m.counter(
    "ingestor_publish_retries_total", "Records re-sent after the broker failed to take them"
)
PUBLISH_BATCH = m.histogram(
    "ingestor_publish_batch_records",
    "Records per publish batch (send many, flush once)",
    [],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
QUEUE_DEPTH = m.gauge("ingestor_publish_queue_depth", "Items waiting for the Kafka publisher")
QUEUE_BLOCKED_SECONDS = m.counter(
    "ingestor_publish_queue_blocked_seconds_total",
    "Time readers spent waiting for room in the full publish queue (backpressure)",
)
REST_CALLS = m.counter(
    "ingestor_rest_calls_total",
    "Bybit REST calls, by endpoint and outcome",
    ["endpoint", "outcome"],
)
RATE_LIMIT_WAITS = m.counter(
    "ingestor_rest_rate_limit_waits_total",
    "Times a REST call waited for a rate limit, by reason (ip_budget, uid_10006, uid_low)",
    ["reason"],
)
RATE_LIMIT_WAIT_SECONDS = m.counter(
    "ingestor_rest_rate_limit_wait_seconds_total",
    "Seconds spent waiting for rate limits",
    ["reason"],
)
RATE_LIMIT_REMAINING = m.gauge(
    "ingestor_rest_limit_remaining",
    "Last X-Bapi-Limit-Status (requests left in the per-UID window), by endpoint",
    ["endpoint"],
)
REST_IP_BAN_SECONDS = m.gauge(
    "ingestor_rest_ip_ban_seconds",
    "Seconds left of a Bybit IP ban (HTTP 403); no REST call goes out until it is over",
)
ACCOUNTS_BY_STATUS = m.gauge(
    "ingestor_accounts", "Accounts of this process by link status", ["status"]
)
AUTH_FAILURES = m.counter(
    "ingestor_auth_failures_total", "Rejected credentials (REST 10003/10004, WS auth)", ["where"]
)
POSITION_MODE_MISMATCHES = m.counter(
    "ingestor_position_mode_mismatches_total",
    "Accounts whose positionIdx contradicts the configured position mode (once per account)",
)
TICKS_COALESCED = m.counter(
    "ingestor_ticks_coalesced_total", "Ticker updates folded into a later mark-price record"
)
SYMBOLS_SUBSCRIBED = m.gauge(
    "ingestor_symbols_subscribed", "Symbols on the public ticker connection"
)
SUBSCRIPTIONS_REFUSED = m.counter(
    "ingestor_subscriptions_refused_total",
    "Public (un)subscribe requests the exchange refused (e.g. an unknown symbol)",
)
RISK_LIMIT_FETCHES = m.counter(
    "ingestor_risk_limit_fetches_total", "Risk-limit table fetches, by outcome", ["outcome"]
)
RISK_LIMIT_MISMATCHES = m.counter(
    "ingestor_risk_limit_deduction_mismatches_total",
    "Tiers whose published mmDeduction differs from the recomputed one",
    ["symbol"],
)
RISK_LIMIT_PERCENT_UNITS = m.counter(
    "ingestor_risk_limit_percent_tables_total",
    "Tier tables that came in percent and were converted to fractions",
)


# Per-frame paths use these: ``labels()`` costs a lock and a tuple lookup per call, which
# shows up at thousands of frames per second; the labelled children never change.


@functools.cache
def frames_received(topic: str) -> Counter:
    return FRAMES_RECEIVED.labels(topic)


@functools.cache
def rows_dropped(kind: str, reason: str) -> Counter:
    return ROWS_DROPPED.labels(kind, reason)


@functools.cache
def published(event_type: str) -> Counter:
    return PUBLISHED.labels(event_type)


@functools.cache
def publish_latency(kind: str) -> Histogram:
    return PUBLISH_LATENCY.labels(kind)
