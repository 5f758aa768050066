"""The LLM gateway adapter: the official OpenAI SDK against any OpenAI-compatible base URL.

The SDK does the HTTP, the auth header, the typed parsing and the error classes. Its own
retries are off (``max_retries=0``) and the policy is ours, for three reasons: a 429 that
means "no balance" (``insufficient_quota``) must not be retried, while the SDK retries every
429; each failed attempt must reach the circuit breaker, which the SDK can't tell; and the
wait must go through an injected ``sleep`` so tests don't sleep. The rules otherwise follow
the SDK's: 408, 409, 429 and 5xx, timeouts and connection errors are retried, waiting the
server's ``retry-after-ms`` / ``retry-after`` when it is in (0, 60] s, else capped
exponential backoff with jitter; ``x-should-retry`` overrides. 401/403 (bad key), 402 and
quota 429s, and other 4xx are final.

The key is only ever in the Authorization header: no log, error or metric carries it, nor
the upstream error message (which may echo part of it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, cast

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from ai_analyst import metrics
from ai_analyst.breaker import CircuitBreaker
from riskwatch_common.clock import Clock, utc_now

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 60.0
KEY_VARIABLE = "AI_ANALYST_API_KEY (or HOLYSHEEP_API_KEY)"

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


class CircuitOpen(GatewayError):
    reason = "circuit_open"


@dataclass(frozen=True, slots=True)
class Completion:
    content: str | None
    finish_reason: str | None
    served_model: str | None
    prompt_tokens: int
    completion_tokens: int
    attempts: int


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


def build_client(
    *,
    base_url: str,
    api_key: str,
    connect_timeout: float,
    read_timeout: float,
    request_timeout: float,
) -> AsyncOpenAI:
    """The SDK client, with its retries off (the policy is ``LlmGateway``'s)."""
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=openai.Timeout(request_timeout, connect=connect_timeout, read=read_timeout),
    )


def _code(exc: openai.APIStatusError) -> str:
    for value in (exc.code, exc.type):
        if value:
            return str(value)[:64]
    return ""


class LlmGateway:
    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        breaker: CircuitBreaker,
        max_attempts: int = 3,
        retry_base_seconds: float = 0.5,
        retry_max_seconds: float = 8.0,
        request_timeout: float = 120.0,
        gateway_pause_seconds: float = 300.0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self.breaker = breaker
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self.request_timeout = request_timeout
        self.gateway_pause_seconds = gateway_pause_seconds
        self._sleep = sleep
        self._rng = rng or random.Random()

    async def close(self) -> None:
        await self._client.close()

    def backoff(self, retry_number: int) -> float:
        """Capped exponential backoff with jitter (retry_number starts at 1)."""
        ceiling = min(self.retry_base_seconds * 2.0 ** (retry_number - 1), self.retry_max_seconds)
        return ceiling * (1 - 0.25 * self._rng.random())

    def _open(self, reason: str) -> None:
        metrics.BREAKER_OPENED.labels(reason).inc()
        metrics.BREAKER_OPEN.set(1)
        log.error(
            "llm circuit breaker open",
            extra={"reason": reason, "open_s": self.breaker.open_seconds},
        )

    def _account_error(self, error: GatewayError, model: str, outcome: str) -> GatewayError:
        """A key or money problem: every further call would fail alike, so open for long."""
        metrics.LLM_REQUESTS.labels(model, outcome).inc()
        self.breaker.trip(self.gateway_pause_seconds, f"{error.reason} error (HTTP {error.status})")
        self._open(error.reason)
        return error

    async def complete(
        self, *, model: str, messages: list[dict[str, str]], max_tokens: int
    ) -> Completion:
        last = ""
        status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            if not self.breaker.allow():
                metrics.LLM_REQUESTS.labels(model, "circuit_open").inc()
                raise CircuitOpen(
                    f"LLM circuit breaker open after {self.breaker.reason}",
                    status=status,
                    attempts=attempt - 1,
                )
            wait: float | None = None
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.request_timeout):
                    response = await self._client.chat.completions.create(
                        model=model,
                        messages=cast("list[ChatCompletionMessageParam]", messages),
                        response_format={"type": "json_object"},
                        max_tokens=max_tokens,
                        temperature=0.2,
                    )
            except (openai.APITimeoutError, TimeoutError):
                kind, last, status = "timeout", "timeout", None
            except openai.APIConnectionError as exc:
                # the exception text can carry the URL; the type is enough to act on
                kind, last, status = (
                    "connection_error",
                    f"connection error ({type(exc).__name__})",
                    None,
                )
            except openai.APIStatusError as exc:
                metrics.LLM_SECONDS.labels(model).observe(time.monotonic() - started)
                status = exc.status_code
                code = _code(exc)
                detail = f"HTTP {status}" + (f" {code}" if code else "")
                if status in (401, 403):
                    metrics.LLM_AUTH_FAILURES.inc()
                    raise self._account_error(
                        AuthRejected(
                            f"the LLM gateway rejected the API key ({detail}): "
                            f"check {KEY_VARIABLE}",
                            status=status,
                            attempts=attempt,
                        ),
                        model,
                        "auth_error",
                    ) from None
                if status == 402 or code == "insufficient_quota":
                    raise self._account_error(
                        QuotaExhausted(
                            f"LLM gateway balance or quota exhausted ({detail}): "
                            "top up the account",
                            status=status,
                            attempts=attempt,
                        ),
                        model,
                        "quota_exhausted",
                    ) from None
                retryable = status in (408, 409, 429) or status >= 500
                should = exc.response.headers.get("x-should-retry")
                if should in ("true", "false"):
                    retryable = should == "true"
                kind = "rate_limited" if status == 429 else f"http_{status // 100}xx"
                if not retryable:
                    metrics.LLM_REQUESTS.labels(model, kind).inc()
                    raise RequestRejected(
                        f"the LLM gateway refused the request ({detail})",
                        status=status,
                        attempts=attempt,
                    ) from None
                last = detail
                wait = retry_after_seconds(exc.response.headers)
            except (openai.APIResponseValidationError, ValueError):
                # a 200 whose body is not a chat completion: the content check retries once
                metrics.LLM_REQUESTS.labels(model, "malformed_response").inc()
                self.breaker.record_success()
                return Completion(None, None, None, 0, 0, attempt)
            else:
                metrics.LLM_SECONDS.labels(model).observe(time.monotonic() - started)
                metrics.LLM_REQUESTS.labels(model, "ok").inc()
                self.breaker.record_success()
                metrics.BREAKER_OPEN.set(0)
                return self._completion(response, attempt)
            metrics.LLM_REQUESTS.labels(model, kind).inc()
            # a rate limit says nothing about the gateway's health; 5xx and timeouts do
            if kind != "rate_limited" and self.breaker.record_failure(f"{last}, repeatedly"):
                self._open(kind)
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
            f"LLM gateway unavailable ({last} after {self.max_attempts} attempts)",
            status=status,
            attempts=self.max_attempts,
        )

    @staticmethod
    def _completion(response: Any, attempt: int) -> Completion:
        usage = getattr(response, "usage", None)
        choices = getattr(response, "choices", None) or []
        choice = choices[0] if choices else None
        message = getattr(choice, "message", None)
        return Completion(
            content=getattr(message, "content", None),
            finish_reason=getattr(choice, "finish_reason", None),
            served_model=getattr(response, "model", None),
            prompt_tokens=max(getattr(usage, "prompt_tokens", 0) or 0, 0),
            completion_tokens=max(getattr(usage, "completion_tokens", 0) or 0, 0),
            attempts=attempt,
        )
