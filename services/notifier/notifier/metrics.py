"""Prometheus metrics of the notifier (prefix ``notifier_``); labels never hold secrets."""

from __future__ import annotations

from riskwatch_common import metrics

NOTIFICATIONS = metrics.counter(
    "notifier_notifications_total",
    "Notifications by channel, kind and outcome (delivered, failed, duplicate)",
    ["channel", "kind", "outcome"],
)
SEND_ATTEMPTS = metrics.counter(
    "notifier_send_attempts_total",
    "Single send attempts by channel and result (ok, rate_limited, server_error, ...)",
    ["channel", "result"],
)
DELIVERY_SECONDS = metrics.histogram(
    "notifier_delivery_seconds",
    "From receiving the event to the channel's final outcome",
    ["channel"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
ALERT_TO_DELIVERY_SECONDS = metrics.histogram(
    "notifier_alert_to_delivery_seconds",
    "From the alert's transition (its occurred_at) to the channel accepting it",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
QUEUE_DEPTH = metrics.gauge(
    "notifier_queue_depth", "Notifications waiting for a channel", ["channel"]
)
CHANNEL_ENABLED = metrics.gauge(
    "notifier_channel_enabled", "1 when the channel is configured and on", ["channel"]
)
BOT_COMMANDS = metrics.counter(
    "notifier_bot_commands_total",
    "Telegram bot commands by outcome (answered, refused: not from a configured chat)",
    ["outcome"],
)
API_REQUESTS = metrics.counter(
    "notifier_api_requests_total",
    "Silence API requests by outcome (ok, unauthorized, bad_request)",
    ["outcome"],
)
SILENCED = metrics.counter(
    "notifier_silenced_total",
    "Notifications kept off a phone channel by a silence (still written to the file)",
    ["channel"],
)
DEADMAN_PINGS = metrics.counter(
    "notifier_deadman_pings_total",
    "Pings of the external dead-man's switch (sent only while every group is fresh)",
    ["result"],
)
STALLED_GROUPS = metrics.gauge(
    "notifier_stalled_groups", "Ingestor groups whose heartbeats stopped reaching the notifier"
)
