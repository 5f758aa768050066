"""The accounts file: which Bybit accounts exist, where their keys come from, their groups.

The file never holds a key or a secret: each account names the environment variables or the
mounted secret files to read them from. Only the selected group's credentials are read, so a
process for group A does not need group B's variables. Every problem is reported at startup
as one ``ConfigError`` that names the account and the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from riskwatch_common.contracts import RESERVED_ACCOUNT_NAMES, is_reserved_account
from riskwatch_common.logs import register_secret
from riskwatch_common.settings import ConfigError, check_outbound_url, load_config_file


class AccountType(StrEnum):
    UNIFIED = "unified"
    STANDARD = "standard"


class PositionMode(StrEnum):
    ONE_WAY = "one_way"
    HEDGE = "hedge"


class Environment(StrEnum):
    MAINNET = "mainnet"
    TESTNET = "testnet"
    DEMO = "demo"
    SIMULATOR = "simulator"


@dataclass(frozen=True, slots=True)
class Endpoints:
    rest_url: str
    ws_private_url: str
    ws_public_url: str
    # Public market data (risk limits): demo has none of its own and reads mainnet.
    market_rest_url: str


_MAINNET = Endpoints(
    rest_url="https://api.bybit.com",
    ws_private_url="wss://stream.bybit.com/v5/private",
    ws_public_url="wss://stream.bybit.com/v5/public/linear",
    market_rest_url="https://api.bybit.com",
)
KNOWN_ENDPOINTS: dict[Environment, Endpoints] = {
    Environment.MAINNET: _MAINNET,
    Environment.TESTNET: Endpoints(
        rest_url="https://api-testnet.bybit.com",
        ws_private_url="wss://stream-testnet.bybit.com/v5/private",
        ws_public_url="wss://stream-testnet.bybit.com/v5/public/linear",
        market_rest_url="https://api-testnet.bybit.com",
    ),
    # docs/bybit-v5.md §3.1: stream-demo serves private streams only; public data is mainnet's.
    Environment.DEMO: Endpoints(
        rest_url="https://api-demo.bybit.com",
        ws_private_url="wss://stream-demo.bybit.com/v5/private",
        ws_public_url=_MAINNET.ws_public_url,
        market_rest_url=_MAINNET.market_rest_url,
    ),
}


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: SecretStr
    api_secret: SecretStr


@dataclass(frozen=True, slots=True)
class AccountConfig:
    name: str
    group: str
    account_type: AccountType
    position_mode: PositionMode
    environment: Environment
    endpoints: Endpoints
    credentials: Credentials
    settle_coins: tuple[str, ...] = ("USDT",)

    @property
    def wallet_account_type(self) -> str:
        # Classic ("standard") accounts keep derivatives in the CONTRACT wallet (§2.3).
        return "UNIFIED" if self.account_type is AccountType.UNIFIED else "CONTRACT"


@dataclass(frozen=True, slots=True)
class GroupConfig:
    name: str
    accounts: tuple[AccountConfig, ...]
    # One public connection serves the whole group, so its accounts share one market source.
    market: Endpoints
    # Groups of the file (this one included) that leave through the same egress IP, and so
    # share Bybit's per-IP limits (top-level ``egress:``; groups not named there share one).
    egress_peers: int = 1


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_ACCOUNT_FIELDS = {
    "name",
    "group",
    "account_type",
    "position_mode",
    "environment",
    "urls",
    "credentials",
    "settle_coins",
}
_URL_FIELDS = ("rest_url", "ws_private_url", "ws_public_url", "market_rest_url")
_CRED_FIELDS = ("api_key_env", "api_key_file", "api_secret_env", "api_secret_file")
_LITERAL_SECRET_FIELDS = ("api_key", "api_secret", "key", "secret")


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, where: str, field: str, what: str) -> None:
        self.items.append(f"{where}: field '{field}' {what}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(f"accounts file {self.path}: " + "; ".join(self.items))


def load_group(path: Path, group: str, *, env: Mapping[str, str] | None = None) -> GroupConfig:
    """Validate the whole file, then read the credentials of ``group``'s accounts."""
    environ = os.environ if env is None else env
    doc = load_config_file(path, "accounts file")
    problems = _Problems(path)
    if not isinstance(doc, dict):
        raise ConfigError(f"accounts file {path}: must be a mapping with an 'accounts' list")
    unknown_top = set(doc) - {"simulator", "accounts", "egress"}
    for key in sorted(unknown_top):
        problems.add("file", key, "is not a known top-level key (simulator, accounts, egress)")
    sim_urls = _simulator_defaults(doc.get("simulator"), problems)
    raw_accounts = doc.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        problems.add("file", "accounts", "must be a non-empty list")
        problems.raise_if_any()
        raise AssertionError("unreachable")
    parsed: list[_Parsed] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_accounts):
        item = _parse_account(i, raw, sim_urls, problems)
        if item is None:
            continue
        if item.name in seen:
            problems.add(
                f"account '{item.name}' (accounts[{i}])",
                "name",
                f"duplicates accounts[{seen[item.name]}]",
            )
            continue
        seen[item.name] = i
        parsed.append(item)
    egress = _egress(doc.get("egress"), {p.group for p in parsed}, problems)
    problems.raise_if_any()
    members = [p for p in parsed if p.group == group]
    if not members:
        groups = sorted({p.group for p in parsed})
        raise ConfigError(
            f"accounts file {path}: group '{group}' has no accounts (groups: {', '.join(groups)})"
        )
    accounts = []
    for p in members:
        creds = _read_credentials(p, environ, path.parent, problems)
        if creds is not None:
            accounts.append(p.build(creds))
    problems.raise_if_any()
    market = accounts[0].endpoints
    for acc in accounts[1:]:
        if (acc.endpoints.ws_public_url, acc.endpoints.market_rest_url) != (
            market.ws_public_url,
            market.market_rest_url,
        ):
            problems.add(
                f"account '{acc.name}'",
                "environment",
                f"uses market data from {acc.endpoints.ws_public_url} but group '{group}' "
                f"already uses {market.ws_public_url}: one group needs one market-data source",
            )
    problems.raise_if_any()
    mine = egress.get(group, _SHARED_EGRESS)
    peers = sum(egress.get(g, _SHARED_EGRESS) == mine for g in {p.group for p in parsed})
    return GroupConfig(name=group, accounts=tuple(accounts), market=market, egress_peers=peers)


