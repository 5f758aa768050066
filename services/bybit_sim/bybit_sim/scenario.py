"""Scenario files: accounts, symbols with risk-limit tiers, price paths, a timeline and faults.

A scenario is plain data. `load_scenario` reads YAML with every float parsed as `Decimal`,
so tier rates such as 0.0056 stay exact instead of becoming binary floats.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)

from bybit_sim.margin import TierCheckError, build_tiers

Side = Literal["Buy", "Sell"]
PositionMode = Literal["one_way", "hedge"]
OrderType = Literal["Limit", "Market"]
TimeInForce = Literal["GTC", "IOC", "FOK", "PostOnly"]
FaultKind = Literal[
    "disconnect",
    "silence",
    "duplicate_next",
    "reorder_next",
    "malformed_next",
    "auth_fail",
    "sign_fail",
    "rate_limit",
    "ip_ban",
    "clear",
]
# unified: a UTA (wallet-balance accountType=UNIFIED); standard: a never-upgraded account
# whose derivatives wallet is accountType=CONTRACT (docs/bybit-v5.md §2.3).
AccountType = Literal["unified", "standard"]

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

# Base of generated UIDs; real Bybit UIDs are 8-9 digit integers.
_UID_BASE = 100_000_000


class TierSpec(BaseModel):
    """One row of `GET /v5/market/risk-limit`, spelled with Bybit's field names in YAML."""

    model_config = _FROZEN

    id: int
    risk_limit_value: Decimal = Field(alias="riskLimitValue", gt=0)
    maintenance_margin: Decimal = Field(alias="maintenanceMargin", gt=0, lt=1)
    initial_margin: Decimal = Field(alias="initialMargin", gt=0, le=1)
    max_leverage: Decimal = Field(alias="maxLeverage", gt=0)
    # Bybit sends "" on the lowest tier; None means "compute it from the tier formula".
    mm_deduction: Decimal | None = Field(default=None, alias="mmDeduction")
    is_lowest_risk: int | None = Field(default=None, alias="isLowestRisk")

    @field_validator("mm_deduction", mode="before")
    @classmethod
    def _empty_deduction_is_none(cls, value: object) -> object:
        return None if value == "" else value


class PriceMove(BaseModel):
    model_config = _FROZEN

    at_s: Decimal = Field(gt=0)
    price: Decimal = Field(gt=0)


class RandomWalk(BaseModel):
    """Geometric random walk; drift and volatility are fractions per second."""

    model_config = _FROZEN

    seed: int
    drift: Decimal = Decimal(0)
    volatility: Decimal = Field(ge=0)


class PricePath(BaseModel):
    model_config = _FROZEN

    start: Decimal = Field(gt=0)
    moves: tuple[PriceMove, ...] = ()
    random_walk: RandomWalk | None = None
    # linear: glide between waypoints tick by tick; step: jump at each waypoint.
    interpolate: Literal["linear", "step"] = "linear"

    @model_validator(mode="after")
    def _one_kind(self) -> PricePath:
        if self.moves and self.random_walk is not None:
            raise ValueError("a price path has either timed moves or a random walk, not both")
        times = [m.at_s for m in self.moves]
        if times != sorted(set(times)):
            raise ValueError("price moves must have strictly increasing at_s")
        return self


class SymbolSpec(BaseModel):
    model_config = _FROZEN

    symbol: str = Field(pattern=r"^[A-Z0-9]+USDT$")
    tick_size: Decimal = Field(default=Decimal("0.01"), gt=0)
    tiers: tuple[TierSpec, ...] = Field(min_length=1)
    price: PricePath
    funding_rate: Decimal = Decimal("0.0001")
    open_interest: Decimal = Decimal("100000")
    volume_24h: Decimal = Decimal("250000")

    @model_validator(mode="after")
    def _tiers_consistent(self) -> SymbolSpec:
        try:
            build_tiers(self.tiers)
        except TierCheckError as exc:
            raise ValueError(f"{self.symbol}: {exc}") from exc
        return self


class PositionSpec(BaseModel):
    model_config = _FROZEN

    symbol: str
    side: Side
    size: Decimal = Field(gt=0)
    entry_price: Decimal = Field(gt=0)
    leverage: Decimal = Field(gt=0)
    # None: 0 in one-way mode, 1 (Buy) or 2 (Sell) in hedge mode.
    position_idx: Literal[0, 1, 2] | None = None


