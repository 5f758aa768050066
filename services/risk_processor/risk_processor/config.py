"""Risk configuration: thresholds per account, group and portfolio; account profiles.

The file (YAML or JSON, ``RISK_PROCESSOR_THRESHOLDS_FILE``) is optional; without it every
account uses the defaults of docs/product.md. Precedence, later wins: those defaults,
the file's ``thresholds``, ``RISK_PROCESSOR_NET_EXPOSURE_LIMIT_USD``, the account's group,
the account itself. The portfolio uses the base plus the file's ``portfolio`` section.

```yaml
thresholds: {net_exposure_usd: 10000, unrealized_loss_usd: -1000}
portfolio: {net_exposure_usd: 25000}
groups:
  hedgers: {net_exposure_usd: 20000}
accounts:
  main:
    group: core
    account_type: unified
    margin_mode: cross
    thresholds: {net_exposure_usd: 5000}
alert_policy: {clear_after: 3, settle_after: 3, update_change: 0.10, update_interval_s: 60}
portfolio_warmup: {accounts: [main, sub_trading], timeout_s: 120}
```

``net_exposure_usd`` is opt-in (off by default). ``portfolio_warmup.accounts`` defaults
to the accounts listed under ``accounts``.

Margin mode and position mode are not on the wire (the ingestor does not publish them), so
they come from here; position mode is also inferred from hedge-mode position indexes and
account type from the wallet's account type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from risk_processor.engine import (
    DEFAULT_ALERT_POLICY,
    DEFAULT_THRESHOLDS,
    AccountType,
    AlertPolicy,
    MarginMode,
    PositionMode,
    Thresholds,
    resolve_thresholds,
    threshold_resolver,
)
from riskwatch_common.settings import ConfigError, load_config_file


@dataclass(frozen=True, slots=True)
class AccountSetup:
    """What the file says about one account; ``None`` means "infer from the data"."""

    group: str | None = None
    account_type: AccountType | None = None
    margin_mode: MarginMode = MarginMode.CROSS
    position_mode: PositionMode | None = None


@dataclass(frozen=True, slots=True)
class RiskConfig:
    base: Thresholds = DEFAULT_THRESHOLDS
    portfolio: Thresholds = DEFAULT_THRESHOLDS
    alert_policy: AlertPolicy = DEFAULT_ALERT_POLICY
    accounts: Mapping[str, AccountSetup] = field(default_factory=dict)
    group_overrides: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    account_overrides: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    # Portfolio rules wait until these accounts completed their first resync, or until
    # ``warmup_timeout`` after the first one was seen (see engine.portfolio_readiness).
    portfolio_accounts: frozenset[str] = frozenset()
    warmup_timeout: timedelta = timedelta(seconds=120)
    _resolve: Callable[[str, str | None], Thresholds] | None = None

    def setup(self, account: str) -> AccountSetup:
        return self.accounts.get(account) or _DEFAULT_SETUP

    def thresholds(self, account: str) -> Thresholds:
        """Thresholds of ``account`` (memoised; a dict lookup per call after the first)."""
        resolve = self._resolve
        if resolve is None:
            resolve = threshold_resolver(self.base, self.group_overrides, self.account_overrides)
            object.__setattr__(self, "_resolve", resolve)
        return resolve(account, self.setup(account).group)


_DEFAULT_SETUP = AccountSetup()
_TOP_KEYS = {"thresholds", "portfolio", "groups", "accounts", "alert_policy", "portfolio_warmup"}
_ACCOUNT_KEYS = {"group", "account_type", "margin_mode", "position_mode", "thresholds"}
_POLICY_KEYS = {"clear_after", "settle_after", "update_change", "update_interval_s"}
_WARMUP_KEYS = {"accounts", "timeout_s"}
DEFAULT_WARMUP_TIMEOUT = timedelta(seconds=120)


class _Problems:
    """Every problem of the document, each naming its place; raised together at the end."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.found.append(f"{where}: {message}" if where else message)

    def mapping(self, value: object, where: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(where, "must be a mapping")
            return {}
        return value

    def enum(self, kind: Any, value: object, where: str) -> Any:
        try:
            return kind(str(value))
        except ValueError:
            choices = ", ".join(m.value for m in kind)
            self.add(where, f"{value!r} is not one of {choices}")
            return None

    def thresholds(
        self, where: str, base: Thresholds, *overrides: Mapping[str, object] | None
    ) -> Thresholds | None:
        try:
            return resolve_thresholds(base, *overrides)
        except ValueError as exc:
            self.add(where, str(exc))
            return None

    def number(self, raw: object, where: str) -> Decimal | None:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
            self.add(where, f"{raw!r} is not a number")
            return None
        try:
            value = Decimal(str(raw))
        except ArithmeticError:
            self.add(where, f"{raw!r} is not a number")
            return None
        if not value.is_finite():
            self.add(where, f"{raw!r} is not finite")
            return None
        return value


def _policy(problems: _Problems, raw: Mapping[str, Any]) -> AlertPolicy:
    unknown = set(raw) - _POLICY_KEYS
    if unknown:
        problems.add("alert_policy", f"unknown keys {sorted(unknown)}")
    d = DEFAULT_ALERT_POLICY
    values: dict[str, Decimal] = {}
    for key in sorted(_POLICY_KEYS & set(raw)):
        found = problems.number(raw[key], f"alert_policy.{key}")
        if found is not None:
            values[key] = found
    try:
        return AlertPolicy(
            clear_after=int(values.get("clear_after", d.clear_after)),
            settle_after=int(values.get("settle_after", d.settle_after)),
            update_change=values.get("update_change", d.update_change),
            update_interval=timedelta(seconds=float(values["update_interval_s"]))
            if "update_interval_s" in values
            else d.update_interval,
        )
    except ValueError as exc:
        problems.add("alert_policy", str(exc))
        return d


def _warmup(problems: _Problems, raw: Mapping[str, Any]) -> tuple[list[str] | None, timedelta]:
    unknown = set(raw) - _WARMUP_KEYS
    if unknown:
        problems.add("portfolio_warmup", f"unknown keys {sorted(unknown)}")
    listed = raw.get("accounts")
    if listed is not None and not (
        isinstance(listed, list) and all(isinstance(a, str) for a in listed)
    ):
        problems.add("portfolio_warmup.accounts", "must be a list of account names")
        listed = None
    timeout = DEFAULT_WARMUP_TIMEOUT
    if "timeout_s" in raw:
        seconds = problems.number(raw["timeout_s"], "portfolio_warmup.timeout_s")
        if seconds is not None and seconds <= 0:
            problems.add("portfolio_warmup.timeout_s", f"{seconds} must be positive")
        elif seconds is not None:
            timeout = timedelta(seconds=float(seconds))
    return listed, timeout


def parse_config(
    doc: object,
    *,
    net_exposure_limit_usd: Decimal | None = None,
    source: str = "thresholds file",
) -> RiskConfig:
    """Validate a parsed thresholds document.

    Every problem is collected, each naming its section and field, and raised as one
    ``ConfigError`` line beginning with ``source`` (the file), not only the first.
    """
    problems = _Problems()
    top = problems.mapping(doc, "the document")
    unknown = set(top) - _TOP_KEYS
    if unknown:
        problems.add("", f"unknown top-level keys {sorted(unknown)}")
    env: dict[str, object] = {}
    if net_exposure_limit_usd is not None:
        env["net_exposure_usd"] = net_exposure_limit_usd
    own_base = problems.mapping(top.get("thresholds"), "thresholds")
    base = problems.thresholds("thresholds", DEFAULT_THRESHOLDS, own_base, env)
    below = base or DEFAULT_THRESHOLDS
    portfolio = problems.thresholds(
        "portfolio", below, problems.mapping(top.get("portfolio"), "portfolio")
    )
    groups = {
        str(name): dict(problems.mapping(values, f"groups.{name}"))
        for name, values in problems.mapping(top.get("groups"), "groups").items()
    }
    for group_name, values in groups.items():
        problems.thresholds(f"groups.{group_name}", below, values)
    accounts: dict[str, AccountSetup] = {}
    account_overrides: dict[str, dict[str, object]] = {}
    for name, raw in problems.mapping(top.get("accounts"), "accounts").items():
        where = f"accounts.{name}"
        item = problems.mapping(raw, where)
        bad = set(item) - _ACCOUNT_KEYS
        if bad:
            problems.add(where, f"unknown keys {sorted(bad)}")
        group = str(item["group"]) if item.get("group") is not None else None
        account_type = (
            problems.enum(AccountType, item["account_type"], f"{where}.account_type")
            if "account_type" in item
            else None
        )
        margin_mode = problems.enum(
            MarginMode, item.get("margin_mode", "cross"), f"{where}.margin_mode"
        )
        position_mode = (
            problems.enum(PositionMode, item["position_mode"], f"{where}.position_mode")
            if "position_mode" in item
            else None
        )
        accounts[str(name)] = AccountSetup(
            group=group,
            account_type=account_type,
            margin_mode=margin_mode or MarginMode.CROSS,
            position_mode=position_mode,
        )
        own = dict(problems.mapping(item.get("thresholds"), f"{where}.thresholds"))
        if own:
            account_overrides[str(name)] = own
        if own or group in groups:
            # The resolved combination (base, group, account) must hold together too.
            problems.thresholds(
                f"{where}.thresholds", below, groups.get(group) if group else None, own
            )
    policy = _policy(problems, problems.mapping(top.get("alert_policy"), "alert_policy"))
    listed, timeout = _warmup(
        problems, problems.mapping(top.get("portfolio_warmup"), "portfolio_warmup")
    )
    if problems.found or base is None or portfolio is None:
        raise ConfigError(f"{source}: " + "; ".join(problems.found))
    return RiskConfig(
        base=base,
        portfolio=portfolio,
        alert_policy=policy,
        accounts=accounts,
        group_overrides=groups,
        account_overrides=account_overrides,
        portfolio_accounts=frozenset(listed if listed is not None else accounts),
        warmup_timeout=timeout,
    )


def load_config(path: Path | None, *, net_exposure_limit_usd: Decimal | None = None) -> RiskConfig:
    """The risk configuration from ``path`` (YAML or JSON), or the defaults without one."""
    if path is None:
        return parse_config({}, net_exposure_limit_usd=net_exposure_limit_usd)
    doc = load_config_file(path, "thresholds file")
    return parse_config(
        doc, net_exposure_limit_usd=net_exposure_limit_usd, source=f"thresholds file {path}"
    )
