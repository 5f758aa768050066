"""Prometheus metrics of the AI analyst (prefix ``ai_analyst_``).

Labels stay low-cardinality: ``model`` is one of the two configured model names.
"""

from __future__ import annotations

from riskwatch_common import metrics

ANALYSES = metrics.counter(
    "ai_analyst_analyses_total",
    "Analyses produced, by mode and why (ok, no_key, budget, auth, quota, invalid, ...)",
    ["mode", "reason"],
)
ALERTS_SKIPPED = metrics.counter(
    "ai_analyst_alerts_skipped_total",
    "Alerts that got no new analysis (resolved transition, duplicate event id)",
    ["reason"],
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
LLM_TOKENS = metrics.counter(
    "ai_analyst_llm_tokens_total", "Tokens billed by the gateway", ["model", "kind"]
)
LLM_COST = metrics.counter(
    "ai_analyst_llm_cost_usd_total", "USD spent on the gateway (list prices)", ["model"]
)
SPEND_TODAY = metrics.gauge(
    "ai_analyst_llm_spend_today_usd", "USD spent this UTC day by this process"
)
BUDGET = metrics.gauge("ai_analyst_llm_daily_budget_usd", "Daily LLM budget in USD")
LLM_SECONDS = metrics.histogram(
    "ai_analyst_llm_request_seconds", "Gateway request latency, per HTTP attempt", ["model"]
)
IN_FLIGHT = metrics.gauge("ai_analyst_llm_calls_in_flight", "LLM calls running now")
