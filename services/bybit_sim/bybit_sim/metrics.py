"""The simulator's Prometheus metrics (prefix ``bybit_sim_``).

They describe what the sim did to its clients (frames produced, faults applied, refusals),
which is what a demo or a soak test wants to line up against the ingestor's own counters.
"""

from __future__ import annotations

from riskwatch_common import metrics as m

FRAMES_PRODUCED = m.counter(
    "bybit_sim_frames_produced_total",
    "Private frames produced by the exchange, by topic and delivery fault (none if clean)",
    ["topic", "fault"],
)
TICKER_MESSAGES = m.counter(
    "bybit_sim_ticker_messages_total",
    "Public tickers messages queued to sockets, by type (snapshot, delta)",
    ["type"],
)
WS_CONNECTIONS = m.gauge(
    "bybit_sim_ws_connections",
    "Open WebSocket connections, by stream (private, public)",
    ["stream"],
)
WS_AUTHS = m.counter(
    "bybit_sim_ws_auths_total",
    "Private WebSocket auth attempts, by outcome (ok or the retCode of the refusal)",
    ["outcome"],
)
REST_REQUESTS = m.counter(
    "bybit_sim_rest_requests_total",
    "REST requests answered, by endpoint and retCode",
    ["endpoint", "ret_code"],
)
REST_IP_REFUSED = m.counter(
    "bybit_sim_rest_ip_refused_total",
    "REST requests refused with HTTP 403 access too frequent, by cause (ip_limit, ip_ban_fault)",
    ["cause"],
)
REST_IP_BANS = m.counter(
    "bybit_sim_rest_ip_bans_total",
    "IP bans started by breaching the per-IP REST limit",
)
WS_CONNECTS_REFUSED = m.counter(
    "bybit_sim_ws_connects_refused_total",
    "WebSocket upgrades refused with HTTP 429 past the per-domain connect limit, by stream",
    ["stream"],
)
FAULTS_APPLIED = m.counter(
    "bybit_sim_faults_applied_total",
    "Transport faults armed through /sim/fault or the scenario, by kind",
    ["kind"],
)
SCENARIO_ACTIONS_REFUSED = m.counter(
    "bybit_sim_scenario_actions_refused_total",
    "Timeline actions the exchange refused (logged with the reason)",
)
