"""Slack Web API adapter: ``chat.postMessage`` with a bot token
(https://api.slack.com/methods/chat.postMessage).

Unlike an incoming webhook, it answers with the message's ``ts``, so an analysis is posted
as a thread reply (``thread_ts``) to its alert, also after a restart (the ``ts`` is kept in
the delivery log). Slack answers HTTP 200 with ``{"ok": false, "error": ...}`` for most
problems: ``ratelimited`` (with 429 and ``Retry-After``) and Slack's transient errors are
retried, the rest (``channel_not_found``, ``not_in_channel``, ``invalid_auth``,
``token_revoked``, ...) are final. The token is never logged or put into an error.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from notifier.channels import Attempt, Result
from notifier.messages import Notification
from notifier.slack import retry_after_header
from riskwatch_common.contracts import NotificationKind

RETRYABLE = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
REMEMBERED = 10_000


class SlackBotChannel:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        name: str,
        token: str,
        channel: str,
        api_base: str = "https://slack.com",
        min_interval_seconds: float = 1.0,
        delivered_ref: Callable[[str], object] | None = None,
    ) -> None:
        self.name = name
        self._session = session
        self._url = f"{api_base.rstrip('/')}/api/chat.postMessage"
        self._token = token
        self.channel = channel
        self.min_interval_seconds = min_interval_seconds
        self._delivered_ref = delivered_ref
        # alert event id -> ts of its message: where its analysis is threaded
        self._ts: OrderedDict[str, str] = OrderedDict()

    def _thread_of(self, n: Notification) -> str | None:
        if n.kind != NotificationKind.ANALYSIS:
            return None
        ts = self._ts.get(n.alert_event_id)
        if ts is None and self._delivered_ref is not None:
            known = self._delivered_ref(n.alert_event_id)
            ts = known if isinstance(known, str) else None
        return ts

    async def send(self, notification: Notification) -> Attempt:
        payload: dict[str, Any] = {
            "channel": self.channel,
            "text": notification.slack,
            "unfurl_links": False,
        }
        if notification.slack_blocks:
            payload["blocks"] = list(notification.slack_blocks)
        thread = self._thread_of(notification)
        if thread is not None:
            payload["thread_ts"] = thread
        try:
            async with self._session.post(
                self._url,
                data=orjson.dumps(payload),
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Authorization": f"Bearer {self._token}",
                },
            ) as resp:
                status = resp.status
                raw = await resp.read()
                retry_after = resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "network_error"
            return Attempt(Result.RETRY, kind, f"slack {kind} ({type(exc).__name__})")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        error_code = str(doc.get("error") or "")[:60].replace(self._token, "***")
        error = f"slack HTTP {status}" + (f": {error_code}" if error_code else "")
        if status == 200 and doc.get("ok") is True:
            ts = doc.get("ts")
            if isinstance(ts, str):
                self._ts[notification.source_event_id] = ts
                while len(self._ts) > REMEMBERED:
                    self._ts.popitem(last=False)
            return Attempt(Result.DELIVERED, ref=ts if isinstance(ts, str) else None)
        if status == 429 or error_code == "ratelimited":
            wait = retry_after_header(retry_after)
            return Attempt(Result.RETRY, "rate_limited", error, retry_after=wait)
        if status >= 500 or error_code in RETRYABLE:
            return Attempt(Result.RETRY, "server_error", error)
        return Attempt(Result.FAILED, "client_error", error)

    async def close(self) -> None:
        return None
