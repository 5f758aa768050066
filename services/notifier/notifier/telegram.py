"""Telegram Bot API adapter: ``POST {base}/bot<token>/sendMessage`` (https://core.telegram.org/bots/api#sendmessage).

The request URL contains the bot token, so no URL and no aiohttp exception text is ever
logged or returned: errors carry the HTTP status, Telegram's ``description`` (which never
echoes the token) and exception type names only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from notifier import metrics
from notifier.channels import Attempt, Result
from notifier.messages import Notification, split_html
from riskwatch_common.contracts import NotificationKind

log = logging.getLogger(__name__)

PARSE_ERROR = "can't parse entities"
REMEMBERED_MESSAGES = 10_000
GROUP_PER_MINUTE = 20


class TelegramChannel:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        name: str = "telegram",
        token: str,
        chat_id: str,
        api_base: str = "https://api.telegram.org",
        min_interval_seconds: float = 1.0,
        delivered_ref: Callable[[str], object] | None = None,
    ) -> None:
        self.name = name
        self._session = session
        # the delivery log's record of an alert sent before a restart
        self._delivered_ref = delivered_ref
        self._url = f"{api_base.rstrip('/')}/bot{token}/sendMessage"
        self._token = token
        self.chat_id = chat_id
        self.min_interval_seconds = min_interval_seconds
        # https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this:
        # about 1 message a second in a chat, at most 20 a minute in a group
        self.per_minute: int | None = GROUP_PER_MINUTE if chat_id.startswith("-") else None
        # alert event id -> Telegram message_id, so an analysis replies to its alert
        self._message_ids: OrderedDict[str, int] = OrderedDict()
        # event id -> message ids of the parts already accepted: a retry after part 2 of 3
        # failed sends part 2 and 3 only, never part 1 again
        self._parts_sent: OrderedDict[str, list[int]] = OrderedDict()
        # message_id -> alert id, so "/ack" sent as a reply to an alert acknowledges it
        self.alert_of_message: OrderedDict[int, str] = OrderedDict()
        # set by the worker: waits out the chat's rate limit before each further part
        self.pace: Callable[[], Awaitable[None]] | None = None

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***")

    def _reply_target(self, notification: Notification) -> int | None:
        if notification.kind != NotificationKind.ANALYSIS:
            return None
        reply_to = self._message_ids.get(notification.alert_event_id)
        if reply_to is None and self._delivered_ref is not None:
            known = self._delivered_ref(notification.alert_event_id)
            reply_to = known if isinstance(known, int) else None
        return reply_to

    def _payload(self, text: str, *, plain: bool, reply_to: int | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "chat_id": self.chat_id,
            "text": text,
            "link_preview_options": {"is_disabled": True},
        }
        if not plain:
            payload["parse_mode"] = "HTML"
        if reply_to is not None:
            payload["reply_parameters"] = {
                "message_id": reply_to,
                "allow_sending_without_reply": True,
            }
        return payload

    async def send(self, notification: Notification) -> Attempt:
        """Send the message, split into parts of at most 4,096 characters, each valid HTML.

        Later parts reply to the first, so they stay together in a busy chat.
        """
        key = notification.source_event_id
        html_parts = split_html(notification.html)
        plain_parts = split_html(notification.plain)
        sent = self._parts_sent.setdefault(key, [])
        attempt = Attempt(Result.DELIVERED)
        plain = False
        while len(sent) < len(html_parts if not plain else plain_parts):
            index = len(sent)
            if index > 0 and self.pace is not None:
                await self.pace()
            reply_to = sent[0] if sent else self._reply_target(notification)
            text = plain_parts[index] if plain else html_parts[index]
            attempt = await self._post(text, plain=plain, reply_to=reply_to)
            if attempt.result == Result.FAILED and attempt.detail == "parse_error" and not sent:
                metrics.SEND_ATTEMPTS.labels(self.name, "parse_error").inc()
                log.warning(
                    "telegram rejected the HTML; resending as plain text",
                    extra={"event_id": key},
                )
                plain = True
                continue
            if attempt.result != Result.DELIVERED:
                return attempt
            sent.append(attempt.ref if isinstance(attempt.ref, int) else 0)
        del self._parts_sent[key]
        while len(self._parts_sent) > REMEMBERED_MESSAGES:
            self._parts_sent.popitem(last=False)
        first = sent[0] if sent else None
        if first:
            self._message_ids[key] = first
            while len(self._message_ids) > REMEMBERED_MESSAGES:
                self._message_ids.popitem(last=False)
            if notification.kind == NotificationKind.ALERT:
                for message_id in sent:
                    self.alert_of_message[message_id] = notification.alert_id
                while len(self.alert_of_message) > REMEMBERED_MESSAGES:
                    self.alert_of_message.popitem(last=False)
        return Attempt(Result.DELIVERED, ref=first or None)

    async def _post(self, text: str, *, plain: bool, reply_to: int | None) -> Attempt:
        body = orjson.dumps(self._payload(text, plain=plain, reply_to=reply_to))
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
