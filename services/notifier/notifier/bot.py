"""Telegram bot commands by long polling ``getUpdates``
(https://core.telegram.org/bots/api#getupdates), answered only in configured chats.

The bot token is in the URL, so as in ``telegram.py`` no URL and no aiohttp exception text
is logged: errors carry the HTTP status and exception type names only. A message from a
chat that is not one of the routing file's Telegram chats is ignored (logged with its chat
id), so a stranger who finds the bot cannot mute anything.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from notifier import metrics

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Command:
    chat_id: str
    message_id: int
    text: str
    reply_to_message_id: int | None


class TelegramBot:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token: str,
        api_base: str,
        chats: set[str],
        on_command: Callable[[Command], Awaitable[str]],
        sleep: Sleep,
        poll_seconds: float = 25.0,
    ) -> None:
        self._session = session
        self._base = f"{api_base.rstrip('/')}/bot{token}"
        self.chats = chats
        self._on_command = on_command
        self._sleep = sleep
        self.poll_seconds = poll_seconds
        self._offset = 0

    async def _call(self, method: str, payload: dict[str, Any], timeout: float) -> Any:
        async with self._session.post(
            f"{self._base}/{method}",
            data=orjson.dumps(payload),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"telegram {method} HTTP {resp.status}")
        doc = orjson.loads(raw)
        if not isinstance(doc, dict) or doc.get("ok") is not True:
            raise RuntimeError(f"telegram {method} answered not ok")
        return doc.get("result")

    async def poll_once(self) -> int:
        """One long poll; handles what arrived and returns how many updates it saw."""
        updates = await self._call(
            "getUpdates",
            {"offset": self._offset, "timeout": self.poll_seconds, "allowed_updates": ["message"]},
            self.poll_seconds + 10,
        )
        if not isinstance(updates, list):
            return 0
        for update in updates:
            if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
                continue
            # confirmed by the next call's offset, so a crash repeats at most this batch
            self._offset = max(self._offset, update["update_id"] + 1)
            command = _command(update.get("message"))
            if command is None:
                continue
            if command.chat_id not in self.chats:
                metrics.BOT_COMMANDS.labels("refused").inc()
                log.warning(
                    "bot command from an unknown chat ignored", extra={"chat_id": command.chat_id}
                )
                continue
            reply = await self._on_command(command)
            metrics.BOT_COMMANDS.labels("answered").inc()
            await self._call(
                "sendMessage",
                {
                    "chat_id": command.chat_id,
                    "text": reply,
                    "parse_mode": "HTML",
                    "reply_parameters": {
                        "message_id": command.message_id,
                        "allow_sending_without_reply": True,
                    },
                    "link_preview_options": {"is_disabled": True},
                },
                10.0,
            )
        return len(updates)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.poll_once()
                failures = 0
            except (TimeoutError, aiohttp.ClientError, RuntimeError, orjson.JSONDecodeError) as exc:
                failures += 1
                delay = min(2.0**failures, 60.0)
                log.warning(
                    "telegram command poll failed",
                    extra={
                        "error_type": type(exc).__name__,
                        "problem": str(exc) if isinstance(exc, RuntimeError) else "",
                        "delay_s": delay,
                    },
                )
                await self._sleep(delay)


def _command(message: object) -> Command | None:
    if not isinstance(message, dict):
        return None
    text = message.get("text")
    chat = message.get("chat")
    if not isinstance(text, str) or not text.startswith("/") or not isinstance(chat, dict):
        return None
    reply = message.get("reply_to_message")
    reply_id = reply.get("message_id") if isinstance(reply, dict) else None
    return Command(
        chat_id=str(chat.get("id")),
        message_id=int(message.get("message_id") or 0),
        text=text[:500],
        reply_to_message_id=reply_id if isinstance(reply_id, int) else None,
    )