class OrderSpec(BaseModel):
    model_config = _FROZEN

    symbol: str
    side: Side
    price: Decimal = Field(gt=0)
    qty: Decimal = Field(gt=0)
    reduce_only: bool = False
    position_idx: Literal[0, 1, 2] | None = None
    order_type: OrderType = "Limit"
    order_link_id: str = ""
    time_in_force: TimeInForce = "GTC"


def _read_only_permissions() -> dict[str, tuple[str, ...]]:
    return {"ContractTrade": ("Order", "Position")}


class ApiKeySpec(BaseModel):
    """What `/v5/user/query-api` says about the account's key (a read-only key by default).

    `permissions` uses Bybit's groups (ContractTrade, Spot, Wallet, Options, Derivatives,
    Exchange, Earn, NFT, CopyTrading, BlockTrade, Affiliate); `ips` is the whitelist
    (`["*"]` = no binding); `expires_at` is unset for a key that never expires.
    """

    model_config = _FROZEN

    read_only: bool = True
    permissions: dict[str, tuple[str, ...]] = Field(default_factory=_read_only_permissions)
    ips: tuple[str, ...] = ("*",)
    expires_at: datetime | None = None
    created_at: datetime | None = None


class AccountSpec(BaseModel):
    model_config = _FROZEN

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    uid: int | None = None
    api_key: str = Field(min_length=1)
    api_secret: SecretStr
    account_type: AccountType = "unified"
    position_mode: PositionMode = "one_way"
    wallet_balance: Decimal = Field(ge=0)
    positions: tuple[PositionSpec, ...] = ()
    orders: tuple[OrderSpec, ...] = ()
    # Leverage shown on flat positions (Bybit keeps a per-symbol setting); default 10.
    leverage: dict[str, Decimal] = Field(default_factory=dict)
    is_master: bool = False
    key: ApiKeySpec = ApiKeySpec()


class AccountTemplate(BaseModel):
    """An account spec whose name and keys are `str.format` patterns over `i`."""

    model_config = _FROZEN

    name: str = "bulk_{i:03d}"
    api_key: str = "sim-bulk-{i}-key"
    api_secret: str = "sim-bulk-{i}-secret"
    account_type: AccountType = "unified"
    position_mode: PositionMode = "one_way"
    wallet_balance: Decimal = Field(default=Decimal(10000), ge=0)
    positions: tuple[PositionSpec, ...] = ()
    orders: tuple[OrderSpec, ...] = ()
    leverage: dict[str, Decimal] = Field(default_factory=dict)


class ManyAccounts(BaseModel):
    model_config = _FROZEN

    count: int = Field(ge=1, le=10_000)
    start_index: int = Field(default=1, ge=0)
    template: AccountTemplate = AccountTemplate()

    def expand(self) -> list[AccountSpec]:
        accounts = []
        for i in range(self.start_index, self.start_index + self.count):
            t = self.template
            accounts.append(
                AccountSpec(
                    name=t.name.format(i=i),
                    api_key=t.api_key.format(i=i),
                    api_secret=SecretStr(t.api_secret.format(i=i)),
                    account_type=t.account_type,
                    position_mode=t.position_mode,
                    wallet_balance=t.wallet_balance,
                    positions=t.positions,
                    orders=t.orders,
                    leverage=dict(t.leverage),
                )
            )
        return accounts


# ---------------------------------------------------------------------------------------------
# Actions: the timeline, POST /sim/action and the exchange core share these models.


class _ActionBase(BaseModel):
    model_config = _FROZEN

    at_s: Decimal = Field(default=Decimal(0), ge=0)


class _OrderRef(_ActionBase):
    account: str
    order_id: str | None = None
    order_link_id: str | None = None

    @model_validator(mode="after")
    def _has_ref(self) -> _OrderRef:
        if not self.order_id and not self.order_link_id:
            raise ValueError("an order is referenced by order_id or order_link_id")
        return self


class PlaceOrder(_ActionBase):
    action: Literal["place_order"] = "place_order"
    account: str
    symbol: str
    side: Side
    qty: Decimal = Field(gt=0)
    # Market orders without a price take the mark price when filled.
    price: Decimal | None = Field(default=None, gt=0)
    order_type: OrderType = "Limit"
    reduce_only: bool = False
    position_idx: Literal[0, 1, 2] | None = None
    order_link_id: str = ""
    time_in_force: TimeInForce = "GTC"

    @model_validator(mode="after")
    def _limit_has_price(self) -> PlaceOrder:
        if self.order_type == "Limit" and self.price is None:
            raise ValueError("a Limit order needs a price")
        return self


