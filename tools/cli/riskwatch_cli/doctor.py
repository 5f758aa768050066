"""``riskwatch doctor``: every outside system a deployment talks to, checked once, one line each.

Bybit keys (signature accepted, read-only, expiry, IP whitelist, via ``/v5/user/query-api``),
the Telegram chat (``getChat`` and a test message), the Slack webhook (a test message), the LLM
gateway (one small completion) and Kafka (a metadata request). The settings are the services'
own classes, read from the environment (``--env-file`` fills what the environment lacks), so a
value the doctor accepts is one the service accepts. Secrets never reach the output: every
line goes through the log redactor, which knows every secret the settings loaded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from ai_analyst.settings import AnalystSettings
from ingestor.accounts import AccountConfig, load_group
from ingestor.bybit.ratelimit import SlidingWindowLimiter
from ingestor.bybit.rest import BybitAuthError, BybitError, BybitIpBanned, BybitRest
from notifier.settings import NotifierSettings
from riskwatch_common.kafka import client_kwargs
from riskwatch_common.logs import redact, register_secret
from riskwatch_common.settings import ConfigError, KafkaSettings, load_settings
from riskwatch_common.topics import ALL_TOPICS

GUIDE = "docs/going-live.md"
TEST_MESSAGE = "riskwatch doctor: test message, alerts will arrive here"
# A key this close to its expiry date fails the check: renewing takes a human.
EXPIRY_WARNING_DAYS = 14
# Bybit's retCode for a request from an IP outside the key's whitelist.
_IP_NOT_ALLOWED = 10010


class Status(StrEnum):
    OK = "✓"
    FAIL = "✗"
    WARN = "!"
    OFF = "·"


@dataclass(frozen=True, slots=True)
class Check:
    status: Status
    subject: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status.value} {self.subject}: {self.detail}"
        if self.fix:
            text += f" (fix: {self.fix})"
        return redact(text)


def load_env_file(path: Path, environ: dict[str, str]) -> None:
    """``KEY=value`` lines of ``path`` into ``environ`` where it has no value yet."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"env file {path}: cannot be read ({exc.strerror})") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ConfigError(f"env file {path}, line {number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if value and not environ.get(name.strip()):
            environ[name.strip()] = value


# -- Bybit ------------------------------------------------------------------------------------


def _groups(path: Path) -> list[str]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []  # load_group reports the problem with the file's name
    accounts = doc.get("accounts") if isinstance(doc, dict) else None
    if not isinstance(accounts, list):
        return []
    return sorted({str(a["group"]) for a in accounts if isinstance(a, dict) and "group" in a})


def _key_check(account: AccountConfig, info: Mapping[str, Any], now: datetime) -> Check:
    subject = f"bybit {account.name} ({account.environment.value})"
    owner = "main account" if info.get("isMaster") else f"sub-account of {info.get('parentUid')}"
    facts = [f"key accepted, UID {info.get('userID')} ({owner})"]
    problems: list[tuple[str, str]] = []
    if int(info.get("readOnly", 0)) != 1:
        problems.append(
            (
                "the key can trade (readOnly=0)",
                "create a read-only key in Bybit API management and put it in the key files",
            )
        )
    else:
        facts.append("read-only")
    permissions = info.get("permissions") or {}
    if any("Withdraw" in (perms or ()) for perms in permissions.values()):
        problems.append(("the key may withdraw", "create a key without the Withdraw permission"))
    expired_at = str(info.get("expiredAt") or "")
    if expired_at:
        expiry = datetime.fromisoformat(expired_at.replace("Z", "+00:00"))
        days = (expiry - now).days
        if expiry <= now:
            problems.append((f"the key expired on {expired_at}", "create a new key"))
        elif days < EXPIRY_WARNING_DAYS:
            problems.append(
                (
                    f"the key expires in {days} days ({expired_at})",
                    "renew it; a key bound to IP addresses does not expire",
                )
            )
        else:
            facts.append(f"expires {expired_at[:10]}")
    else:
        facts.append("no expiry")
    ips = [str(ip) for ip in info.get("ips") or ()]
    unbound = not ips or "*" in ips
    if problems:
        detail = "; ".join(p for p, _ in problems)
        return Check(Status.FAIL, subject, detail, "; ".join(f for _, f in problems))
    if unbound:
        facts.append("no IP whitelist")
        return Check(
            Status.WARN,
            subject,
            ", ".join(facts),
            "bind the key to your egress IP in Bybit API management",
        )
    facts.append(f"IP whitelist {','.join(ips)}")
    return Check(Status.OK, subject, ", ".join(facts))


async def check_bybit(
    accounts_file: Path,
    session: aiohttp.ClientSession,
    *,
    env: Mapping[str, str] | None = None,
    now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> list[Check]:
    """One line per account of every group in ``accounts_file``."""
    groups = _groups(accounts_file)
    if not groups:
        # an unreadable or invalid file: the ingestor's loader says what is wrong with it
        try:
            load_group(accounts_file, "(any)", env=env)
        except ConfigError as exc:
            return [Check(Status.FAIL, "accounts", str(exc), f"see {GUIDE}, step 2")]
        return [Check(Status.FAIL, "accounts", f"{accounts_file}: no account has a group")]
    # one key check per account is far below Bybit's per-IP budget; the limiter keeps it so
    rest = BybitRest(
        session,
        ip_limiter=SlidingWindowLimiter(50, 5.0),
        max_attempts=2,
        timeout_s=10.0,
        now_ms=now_ms,
    )
    checks: list[Check] = []
    for group in groups:
        try:
            config = load_group(accounts_file, group, env=env)
        except ConfigError as exc:
            checks.append(Check(Status.FAIL, f"accounts group {group}", str(exc), f"see {GUIDE}"))
            continue
        for account in config.accounts:
            checks.append(await _check_key(rest, account, now_ms))
    return checks


async def _check_key(rest: BybitRest, account: AccountConfig, now_ms: Callable[[], int]) -> Check:
    subject = f"bybit {account.name} ({account.environment.value})"
    try:
        reply = await rest.get(
            account.endpoints.rest_url, "/v5/user/query-api", [], account=account
        )
    except BybitAuthError as exc:
        if exc.ret_code == _IP_NOT_ALLOWED:
            return Check(
                Status.FAIL,
                subject,
                f"this machine's IP is not in the key's whitelist ({exc.message})",
                "add the egress IP to the key in Bybit API management",
            )
        return Check(
            Status.FAIL,
            subject,
            f"key rejected ({exc.ret_code if exc.ret_code is not None else 'HTTP 401'}: "
            f"{exc.message})",
            f"check the key files of '{account.name}'; a key works only in the environment "
            f"it was made in ({account.environment.value})",
        )
    except BybitIpBanned as exc:
        return Check(
            Status.FAIL, subject, exc.message, "wait 10 minutes; fewer REST calls from this IP"
        )
    except BybitError as exc:
        return Check(Status.FAIL, subject, str(exc), f"check {account.endpoints.rest_url}")
    now = datetime.fromtimestamp(now_ms() / 1000, UTC)
    return _key_check(account, reply.result, now)


# -- Telegram, Slack, LLM -----------------------------------------------------------------------


async def _request(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, bytes]:
    async with session.request(method, url, **kw) as resp:
        return resp.status, await resp.read()


def _network_problem(exc: BaseException) -> str:
    # the exception text may hold the URL, and with it a token: the type says enough
    return f"no answer ({type(exc).__name__})"


async def check_telegram(settings: NotifierSettings, session: aiohttp.ClientSession) -> Check:
    subject = "telegram"
    if settings.telegram_bot_token is None or not settings.telegram_chat_id:
        return Check(
            Status.OFF,
            subject,
            "off (NOTIFIER_TELEGRAM_BOT_TOKEN and NOTIFIER_TELEGRAM_CHAT_ID unset)",
            f"{GUIDE}, step 3, to turn it on",
        )
    token = settings.telegram_bot_token.get_secret_value()
    base = f"{settings.telegram_api_base.rstrip('/')}/bot{token}"
    chat_id = settings.telegram_chat_id
    try:
        status, body = await _request(session, "POST", f"{base}/getChat", json={"chat_id": chat_id})
        chat = _telegram_result(status, body)
        if isinstance(chat, str):
            return Check(Status.FAIL, subject, f"getChat {chat_id}: {chat}", _telegram_fix(chat))
        status, body = await _request(
            session, "POST", f"{base}/sendMessage", json={"chat_id": chat_id, "text": TEST_MESSAGE}
        )
        sent = _telegram_result(status, body)
        if isinstance(sent, str):
            return Check(Status.FAIL, subject, f"sendMessage: {sent}", _telegram_fix(sent))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(
            Status.FAIL,
            subject,
            _network_problem(exc),
            f"check NOTIFIER_TELEGRAM_API_BASE ({settings.telegram_api_base})",
        )
    title = chat.get("title") or chat.get("username") or chat.get("first_name") or chat_id
    return Check(
        Status.OK, subject, f"chat '{title}' ({chat.get('type')}) found, test message sent"
    )


def _telegram_result(status: int, body: bytes) -> dict[str, Any] | str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"HTTP {status}, not a Bot API answer"
    if status == 200 and isinstance(doc, dict) and doc.get("ok"):
        result = doc.get("result")
        return result if isinstance(result, dict) else {}
    description = doc.get("description") if isinstance(doc, dict) else None
    return f"HTTP {status} {description or ''}".strip()


def _telegram_fix(problem: str) -> str:
    if "401" in problem or "404" in problem:
        return "the bot token is wrong: copy it again from @BotFather (/mybots, API Token)"
    if "chat not found" in problem or "403" in problem:
        return (
            "add the bot to the chat, send it a message, and take the chat id from getUpdates "
            f"({GUIDE}, step 3)"
        )
    return f"see {GUIDE}, step 3"


async def check_slack(settings: NotifierSettings, session: aiohttp.ClientSession) -> Check:
    subject = "slack"
    if settings.slack_webhook_url is None:
        return Check(
            Status.OFF, subject, "off (NOTIFIER_SLACK_WEBHOOK_URL unset)", f"{GUIDE}, step 4"
        )
    try:
        status, body = await _request(
            session,
            "POST",
            settings.slack_webhook_url.get_secret_value(),
            json={"text": TEST_MESSAGE},
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(Status.FAIL, subject, _network_problem(exc), "check the webhook URL")
    if status == 200:
        return Check(Status.OK, subject, "test message sent")
    answer = body[:80].decode(errors="replace")
    return Check(
        Status.FAIL,
        subject,
        f"webhook answered HTTP {status} {answer}",
        f"create a new incoming webhook for the channel ({GUIDE}, step 4)",
    )


async def check_llm(settings: AnalystSettings, session: aiohttp.ClientSession) -> Check:
    subject = "llm gateway"
    if settings.holysheep_api_key is None:
        return Check(
            Status.OFF,
            subject,
            "off (HOLYSHEEP_API_KEY unset): analyses are the deterministic ones",
            f"{GUIDE}, step 5, to turn it on",
        )
    # the smallest call that proves key, model and quota: one token out
    payload = {
        "model": settings.cheap_model,
        "messages": [{"role": "user", "content": "Reply with OK."}],
        "max_tokens": 1,
    }
    headers = {"Authorization": f"Bearer {settings.holysheep_api_key.get_secret_value()}"}
    url = f"{settings.base_url.rstrip('/')}/chat/completions"
    try:
        status, body = await _request(session, "POST", url, json=payload, headers=headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(
            Status.FAIL,
            subject,
            _network_problem(exc),
            f"check AI_ANALYST_BASE_URL ({settings.base_url})",
        )
    if status == 200:
        try:
            usage = orjson.loads(body).get("usage") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return Check(Status.FAIL, subject, "HTTP 200 but not an OpenAI-style answer", url)
        tokens = usage.get("total_tokens", "?")
        return Check(Status.OK, subject, f"{settings.cheap_model} answered ({tokens} tokens)")
    fixes = {
        401: "HOLYSHEEP_API_KEY is wrong or revoked",
        403: "HOLYSHEEP_API_KEY is not allowed this model",
        402: "the gateway account has no credit left",
        404: f"AI_ANALYST_CHEAP_MODEL ({settings.cheap_model}) or AI_ANALYST_BASE_URL is wrong",
        429: "quota or rate limit reached; wait or raise the plan",
    }
    return Check(
        Status.FAIL,
        subject,
        f"{settings.cheap_model}: HTTP {status}",
        fixes.get(status, f"the gateway at {settings.base_url} failed; try again later"),
    )


# -- Kafka --------------------------------------------------------------------------------------


async def check_kafka(kafka: KafkaSettings, *, timeout_s: float = 10.0) -> Check:
    subject = f"kafka {kafka.bootstrap_servers}"
    client = AIOKafkaClient(
        **client_kwargs(kafka),
        request_timeout_ms=int(timeout_s * 1000),
        client_id="riskwatch-doctor",
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        metadata = await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
    except (TimeoutError, OSError, KafkaError) as exc:
        return Check(
            Status.FAIL,
            subject,
            f"no metadata ({type(exc).__name__})",
            "start the broker, or fix KAFKA_BOOTSTRAP_SERVERS / KAFKA_SECURITY_PROTOCOL",
        )
    finally:
        await client.close()
    brokers = len(metadata.brokers())
    present = metadata.topics()
    missing = [t.qualified(kafka.topic_namespace) for t in ALL_TOPICS]
    missing = [name for name in missing if name not in present]
    if missing:
        return Check(
            Status.FAIL,
            subject,
            f"{brokers} broker(s); {len(missing)} registry topics missing ({missing[0]}, ...)",
            "create them: `docker compose up topic-init`, or the create-topics init container",
        )
    return Check(Status.OK, subject, f"{brokers} broker(s), all {len(ALL_TOPICS)} topics present")


# -- the command --------------------------------------------------------------------------------


def _settings_check(subject: str, load: Callable[[], Any]) -> tuple[Any, Check | None]:
    try:
        return load(), None
    except ConfigError as exc:
        return None, Check(Status.FAIL, subject, str(exc), f"set it in .env ({GUIDE})")


async def run_doctor(accounts_file: Path | None) -> list[Check]:
    """Every check, in the order a deployment needs them."""
    checks: list[Check] = []
    notifier, problem = _settings_check(
        "notifier settings", lambda: load_settings(NotifierSettings)
    )
    checks += [problem] if problem else []
    analyst, problem = _settings_check(
        "ai-analyst settings", lambda: load_settings(AnalystSettings)
    )
    checks += [problem] if problem else []
    kafka, problem = _settings_check("kafka settings", lambda: load_settings(KafkaSettings))
    checks += [problem] if problem else []
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        steps: list[Awaitable[list[Check]]] = []
        if accounts_file is None:
            checks.append(
                Check(
                    Status.FAIL,
                    "accounts",
                    "no accounts file (INGESTOR_ACCOUNTS_FILE unset, no --accounts)",
                    f"`riskwatch init` writes one ({GUIDE}, step 2)",
                )
            )
        else:
            steps.append(check_bybit(accounts_file, session))
        if notifier is not None:
            steps.append(_one(check_telegram(notifier, session)))
            steps.append(_one(check_slack(notifier, session)))
        if analyst is not None:
            steps.append(_one(check_llm(analyst, session)))
        if kafka is not None:
            steps.append(_one(check_kafka(kafka)))
        for found in await asyncio.gather(*steps):
            checks.extend(found)
    return checks


async def _one(check: Awaitable[Check]) -> list[Check]:
    return [await check]


def doctor(env_file: Path | None, accounts: Path | None) -> int:
    """Print one line per check; exit status 1 when any failed."""
    if env_file is not None:
        try:
            load_env_file(env_file, os.environ)  # type: ignore[arg-type]
        except ConfigError as exc:
            print(Check(Status.FAIL, "env file", str(exc)).line(), flush=True)
            return 1
    for name in ("NOTIFIER_TELEGRAM_BOT_TOKEN", "NOTIFIER_SLACK_WEBHOOK_URL", "HOLYSHEEP_API_KEY"):
        register_secret(os.environ.get(name))
    path = accounts or (
        Path(os.environ["INGESTOR_ACCOUNTS_FILE"])
        if os.environ.get("INGESTOR_ACCOUNTS_FILE")
        else None
    )
    checks = asyncio.run(run_doctor(path))
    for check in checks:
        print(check.line(), flush=True)
    failed = sum(c.status is Status.FAIL for c in checks)
    print(f"{len(checks)} checks, {failed} failed", flush=True)
    return 1 if failed else 0
