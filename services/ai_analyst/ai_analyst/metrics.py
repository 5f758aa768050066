"""Prometheus metrics of the AI analyst (prefix ``ai_analyst_``).

Labels stay low-cardinality: ``model`` is one of the two configured model names.
"""

from __future__ import annotations

from riskwatch_common import metrics

ANALYSES = metrics.counter(
    "ai_analyst_analyses_total",
    "Analyses produced, by mode and why (ok, cached, no_key, budget, auth, invalid, ...)",
    ["mode", "reason"],
)
ALERTS_SKIPPED = metrics.counter(
    "ai_analyst_alerts_skipped_total",
    "Alerts that got no new analysis (resolved transition, duplicate event id, own alert)",
    ["reason"],
)
LLM_CALLS = metrics.counter(
    "ai_analyst_llm_calls_total",
    "LLM calls (one per coalesced group of alerts; a repair retry is a second call)",
    ["model"],
)
CACHE_HITS = metrics.counter(
    "ai_analyst_llm_cache_hits_total", "Groups answered from the fingerprint cache"
)
LLM_REQUESTS = metrics.counter(
    "ai_analyst_llm_requests_total",
    "HTTP requests to the LLM gateway by outcome",
    ["model", "outcome"],
)
LLM_AUTH_FAILURES = metrics.counter(
    "ai_analyst_llm_auth_failures_total",
    "Gateway rejections of the API key (401/403): the key needs fixing",
)
BREAKER_OPENED = metrics.counter(
    "ai_analyst_llm_circuit_opened_total",
    "Times the gateway circuit breaker opened, by cause",
    ["reason"],
)
BREAKER_OPEN = metrics.gauge(
    "ai_analyst_llm_circuit_open", "1 while the gateway circuit breaker is open"
)
INVENTED_NUMBERS = metrics.counter(
    "ai_analyst_llm_invented_numbers_total",
    "Model answers rejected because they held a number we did not supply",
)
LLM_TOKENS = metrics.counter(
    "ai_analyst_llm_tokens_total", "Tokens billed by the gateway", ["model", "kind"]
)
LLM_COST = metrics.counter(
    "ai_analyst_llm_cost_usd_total", "USD spent on the gateway (configured prices)", ["model"]
)
CALL_COST = metrics.histogram(
    "ai_analyst_llm_call_cost_usd",
    "USD cost of each LLM call",
    ["model"],
    buckets=(0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1),
)
SPEND_TODAY = metrics.gauge(
    "ai_analyst_llm_spend_today_usd", "USD spent this UTC day (persisted across restarts)"
)
BUDGET = metrics.gauge("ai_analyst_llm_daily_budget_usd", "Daily LLM budget in USD")
BUDGET_ALERTS = metrics.counter(
    "ai_analyst_budget_alerts_total", "Budget-spent alerts published (one per UTC day)"
)
LLM_SECONDS = metrics.histogram(
    "ai_analyst_llm_request_seconds", "Gateway request latency, per HTTP attempt", ["model"]
)
ANALYSIS_DELAY = metrics.histogram(
    "ai_analyst_analysis_delay_seconds",
    "From an alert's arrival to its analysis (coalescing window plus the LLM call)",
)
IN_FLIGHT = metrics.gauge("ai_analyst_llm_calls_in_flight", "LLM calls running now")