class AmendOrder(_OrderRef):
    action: Literal["amend_order"] = "amend_order"
    qty: Decimal | None = Field(default=None, gt=0)
    price: Decimal | None = Field(default=None, gt=0)


class CancelOrder(_OrderRef):
    action: Literal["cancel_order"] = "cancel_order"


class FillOrder(_OrderRef):
    action: Literal["fill_order"] = "fill_order"
    # None: the whole remaining quantity.
    qty: Decimal | None = Field(default=None, gt=0)
    # None: the order price (Limit) or the current mark price (Market).
    price: Decimal | None = Field(default=None, gt=0)
    is_maker: bool | None = None


class SetPosition(_ActionBase):
    """Overwrite a position without a trade, e.g. to stage a Bybit risk-limit reduction."""

    action: Literal["set_position"] = "set_position"
    account: str
    symbol: str
    position_idx: Literal[0, 1, 2] | None = None
    side: Literal["Buy", "Sell", ""] | None = None
    size: Decimal | None = Field(default=None, ge=0)
    entry_price: Decimal | None = Field(default=None, ge=0)
    leverage: Decimal | None = Field(default=None, gt=0)
    is_reduce_only: bool | None = None
    mmr_sys_updated_time: str | None = None
    leverage_sys_updated_time: str | None = None


class SetPrice(_ActionBase):
    """Pin a symbol's mark price (the price path stops driving it); price null releases it."""

    action: Literal["set_price"] = "set_price"
    symbol: str
    price: Decimal | None = Field(gt=0)


class SetWalletBalance(_ActionBase):
    action: Literal["set_wallet_balance"] = "set_wallet_balance"
    account: str
    balance: Decimal = Field(ge=0)


class Fault(_ActionBase):
    """A transport-level fault; the exchange state is untouched, only delivery changes.

    disconnect: close the account's private sockets (`target` picks private/public/all;
    public sockets have no account, so only an account-less fault reaches them).
    silence: the account's private sockets stay open but stop answering pings and receiving
    frames for `duration_s` (None: until clear), the half-open link pybit cannot detect.
    duplicate_next / reorder_next: the next `count` private frames are sent twice / reversed.
    malformed_next: each of the next `count` private frames is preceded by a corrupted copy
    (cycling: truncated JSON, unknown topic, a row missing required fields); the real frame
    still follows, so only a client that cannot skip bad frames loses state.
    auth_fail: reject the next `count` WS auths. sign_fail: the next `count` REST calls get
    10004 with Bybit's text, which echoes the signed string (API key included).
    rate_limit: the next `count` REST calls get 10006. ip_ban: every REST call gets HTTP 403
    "access too frequent" for `duration_s` (default 600 s, Bybit's minimum ban); it bans the
    sim's one IP, so `account` is ignored.
    clear: remove every fault for the account (or all accounts, which also lifts IP bans).
    """

    action: Literal["fault"] = "fault"
    kind: FaultKind
    # None: every account.
    account: str | None = None
    count: int = Field(default=1, ge=1)
    duration_s: Decimal | None = Field(default=None, gt=0)
    target: Literal["private", "public", "all"] = "private"
    # pybit issue #340: real 10006 replies sometimes lack the reset header.
    omit_reset_header: bool = False
    # abrupt: drop the TCP connection without a close frame, like a network failure.
    abrupt: bool = False


Action = Annotated[
    PlaceOrder
    | AmendOrder
    | CancelOrder
    | FillOrder
    | SetPosition
    | SetPrice
    | SetWalletBalance
    | Fault,
    Field(discriminator="action"),
]
ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)


# ---------------------------------------------------------------------------------------------


