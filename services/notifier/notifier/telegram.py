"""Telegram Bot API adapter: ``POST {base}/bot<token>/sendMessage`` (https://core.telegram.org/bots/api#sendmessage).

The request URL contains the bot token, so no URL and no aiohttp exception text is ever
logged or returned: errors carry the HTTP status, Telegram's ``description`` (which never
echoes the token) and exception type names only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from notifier import metrics
from notifier.channels import Attempt, Result
from notifier.messages import Notification
from riskwatch_common.contracts import NotificationKind

log = logging.getLogger(__name__)

PARSE_ERROR = "can't parse entities"
REMEMBERED_MESSAGES = 10_000


class TelegramChannel:
    name = "telegram"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token: str,
        chat_id: str,
        api_base: str = "https://api.telegram.org",
        min_interval_seconds: float = 1.0,
        delivered_ref: Callable[[str], object] | None = None,
    ) -> None:
        self._session = session
        # the delivery log's record of an alert sent before a restart
        self._delivered_ref = delivered_ref
        self._url = f"{api_base.rstrip('/')}/bot{token}/sendMessage"
        self._token = token
        self.chat_id = chat_id
        self.min_interval_seconds = min_interval_seconds
        # alert event id -> Telegram message_id, so an analysis replies to its alert
        self._message_ids: OrderedDict[str, int] = OrderedDict()

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***")

    def _payload(self, notification: Notification, *, plain: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "chat_id": self.chat_id,
            "text": notification.plain if plain else notification.html,
            "link_preview_options": {"is_disabled": True},
        }
        if not plain:
            payload["parse_mode"] = "HTML"
        if notification.kind == NotificationKind.ANALYSIS:
            reply_to = self._message_ids.get(notification.alert_event_id)
            if reply_to is None and self._delivered_ref is not None:
                known = self._delivered_ref(notification.alert_event_id)
                reply_to = known if isinstance(known, int) else None
            if reply_to is not None:
                payload["reply_parameters"] = {
                    "message_id": reply_to,
                    "allow_sending_without_reply": True,
                }
        return payload

    async def send(self, notification: Notification) -> Attempt:
        attempt = await self._post(notification, plain=False)
        if attempt.result == Result.FAILED and attempt.detail == "parse_error":
            metrics.SEND_ATTEMPTS.labels(self.name, "parse_error").inc()
            log.warning(
                "telegram rejected the HTML; resending as plain text",
                extra={"event_id": notification.source_event_id},
            )
            attempt = await self._post(notification, plain=True)
        if attempt.result == Result.DELIVERED and isinstance(attempt.ref, int):
            self._message_ids[notification.source_event_id] = attempt.ref
            while len(self._message_ids) > REMEMBERED_MESSAGES:
                self._message_ids.popitem(last=False)
        return attempt

    async def _post(self, notification: Notification, *, plain: bool) -> Attempt:
        body = orjson.dumps(self._payload(notification, plain=plain))
        try:
            async with self._session.post(
                self._url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "network_error"
            return Attempt(Result.RETRY, kind, f"telegram {kind} ({type(exc).__name__})")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        description = self._scrub(str(doc.get("description") or "")[:200])
        error = f"telegram HTTP {status}" + (f": {description}" if description else "")
        if status == 200 and doc.get("ok") is True:
            result = doc.get("result")
            message_id = result.get("message_id") if isinstance(result, dict) else None
            return Attempt(Result.DELIVERED, ref=message_id)
        if status == 429:
            params = doc.get("parameters")
            retry_after = params.get("retry_after") if isinstance(params, dict) else None
            wait = float(retry_after) if isinstance(retry_after, int | float) else None
            return Attempt(Result.RETRY, "rate_limited", error, retry_after=wait)
        if status >= 500:
            return Attempt(Result.RETRY, "server_error", error)
        if status == 400 and PARSE_ERROR in description.lower() and not plain:
            return Attempt(Result.FAILED, "parse_error", error)
        # 400 chat not found, 401 bad token, 403 bot blocked, 404 bad token path: final
        return Attempt(Result.FAILED, "client_error", error)

    async def close(self) -> None:
        return None
