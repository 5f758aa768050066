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
alert_policy: {clear_after: 3, settle_after: 3}
```

Margin mode and position mode are not on the wire (the ingestor does not publish them), so
they come from here; position mode is also inferred from hedge-mode position indexes and
account type from the wallet's account type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

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
from riskwatch_common.settings import ConfigError


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
_TOP_KEYS = {"thresholds", "portfolio", "groups", "accounts", "alert_policy"}
_ACCOUNT_KEYS = {"group", "account_type", "margin_mode", "position_mode", "thresholds"}


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"thresholds file: {where} must be a mapping")
    return value


def _enum(kind: Any, value: object, where: str) -> Any:
    try:
        return kind(str(value))
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise ConfigError(f"thresholds file: {where}={value!r} is not one of {choices}") from None


def parse_config(doc: object, *, net_exposure_limit_usd: Decimal | None = None) -> RiskConfig:
    """Validate a parsed thresholds document; every problem names where it is."""
    top = _mapping(doc, "the document")
    unknown = set(top) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"thresholds file: unknown top-level keys {sorted(unknown)}")
    env: dict[str, object] = {}
    if net_exposure_limit_usd is not None:
        env["net_exposure_usd"] = net_exposure_limit_usd
    try:
        base = resolve_thresholds(
            DEFAULT_THRESHOLDS, _mapping(top.get("thresholds"), "thresholds"), env
        )
        portfolio = resolve_thresholds(base, _mapping(top.get("portfolio"), "portfolio"))
    except ValueError as exc:
        raise ConfigError(f"thresholds file: {exc}") from None
    groups = {
        str(name): dict(_mapping(values, f"groups.{name}"))
        for name, values in _mapping(top.get("groups"), "groups").items()
    }
    accounts: dict[str, AccountSetup] = {}
    account_overrides: dict[str, dict[str, object]] = {}
    for name, raw in _mapping(top.get("accounts"), "accounts").items():
        where = f"accounts.{name}"
        item = _mapping(raw, where)
        bad = set(item) - _ACCOUNT_KEYS
        if bad:
            raise ConfigError(f"thresholds file: {where} has unknown keys {sorted(bad)}")
        accounts[str(name)] = AccountSetup(
            group=str(item["group"]) if item.get("group") is not None else None,
            account_type=_enum(AccountType, item["account_type"], f"{where}.account_type")
            if "account_type" in item
            else None,
            margin_mode=_enum(MarginMode, item.get("margin_mode", "cross"), f"{where}.margin_mode"),
            position_mode=_enum(PositionMode, item["position_mode"], f"{where}.position_mode")
            if "position_mode" in item
            else None,
        )
        if item.get("thresholds"):
            account_overrides[str(name)] = dict(_mapping(item["thresholds"], f"{where}.thresholds"))
    policy_raw = _mapping(top.get("alert_policy"), "alert_policy")
    try:
        policy = AlertPolicy(
            clear_after=int(policy_raw.get("clear_after", DEFAULT_ALERT_POLICY.clear_after)),
            settle_after=int(policy_raw.get("settle_after", DEFAULT_ALERT_POLICY.settle_after)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"thresholds file: alert_policy: {exc}") from None
    config = RiskConfig(
        base=base,
        portfolio=portfolio,
        alert_policy=policy,
        accounts=accounts,
        group_overrides=groups,
        account_overrides=account_overrides,
    )
    # Resolve every configured combination now, so a bad override stops startup instead of
    # failing the first event of that account.
    try:
        for name in accounts:
            config.thresholds(name)
        for group in groups:
            resolve_thresholds(base, groups[group])
    except ValueError as exc:
        raise ConfigError(f"thresholds file: {exc}") from None
    return config


def load_config(path: Path | None, *, net_exposure_limit_usd: Decimal | None = None) -> RiskConfig:
    """The risk configuration from ``path`` (YAML or JSON), or the defaults without one."""
    if path is None:
        return parse_config({}, net_exposure_limit_usd=net_exposure_limit_usd)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"thresholds file {path}: cannot be read ({exc.strerror})") from None
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"thresholds file {path}: not valid JSON ({exc})") from None
        return parse_config(doc, net_exposure_limit_usd=net_exposure_limit_usd)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"thresholds file {path}: not valid YAML ({exc})") from None
    return parse_config(doc, net_exposure_limit_usd=net_exposure_limit_usd)
