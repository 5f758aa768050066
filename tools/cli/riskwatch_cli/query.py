"""The trader's read commands over the risk processor's query API (v1): ``watch``,
``exposure``, ``alerts`` and ``what-if``.

URL and token come from ``RISKWATCH_API_URL`` (default http://127.0.0.1:8082) and
``RISKWATCH_API_TOKEN`` (required when the API listens beyond loopback; else the
processor's own ``RISK_PROCESSOR_QUERY_TOKEN``, as ``riskwatch init`` writes it to .env);
``--env-file`` fills what the environment lacks, ``--url`` overrides the URL. The token is
never taken on the command line (shell history, ps).
Every command takes ``--json``: the API's document as it came, for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from riskwatch_cli.doctor import load_env_file
from riskwatch_common.settings import ConfigError, load_settings

TIMEOUT = aiohttp.ClientTimeout(total=15)
RECONNECT_S = 2.0
_LEVEL_STYLE = {"LOW": "green", "MEDIUM": "yellow", "HIGH": "bold red"}
_SEVERITY_STYLE = {"INFO": "dim", "WARNING": "yellow", "HIGH": "red", "CRITICAL": "bold red"}


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RISKWATCH_API_", frozen=True, extra="ignore")

    url: str = Field(default="http://127.0.0.1:8082", pattern=r"^https?://[^\s/]+")
    token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("RISKWATCH_API_TOKEN", "RISK_PROCESSOR_QUERY_TOKEN"),
    )


class ApiError(Exception):
    """One line for the trader: what failed and what to do."""


class Client:
    def __init__(self, settings: ApiSettings, url: str | None = None) -> None:
        self.base = (url or settings.url).rstrip("/")
        token = settings.token.get_secret_value().strip() if settings.token else None
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _check(self, status: int, body: bytes) -> Any:
        if status == 401:
            raise ApiError(f"the query API at {self.base} needs a token: set RISKWATCH_API_TOKEN")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ApiError(f"the query API at {self.base} answered {status}, not JSON") from None
        if status >= 400:
            error = doc.get("error", "") if isinstance(doc, dict) else ""
            raise ApiError(f"{error or 'error'} (HTTP {status})")
        return doc

    async def get(self, path: str) -> Any:
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT, headers=self.headers) as http,
                http.get(self.base + path) as r,
            ):
                return self._check(r.status, await r.read())
        except aiohttp.ClientError as exc:
            raise ApiError(f"cannot reach the query API at {self.base}: {exc}") from None

    async def post(self, path: str, doc: Any) -> Any:
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT, headers=self.headers) as http,
                http.post(self.base + path, data=orjson.dumps(doc),
                          headers={"Content-Type": "application/json"}) as r,
            ):  # fmt: skip
                return self._check(r.status, await r.read())
        except aiohttp.ClientError as exc:
            raise ApiError(f"cannot reach the query API at {self.base}: {exc}") from None

    async def stream(self) -> AsyncIterator[Any]:
        """Overview documents from ``/v1/stream``, one per change."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, headers=self.headers) as http,
                http.get(self.base + "/v1/stream") as r,
            ):
                if r.status != 200:
                    self._check(r.status, await r.read())
                    raise ApiError(f"the stream answered {r.status}")
                buffer = b""
                async for chunk in r.content.iter_any():
                    buffer += chunk
                    while b"\n\n" in buffer:
                        block, buffer = buffer.split(b"\n\n", 1)
                        data = b"\n".join(
                            line[6:] for line in block.split(b"\n") if line.startswith(b"data: ")
                        )
                        if data:
                            yield orjson.loads(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(
                f"lost the stream from {self.base}: {exc or type(exc).__name__}"
            ) from None


# --------------------------------------------------------------------------- rendering


def _level(level: str) -> Text:
    return Text(level, style=_LEVEL_STYLE.get(level, ""))


def overview_table(doc: Any, *, status: str | None = None) -> Table:
    """The ``watch`` table: one row per account, then the portfolio row."""
    title = "riskwatch" + (f" · {status}" if status else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for name, justify in (
        ("account", "left"), ("link", "left"), ("level", "left"), ("equity", "right"),
        ("net", "right"), ("gross", "right"), ("UPL", "right"), ("MM rate", "right"),
        ("nearest liq.", "right"), ("tier headroom", "right"), ("alerts", "left"),
        ("as of", "right"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]

    def add(row: Any, *, portfolio: bool = False) -> None:
        d = row["display"]
        link = Text(d["link"], style="bold red" if d["link"] == "down" else "")
        severity = row.get("worst_severity") or ""
        table.add_row(
            "PORTFOLIO" if portfolio else row["account"],
            link,
            _level(row["risk_level"]),
            d["equity"], d["net"], d["gross"], d["unrealised_pnl"], d["mm_rate"],
            d["nearest_liquidation"], d["tier_headroom"],
            Text(d["alerts"], style=_SEVERITY_STYLE.get(severity, "")),
            d["as_of"],
            style="bold" if portfolio else None,
            end_section=False,
        )  # fmt: skip

    for row in doc["accounts"]:
        add(row)
    if doc.get("portfolio"):
        table.add_section()
        add(doc["portfolio"], portfolio=True)
    if not doc["accounts"] and not doc.get("portfolio"):
        table.caption = "no snapshot yet"
    return table


def alerts_table(alerts: list[Any]) -> Table:
    table = Table(title=f"active alerts ({len(alerts)})", title_justify="left")
    for name in ("severity", "account", "rule", "subject", "value", "limit", "since", "reason"):
        table.add_column(name, overflow="fold")
    for a in alerts:
        d = a["display"]
        table.add_row(
            Text(a["severity"], style=_SEVERITY_STYLE.get(a["severity"], "")),
            a["account"], a["rule"], a["subject"], d["value"], d["threshold"], d["since"],
            a["reason"],
        )  # fmt: skip
    return table


def exposure_view(doc: Any) -> Group:
    e, d = doc["exposure"], doc["display"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim")
    head.add_column(justify="right")
    for label, value in (
        ("equity", d["equity"]), ("net", f"{d['net']} ({d['net_share_of_equity']} of equity)"),
        ("long / short", f"{d['long']} / {d['short']}"), ("gross", d["gross"]),
        ("UPL", d["unrealised_pnl"]), ("MM rate", d["mm_rate"]), ("buy share", d["buy_share"]),
    ):  # fmt: skip
        head.add_row(label, value)
    title = Text.assemble((e["account"], "bold"), "  ", _level(e["risk_level"]))
    positions = Table(title="positions", title_justify="left")
    for name in ("symbol", "side", "size", "notional", "lev.", "tier", "headroom", "liq. dist."):
        positions.add_column(name, justify="left" if name in ("symbol", "side") else "right")
    rows = e.get("positions") or e.get("riskiest_positions") or []
    for p in rows:
        heads = [p.get("headroom_to_next_tier"), p.get("headroom_to_leverage_cap")]
        room = min((float(h) for h in heads if h is not None), default=None)
        dist = p.get("liquidation_distance_pct")
        positions.add_row(
            p["symbol"], p["side"], p["size"], _usd(p["notional"]),
            f"{p['leverage']}x" if p.get("leverage") else "–",
            str(p.get("tier_id") or "–"),
            "–" if room is None else _usd(str(room)),
            "–" if dist is None else f"{float(dist):.1f}%",
        )  # fmt: skip
    return Group(title, head, positions)


def _usd(x: str) -> str:
    v = float(x)
    if abs(v) >= 1_000_000:
        return f"${v / 1_000_000:,.2f}M"
    return f"${v:,.0f}"


def what_if_view(doc: Any) -> Group:
    d = doc["display"]
    verdict = Text(d["verdict"], style="bold red" if doc["rejected"] else "bold green")
    lines: list[Any] = [
        Text(f"{doc['account']}: {doc['side']} {doc['qty']} {doc['symbol']} @ {doc['price']}"),
        verdict,
        Text(d["tier"]),
    ]
    if d.get("fix"):
        lines.append(Text("fix: " + d["fix"], style="yellow"))
    lines.append(Text("if it fills:", style="dim"))
    lines.extend(Text("  " + line) for line in d["after"])
    return Group(*lines)


# --------------------------------------------------------------------------- commands


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _print_json(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    sys.stdout.flush()


async def _exposure(client: Client, args: argparse.Namespace) -> int:
    if args.account:
        doc = await client.get(f"/v1/exposure/{args.account}")
        if args.json:
            _print_json(doc)
        else:
            _console().print(exposure_view(doc))
        return 0
    if args.json:
        _print_json(await client.get("/v1/exposure"))
        return 0
    _console().print(overview_table(await client.get("/v1/overview")))
    return 0


async def _alerts(client: Client, args: argparse.Namespace) -> int:
    path = "/v1/alerts" + (f"?account={args.account}" if args.account else "")
    doc = await client.get(path)
    if args.json:
        _print_json(doc)
    else:
        _console().print(alerts_table(doc["alerts"]))
    return 0


async def _what_if(client: Client, args: argparse.Namespace) -> int:
    ask: dict[str, Any] = {
        "account": args.account,
        "symbol": args.symbol,
        "side": args.side,
        "qty": args.qty,
        "price": args.price,
        "reduce_only": args.reduce_only,
    }
    if args.leverage is not None:
        ask["leverage"] = args.leverage
    doc = await client.post("/v1/what-if", ask)
    if args.json:
        _print_json(doc)
    else:
        _console().print(what_if_view(doc))
    return 0


async def _watch(client: Client, args: argparse.Namespace) -> int:
    """Redraw on every new overview; on a lost stream say so in the title and reconnect,
    so a frozen table never looks live. ``--count N`` stops after N updates."""
    from rich.live import Live

    seen = 0
    last: Any = None
    console = _console()
    with (
        Live(console=console, auto_refresh=False, transient=False)
        if not args.json
        else _Null() as live
    ):
        while True:
            try:
                async for doc in client.stream():
                    seen += 1
                    last = doc
                    if args.json:
                        _print_json(doc)
                    else:
                        live.update(overview_table(doc, status="live"), refresh=True)
                    if args.count and seen >= args.count:
                        return 0
                raise ApiError("the stream ended")
            except ApiError as exc:
                if args.count:
                    raise
                if args.json:
                    print(f"riskwatch watch: {exc}; reconnecting", file=sys.stderr)
                elif last is not None:
                    live.update(
                        overview_table(last, status=f"DISCONNECTED ({exc}); reconnecting"),
                        refresh=True,
                    )
                else:
                    console.print(f"[red]{exc}[/red]; reconnecting")
                await asyncio.sleep(RECONNECT_S)


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, *_: object, **__: object) -> None:
        return None


def _runner(
    command: Callable[[Client, argparse.Namespace], Any],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            if args.env_file is not None:
                load_env_file(args.env_file, os.environ)  # type: ignore[arg-type]
            settings = load_settings(ApiSettings)
        except ConfigError as exc:
            print(f"riskwatch {args.command}: {exc}", file=sys.stderr)
            return 2
        client = Client(settings, args.url)
        try:
            return int(asyncio.run(command(client, args)))
        except ApiError as exc:
            print(f"riskwatch {args.command}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


def add_parsers(sub: Any) -> None:
    """``watch``, ``exposure``, ``alerts``, ``what-if``."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="query API base URL (else RISKWATCH_API_URL)")
        p.add_argument("--json", action="store_true", help="the API's JSON document")
        p.add_argument(
            "--env-file", type=Path, help="fills variables the environment lacks (e.g. .env)"
        )

    w = sub.add_parser("watch", help="live table per account and the portfolio")
    common(w)
    w.add_argument("--count", type=int, default=0, help="stop after N updates (0: never)")
    w.set_defaults(func=_runner(_watch))
    e = sub.add_parser("exposure", help="exposure of every account, or one account's positions")
    e.add_argument("account", nargs="?", help="an account, or 'portfolio'")
    common(e)
    e.set_defaults(func=_runner(_exposure))
    a = sub.add_parser("alerts", help="active alerts with their current figures")
    a.add_argument("--account", help="only this account's ('portfolio' for portfolio-wide)")
    common(a)
    a.set_defaults(func=_runner(_alerts))
    q = sub.add_parser("what-if", help="what one more order would do, before you place it")
    q.add_argument("--account", required=True)
    q.add_argument("--symbol", required=True, type=str.upper)
    q.add_argument("--side", required=True, choices=("Buy", "Sell"), type=str.capitalize)
    q.add_argument("--qty", required=True, help="contracts, e.g. 0.5")
    q.add_argument("--price", required=True, help="limit price, USD")
    q.add_argument("--leverage", help="leverage to judge it at (default: the position's)")
    q.add_argument("--reduce-only", action="store_true")
    common(q)
    q.set_defaults(func=_runner(_what_if))
