"""HolySheep adapter: OpenAI-compatible ``POST {base}/chat/completions`` with retries.

Retry semantics follow the official OpenAI SDK (openai-python, `_base_client.py`): 429, 408,
409, 5xx, timeouts and connection errors are retried with ``retry-after-ms`` /
``retry-after`` when it is in (0, 60] s, else capped exponential backoff with jitter.
401/403 (bad key, region), 402 and 429 ``insufficient_quota`` (money) and other 4xx are
final. The key is only ever in the Authorization header: never in a log, error or metric.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from ai_analyst import metrics
from riskwatch_common.clock import Clock, utc_now

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 60.0

Sleep = Callable[[float], Awaitable[None]]


class GatewayError(Exception):
    """A call that produced no completion; ``reason`` is a short metric-safe word."""

    reason = "error"

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class AuthRejected(GatewayError):
    reason = "auth"


class QuotaExhausted(GatewayError):
    reason = "quota"


class RequestRejected(GatewayError):
    reason = "rejected"


class GatewayUnavailable(GatewayError):
    reason = "unavailable"


class _Usage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: _Message
    finish_reason: str | None = None


class _ChatCompletion(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    choices: list[_Choice]
    usage: _Usage | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    content: str | None
    finish_reason: str | None
    served_model: str | None
    prompt_tokens: int
    completion_tokens: int
    attempts: int


def _error_fields(body: bytes) -> tuple[str, str]:
    """``(type, code)`` of an OpenAI-style error body; the message may echo key fragments."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", ""
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("type") or "")[:64], str(err.get("code") or "")[:64]


def retry_after_seconds(headers: Any, now: Clock = utc_now) -> float | None:
    """The server's requested wait, honoured only in (0, 60] s as the OpenAI SDK does."""
    value: float | None = None
    raw_ms = headers.get("retry-after-ms")
    raw = headers.get("retry-after")
    try:
        if raw_ms is not None:
            value = float(raw_ms) / 1000
        elif raw is not None:
            value = float(raw)
    except ValueError:
        value = None
    if value is None and raw:
        try:
            value = (parsedate_to_datetime(raw) - now()).total_seconds()
        except (TypeError, ValueError):
            value = None
    if value is not None and 0 < value <= MAX_RETRY_AFTER_SECONDS:
        return value
    return None


class HolySheepClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        max_attempts: int = 3,
        retry_base_seconds: float = 0.5,
        retry_max_seconds: float = 8.0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self._sleep = sleep
        self._rng = rng or random.Random()

    def backoff(self, retry_number: int) -> float:
        """Capped exponential backoff with jitter (retry_number starts at 1)."""
        ceiling = min(self.retry_base_seconds * 2.0 ** (retry_number - 1), self.retry_max_seconds)
        return ceiling * (1 - 0.25 * self._rng.random())

    async def complete(
        self, *, model: str, messages: list[dict[str, str]], max_tokens: int
    ) -> Completion:
        body = orjson.dumps(
            {
                "model": model,
                "messages": messages,
                "response_format": {"type": "json_object"},
                "max_tokens": max_tokens,
                "temperature": 0.2,
                "stream": False,
            }
        )
        last = ""
        status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            wait: float | None = None
            started = time.monotonic()
            try:
                async with self._session.post(self._url, data=body, headers=self._headers) as resp:
                    status = resp.status
                    raw = await resp.read()
                    headers = resp.headers
            except (TimeoutError, aiohttp.ClientError) as exc:
                # the exception text can carry the URL; the type is enough to act on
                kind = "timeout" if isinstance(exc, TimeoutError) else "connection_error"
                metrics.LLM_REQUESTS.labels(model, kind).inc()
                last, status = f"{kind} ({type(exc).__name__})", None
            else:
                metrics.LLM_SECONDS.labels(model).observe(time.monotonic() - started)
                if status == 200:
                    return self._completion(model, raw, attempt)
                err_type, err_code = _error_fields(raw)
                detail = f"HTTP {status}" + (
                    f" {err_code or err_type}" if err_code or err_type else ""
                )
                if status in (401, 403):
                    metrics.LLM_REQUESTS.labels(model, "auth_error").inc()
                    raise AuthRejected(
                        f"HolySheep rejected the API key ({detail}): "
                        "check HOLYSHEEP_API_KEY (and the account's region)",
                        status=status,
                        attempts=attempt,
                    )
                if status == 402 or "insufficient_quota" in (err_code, err_type):
                    metrics.LLM_REQUESTS.labels(model, "quota_exhausted").inc()
                    raise QuotaExhausted(
                        f"HolySheep balance or quota exhausted ({detail}): top up the account",
                        status=status,
                        attempts=attempt,
                    )
                retryable = status in (408, 409, 429) or status >= 500
                if headers.get("x-should-retry") == "false":
                    retryable = False
                elif headers.get("x-should-retry") == "true":
                    retryable = True
                outcome = "rate_limited" if status == 429 else f"http_{status // 100}xx"
                metrics.LLM_REQUESTS.labels(model, outcome).inc()
                if not retryable:
                    raise RequestRejected(
                        f"HolySheep refused the request ({detail})", status=status, attempts=attempt
                    )
                last = detail
                wait = retry_after_seconds(headers)
            if attempt == self.max_attempts:
                break
            delay = wait if wait is not None else self.backoff(attempt)
            log.warning(
                "llm request failed, retrying",
                extra={
                    "model": model,
                    "problem": last,
                    "attempt": attempt,
                    "delay_s": round(delay, 3),
                },
            )
            await self._sleep(delay)
        raise GatewayUnavailable(
            f"HolySheep unavailable ({last} after {self.max_attempts} attempts)",
            status=status,
            attempts=self.max_attempts,
        )

    def _completion(self, model: str, raw: bytes, attempt: int) -> Completion:
        try:
            doc = _ChatCompletion.model_validate_json(raw)
        except ValidationError:
            metrics.LLM_REQUESTS.labels(model, "malformed_response").inc()
            return Completion(None, None, None, 0, 0, attempt)
        metrics.LLM_REQUESTS.labels(model, "ok").inc()
        usage = doc.usage or _Usage()
        choice = doc.choices[0] if doc.choices else None
        return Completion(
            content=choice.message.content if choice else None,
            finish_reason=choice.finish_reason if choice else None,
            served_model=doc.model,
            prompt_tokens=max(usage.prompt_tokens or 0, 0),
            completion_tokens=max(usage.completion_tokens or 0, 0),
            attempts=attempt,
        )
