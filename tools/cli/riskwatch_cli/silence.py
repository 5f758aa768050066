"""``riskwatch mute|unmute|silences|ack``: the notifier's bot commands from a terminal.

They go to the running notifier's API (``NOTIFIER_URL``, default http://127.0.0.1:8084,
with ``NOTIFIER_API_TOKEN`` as bearer token when set), which runs them exactly as the
Telegram commands and makes each silence durable on ``notify.silences.v1`` before it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiohttp

DEFAULT_URL = "http://127.0.0.1:8084"


async def _post(command: str) -> tuple[bool, str]:
    url = os.environ.get("NOTIFIER_URL", DEFAULT_URL).rstrip("/")
    token = os.environ.get("NOTIFIER_API_TOKEN", "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
        session.post(f"{url}/api/command", json={"command": command}, headers=headers) as resp,
    ):
        try:
            doc = await resp.json(content_type=None)
            text = str(doc.get("text", ""))
        except ValueError:
            text = f"HTTP {resp.status}"
        return resp.status == 200, text


def run(command: str) -> int:
    name = command.split()[0][1:]
    try:
        ok, text = asyncio.run(_post(command))
    except (aiohttp.ClientError, TimeoutError) as exc:
        url = os.environ.get("NOTIFIER_URL", DEFAULT_URL)
        print(
            f"riskwatch {name}: cannot reach the notifier at {url} ({type(exc).__name__})",
            file=sys.stderr,
        )
        return 1
    print(text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("mute", help="keep an account, rule or symbol off the phones for a while")
    m.add_argument("target", help="account, rule id or symbol (or account:X, rule:X, symbol:X)")
    m.add_argument("duration", nargs="?", default="1h", help="30m, 1h, 2d (default 1h)")
    m.add_argument("reason", nargs="*", help="why, shown in /silences")
    m.set_defaults(func=lambda a: run(" ".join(["/mute", a.target, a.duration, *a.reason])))
    u = sub.add_parser("unmute", help="lift a silence (target, silence id or 'all')")
    u.add_argument("target")
    u.set_defaults(func=lambda a: run(f"/unmute {a.target}"))
    s = sub.add_parser("silences", help="list the active silences")
    s.set_defaults(func=lambda a: run("/silences"))
    k = sub.add_parser("ack", help="acknowledge open alerts: no more repeats until resolved")
    k.add_argument("target", help="an account, an alert id, or 'all'")
    k.set_defaults(func=lambda a: run(f"/ack {a.target}"))
