"""Slack incoming-webhook adapter (https://api.slack.com/messaging/webhooks).

Only HTTP 200 with body ``ok`` is success. 429 waits ``Retry-After``; 5xx is retried; other
statuses (400 invalid_payload, 403 action_prohibited, 404 channel_not_found, 410
channel_is_archived, ...) are final. The webhook URL is the secret: it is never logged or
put into an error, and aiohttp exception text (which may contain it) is never used.
"""

from __future__ import annotations

import aiohttp
import orjson

from notifier.channels import Attempt, Result
from notifier.messages import Notification

MAX_RETRY_AFTER_HEADER = 3600.0


def retry_after_header(raw: str | None) -> float | None:
    """Slack's ``Retry-After`` in seconds (webhook and Web API alike), or None when it is
    missing, not a number, or outside [0, ``MAX_RETRY_AFTER_HEADER``]."""
    try:
        wait = float(raw) if raw else None
    except ValueError:
        return None
    if wait is not None and not 0 <= wait <= MAX_RETRY_AFTER_HEADER:
        return None
    return wait


class SlackChannel:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        name: str = "slack",
        webhook_url: str,
        min_interval_seconds: float = 1.0,
    ) -> None:
        self.name = name
        self._session = session
        self._url = webhook_url
        self.min_interval_seconds = min_interval_seconds

    def _scrub(self, text: str) -> str:
        return text.replace(self._url, "***")

    async def send(self, notification: Notification) -> Attempt:
        # Block Kit for the layout; ``text`` is the fallback notifications and screen
        # readers show (https://api.slack.com/reference/block-kit/blocks)
        payload: dict[str, object] = {"text": notification.slack, "unfurl_links": False}
        if notification.slack_blocks:
            payload["blocks"] = list(notification.slack_blocks)
        body = orjson.dumps(payload)
        try:
            async with self._session.post(
                self._url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                status = resp.status
                text = (await resp.text(errors="replace")).strip()
                retry_after = resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "network_error"
            return Attempt(Result.RETRY, kind, f"slack {kind} ({type(exc).__name__})")
        error = f"slack HTTP {status}" + (f": {self._scrub(text[:100])}" if text else "")
        if status == 200 and text == "ok":
            return Attempt(Result.DELIVERED)
        if status == 429:
            wait = retry_after_header(retry_after)
            return Attempt(Result.RETRY, "rate_limited", error, retry_after=wait)
        if status >= 500:
            return Attempt(Result.RETRY, "server_error", error)
        return Attempt(Result.FAILED, "client_error", error)

    async def close(self) -> None:
        return None