class Scenario(BaseModel):
    model_config = _FROZEN

    name: str
    description: str = ""
    tick_ms: int = Field(default=100, ge=10, le=60_000)
    loop: bool = False
    # Length of one timeline cycle when looping; default: last timed event + 1 s.
    duration_s: Decimal | None = Field(default=None, gt=0)
    # record: accept orders beyond the leverage cap and flag them in ground truth (the risk
    # processor must warn); reject: refuse them with retCode 110090 like Bybit.
    risk_limit_enforcement: Literal["record", "reject"] = "record"
    symbols: tuple[SymbolSpec, ...] = Field(min_length=1)
    accounts: tuple[AccountSpec, ...] = ()
    many_accounts: ManyAccounts | None = None
    timeline: tuple[Action, ...] = ()
    faults: tuple[Fault, ...] = ()

    def all_accounts(self) -> list[AccountSpec]:
        """Explicit accounts then generated ones, each with a UID; the first is the master."""
        specs = list(self.accounts)
        if self.many_accounts is not None:
            specs.extend(self.many_accounts.expand())
        out = []
        for index, spec in enumerate(specs, start=1):
            updates: dict[str, Any] = {}
            if spec.uid is None:
                updates["uid"] = _UID_BASE + index
            if index == 1 and not any(s.is_master for s in specs):
                updates["is_master"] = True
            out.append(spec.model_copy(update=updates) if updates else spec)
        return out

    def schedule(self) -> list[Action]:
        """Timeline and faults merged, ordered by time (stable for equal times)."""
        return sorted([*self.timeline, *self.faults], key=lambda a: a.at_s)

    def cycle_s(self) -> Decimal:
        if self.duration_s is not None:
            return self.duration_s
        times = [a.at_s for a in self.schedule()]
        times += [m.at_s for s in self.symbols for m in s.price.moves]
        return max(times, default=Decimal(0)) + 1

    @model_validator(mode="after")
    def _references_resolve(self) -> Scenario:
        symbols = [s.symbol for s in self.symbols]
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbol")
        known = set(symbols)
        accounts = self.all_accounts()
        names = [a.name for a in accounts]
        keys = [a.api_key for a in accounts]
        if len(set(names)) != len(names):
            raise ValueError("duplicate account name")
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate api_key")
        if sum(a.is_master for a in accounts) > 1:
            raise ValueError("at most one master account")
        for account in accounts:
            _check_account(account, known)
        by_name = set(names)
        for action in self.schedule():
            ref = getattr(action, "account", None)
            if ref is not None and ref not in by_name:
                raise ValueError(f"timeline refers to unknown account {ref!r}")
            sym = getattr(action, "symbol", None)
            if sym is not None and sym not in known:
                raise ValueError(f"timeline refers to unknown symbol {sym!r}")
        if self.loop and self.duration_s is not None:
            late = [a for a in self.schedule() if a.at_s >= self.duration_s]
            if late:
                raise ValueError("looping timeline has actions at or after duration_s")
        return self


def _check_account(account: AccountSpec, symbols: set[str]) -> None:
    seen: set[tuple[str, int]] = set()
    for pos in account.positions:
        if pos.symbol not in symbols:
            raise ValueError(f"{account.name}: unknown symbol {pos.symbol}")
        idx = resolve_position_idx(account.position_mode, pos.side, pos.position_idx)
        if account.position_mode == "hedge" and idx != (1 if pos.side == "Buy" else 2):
            raise ValueError(f"{account.name}: hedge positionIdx 1 is Buy, 2 is Sell")
        if (pos.symbol, idx) in seen:
            raise ValueError(f"{account.name}: two positions for {pos.symbol} idx {idx}")
        seen.add((pos.symbol, idx))
    for order in account.orders:
        if order.symbol not in symbols:
            raise ValueError(f"{account.name}: unknown symbol {order.symbol}")
        resolve_position_idx(account.position_mode, order.side, order.position_idx)
    for symbol in account.leverage:
        if symbol not in symbols:
            raise ValueError(f"{account.name}: leverage for unknown symbol {symbol}")


def resolve_position_idx(mode: PositionMode, side: Side, given: int | None) -> int:
    """positionIdx per Bybit: 0 in one-way mode; hedge mode 1 = Buy side, 2 = Sell side."""
    if mode == "one_way":
        if given not in (None, 0):
            raise ValueError("one-way mode uses positionIdx 0")
        return 0
    if given is None:
        return 1 if side == "Buy" else 2
    if given == 0:
        raise ValueError("hedge mode uses positionIdx 1 or 2")
    return given


# ---------------------------------------------------------------------------------------------
# YAML loading with exact decimals.


class _DecimalLoader(yaml.SafeLoader):
    """SafeLoader that turns YAML floats into Decimal from their source text."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    return Decimal(text.replace("_", ""))


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def parse_scenario(text: str) -> Scenario:
    # _DecimalLoader is a SafeLoader: no arbitrary object construction.
    data = yaml.load(text, Loader=_DecimalLoader)
    return Scenario.model_validate(data)


def load_scenario(path: str | Path) -> Scenario:
    return parse_scenario(Path(path).read_text(encoding="utf-8"))