_SHARED_EGRESS = "\x00shared"  # the egress of every group the file does not name


def _egress(raw: Any, groups: set[str], problems: _Problems) -> dict[str, str]:
    """``egress: {group: label}``: groups with one label leave through one IP."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add("file", "egress", "must map group names to an egress label")
        return {}
    out = {}
    for name, label in raw.items():
        if str(name) not in groups:
            problems.add(
                "egress", str(name), f"is not a group of this file ({', '.join(sorted(groups))})"
            )
        elif not isinstance(label, str) or not label:
            problems.add("egress", str(name), "must be a non-empty label, e.g. nat-eu-1")
        else:
            out[str(name)] = label
    return out


@dataclass(frozen=True, slots=True)
class _Parsed:
    index: int
    name: str
    group: str
    account_type: AccountType
    position_mode: PositionMode
    environment: Environment
    endpoints: Endpoints
    cred_spec: dict[str, str]
    settle_coins: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"account '{self.name}' (accounts[{self.index}])"

    def build(self, creds: Credentials) -> AccountConfig:
        return AccountConfig(
            name=self.name,
            group=self.group,
            account_type=self.account_type,
            position_mode=self.position_mode,
            environment=self.environment,
            endpoints=self.endpoints,
            credentials=creds,
            settle_coins=self.settle_coins,
        )


def _simulator_defaults(raw: Any, problems: _Problems) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add("simulator", "simulator", "must be a mapping of URLs")
        return {}
    return _urls(raw, "simulator", problems)


def _urls(raw: dict[str, Any], where: str, problems: _Problems, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in raw.items():
        if key not in _URL_FIELDS:
            problems.add(where, f"{prefix}{key}", f"is not one of {', '.join(_URL_FIELDS)}")
        elif not isinstance(value, str) or not re.match(r"^(https?|wss?)://", value):
            problems.add(where, f"{prefix}{key}", "must be an http(s):// or ws(s):// URL")
        else:
            out[key] = value.rstrip("/")
    return out


def _enum(
    cls: type[StrEnum], raw: dict[str, Any], field: str, where: str, problems: _Problems
) -> Any:
    value = raw.get(field)
    choices = ", ".join(m.value for m in cls)
    if value is None:
        problems.add(where, field, f"is required (one of {choices})")
        return None
    try:
        return cls(value)
    except ValueError:
        problems.add(where, field, f"is {value!r}, expected one of {choices}")
        return None


def _parse_account(
    index: int, raw: Any, sim_urls: dict[str, str], problems: _Problems
) -> _Parsed | None:
    if not isinstance(raw, dict):
        problems.add(f"accounts[{index}]", "accounts", "entry must be a mapping")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.add(
            f"accounts[{index}]", "name", "is required: letters, digits, '_', '-', '.' (max 64)"
        )
        return None
    where = f"account '{name}' (accounts[{index}])"
    if is_reserved_account(name):
        problems.add(
            where,
            "name",
            f"is reserved (the processor uses {', '.join(sorted(RESERVED_ACCOUNT_NAMES))} "
            "for itself): choose another name",
        )
        return None
    ok = True
    for key in raw:
        if key in _LITERAL_SECRET_FIELDS:
            problems.add(
                where,
                key,
                "holds a secret value; the file may only name where it comes from "
                "(credentials.api_key_env / api_key_file, api_secret_env / api_secret_file)",
            )
            ok = False
        elif key not in _ACCOUNT_FIELDS:
            problems.add(where, key, f"is not a known field ({', '.join(sorted(_ACCOUNT_FIELDS))})")
            ok = False
    group = raw.get("group")
    if not isinstance(group, str) or not _NAME.match(group):
        problems.add(where, "group", "is required: letters, digits, '_', '-', '.'")
        ok = False
    account_type = _enum(AccountType, raw, "account_type", where, problems)
    position_mode = _enum(PositionMode, raw, "position_mode", where, problems)
    environment = _enum(Environment, raw, "environment", where, problems)
    endpoints = _endpoints(environment, raw.get("urls"), sim_urls, where, problems)
    cred_spec = _cred_spec(raw.get("credentials"), where, problems)
    settle = raw.get("settle_coins", ["USDT"])
    if (
        not isinstance(settle, list)
        or not settle
        or not all(isinstance(c, str) and c.isalnum() and c.isupper() for c in settle)
    ):
        problems.add(where, "settle_coins", "must be a non-empty list like [USDT, USDC]")
        ok = False
    if (
        not ok
        or account_type is None
        or position_mode is None
        or environment is None
        or endpoints is None
        or cred_spec is None
    ):
        return None
    return _Parsed(
        index=index,
        name=name,
        group=str(group),
        account_type=account_type,
        position_mode=position_mode,
        environment=environment,
        endpoints=endpoints,
        cred_spec=cred_spec,
        settle_coins=tuple(settle),
    )


def _endpoints(
    environment: Environment | None,
    raw_urls: Any,
    sim_urls: dict[str, str],
    where: str,
    problems: _Problems,
) -> Endpoints | None:
    if raw_urls is not None and not isinstance(raw_urls, dict):
        problems.add(where, "urls", "must be a mapping of URLs")
        return None
    given = _urls(raw_urls or {}, where, problems, prefix="urls.")
    if environment is None:
        return None
    if environment is not Environment.SIMULATOR:
        # Real keys travel to these hosts: TLS, except to a local proxy on loopback.
        for key, url in list(given.items()):
            try:
                check_outbound_url(url)
            except ValueError as exc:
                problems.add(where, f"urls.{key}", str(exc))
                del given[key]
    if environment is Environment.SIMULATOR:
        merged = {**sim_urls, **given}
        missing = [k for k in _URL_FIELDS[:3] if k not in merged]
        if missing:
            problems.add(
                where,
                "urls." + missing[0],
                "is required for environment 'simulator' (set it on the account or in the "
                "top-level 'simulator' block)",
            )
            return None
        return Endpoints(
            rest_url=merged["rest_url"],
            ws_private_url=merged["ws_private_url"],
            ws_public_url=merged["ws_public_url"],
            market_rest_url=merged.get("market_rest_url", merged["rest_url"]),
        )
    base = KNOWN_ENDPOINTS[environment]
    if given:
        # Regional hosts (api.bybit.nl, bytick) are the same exchange under another name.
        return Endpoints(
            rest_url=given.get("rest_url", base.rest_url),
            ws_private_url=given.get("ws_private_url", base.ws_private_url),
            ws_public_url=given.get("ws_public_url", base.ws_public_url),
            market_rest_url=given.get("market_rest_url", base.market_rest_url),
        )
    return base


def _cred_spec(raw: Any, where: str, problems: _Problems) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        problems.add(
            where,
            "credentials",
            "is required: api_key_env or api_key_file, and api_secret_env or api_secret_file",
        )
        return None
    ok = True
    for key, value in raw.items():
        if key not in _CRED_FIELDS:
            hint = (
                " (secret values are never allowed in the file)"
                if key in _LITERAL_SECRET_FIELDS
                else ""
            )
            problems.add(
                where, f"credentials.{key}", f"is not one of {', '.join(_CRED_FIELDS)}{hint}"
            )
            ok = False
        elif not isinstance(value, str) or not value:
            problems.add(where, f"credentials.{key}", "must be a non-empty string")
            ok = False
    for what in ("api_key", "api_secret"):
        sources = [k for k in (f"{what}_env", f"{what}_file") if k in raw]
        if len(sources) != 1:
            problems.add(
                where,
                f"credentials.{what}_env",
                f"exactly one of {what}_env or {what}_file is required",
            )
            ok = False
    return {str(k): str(v) for k, v in raw.items()} if ok else None


def _read_credentials(
    parsed: _Parsed, environ: Mapping[str, str], base_dir: Path, problems: _Problems
) -> Credentials | None:
    values: dict[str, str] = {}
    for what in ("api_key", "api_secret"):
        env_name = parsed.cred_spec.get(f"{what}_env")
        if env_name is not None:
            value = environ.get(env_name, "").strip()
            if not value:
                problems.add(
                    parsed.where,
                    f"credentials.{what}_env",
                    f"names environment variable {env_name}, which is not set",
                )
                continue
        else:
            file_path = Path(parsed.cred_spec[f"{what}_file"])
            if not file_path.is_absolute():
                file_path = base_dir / file_path
            try:
                value = file_path.read_text().strip()
            except OSError as exc:
                problems.add(
                    parsed.where,
                    f"credentials.{what}_file",
                    f"names {file_path}, which cannot be read ({exc.strerror})",
                )
                continue
            if not value:
                problems.add(parsed.where, f"credentials.{what}_file", f"{file_path} is empty")
                continue
        values[what] = value
    if len(values) != 2:
        return None
    # Registered before anything can log them: a key inside an error text is redacted too.
    register_secret(values["api_key"])
    register_secret(values["api_secret"])
    return Credentials(SecretStr(values["api_key"]), SecretStr(values["api_secret"]))
