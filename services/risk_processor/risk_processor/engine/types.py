"""Plain data the risk engine works on: positions, orders, tiers, wallets.

Every amount is a ``Decimal``. Rates and shares are fractions (0.005 is 0.5 %), as Bybit
sends them on linear risk-limit rows and wallet rates; the only percent in the engine is the
liquidation distance, which docs/product.md defines as a percent move. Values are frozen so that a
snapshot handed to the engine cannot change under it.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import IntEnum, StrEnum
from itertools import pairwise

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)


class Side(StrEnum):
    BUY = "Buy"
    SELL = "Sell"


# Enum member lookup (``Side.BUY``) costs about 0.1 µs on Python 3.11; hot paths compare
# against these module constants instead.
BUY = Side.BUY
SELL = Side.SELL


class PositionMode(StrEnum):
    ONE_WAY = "one_way"
    HEDGE = "hedge"


HEDGE = PositionMode.HEDGE


class AccountType(StrEnum):
    UNIFIED = "unified"
    STANDARD = "standard"


class MarginMode(StrEnum):
    CROSS = "cross"
    ISOLATED = "isolated"
    PORTFOLIO = "portfolio"


CROSS = MarginMode.CROSS
ISOLATED = MarginMode.ISOLATED
PORTFOLIO_MARGIN = MarginMode.PORTFOLIO


class Severity(IntEnum):
    """Alert severity, ordered; names match ``riskwatch_common.contracts.Severity``."""

    INFO = 1
    WARNING = 2
    HIGH = 3
    CRITICAL = 4


class RiskLevel(IntEnum):
    """Account or portfolio risk level, ordered; names match the contracts' ``RiskLevel``."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3


@dataclass(slots=True, frozen=True)
class Position:
    """One position row of one account.

    ``side`` may be ``None`` only for a flat row (size 0); flat rows are kept because they
    still carry the leverage the user chose, which caps what open orders may add. In hedge
    mode ``position_idx`` 1 is the Buy side and 2 the Sell side; 0 is one-way mode.
    ``leverage`` is ``None`` when Bybit sends none (portfolio margin).
    """

    account: str
    symbol: str
    position_idx: int
    side: Side | None
    size: Decimal
    entry_price: Decimal
    leverage: Decimal | None
    mark_price: Decimal | None = None
    liq_price: Decimal | None = None
    is_reduce_only: bool = False
    mmr_sys_updated_at: datetime | None = None
    leverage_sys_updated_at: datetime | None = None
    risk_id: int | None = None
    position_im: Decimal | None = None
    position_mm: Decimal | None = None

    def __post_init__(self) -> None:
        if self.position_idx not in (0, 1, 2):
            raise ValueError(f"{self.symbol}: position_idx must be 0, 1 or 2")
        if self.size < 0:
            raise ValueError(f"{self.symbol}: size must not be negative (Bybit sends it unsigned)")
        if self.size and self.side is None:
            raise ValueError(f"{self.symbol}: a non-flat position needs a side")
        if self.position_idx == 1 and self.side is Side.SELL:
            raise ValueError(f"{self.symbol}: position_idx 1 is the hedge-mode Buy side")
        if self.position_idx == 2 and self.side is Side.BUY:
            raise ValueError(f"{self.symbol}: position_idx 2 is the hedge-mode Sell side")

    @property
    def value(self) -> Decimal:
        """Position value at the average entry price (what tier selection uses)."""
        return self.size * self.entry_price


@dataclass(slots=True, frozen=True)
class Order:
    """One open order; ``qty`` is the quantity still to fill (Bybit ``leavesQty``)."""

    order_id: str
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    position_idx: int = 0
    reduce_only: bool = False
    close_on_trigger: bool = False
    is_conditional_untriggered: bool = False

    @property
    def can_open(self) -> bool:
        """Whether the order may open or add to a position, so it can count for the tier."""
        return not (self.reduce_only or self.close_on_trigger or self.is_conditional_untriggered)


@dataclass(slots=True, frozen=True)
class Tier:
    """One risk-limit tier; rates are fractions, ``mm_deduction`` is in USD."""

    id: int
    risk_limit_value: Decimal
    mmr: Decimal
    imr: Decimal
    max_leverage: Decimal
    mm_deduction: Decimal


@dataclass(slots=True, frozen=True)
class TierTable:
    """A symbol's tiers in ascending ``risk_limit_value`` order (sorted on construction).

    The lookup keys after ``tiers`` are derived at construction, so each per-event lookup
    is one bisect; they are public so hot paths can bisect without a method call.
    """

    symbol: str
    tiers: tuple[Tier, ...]
    limits: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    # Ascending distinct max leverages, and for each the largest limit among tiers allowing it.
    leverage_keys: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    leverage_caps: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    # For tier i: the highest max leverage among tiers i.. (a value in tier i fits in any).
    suffix_max_leverage: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ValueError(f"{self.symbol}: a tier table needs at least one tier")
        tiers = tuple(sorted(self.tiers, key=lambda t: t.risk_limit_value))
        limits = tuple(t.risk_limit_value for t in tiers)
        if any(a == b for a, b in pairwise(limits)):
            raise ValueError(f"{self.symbol}: two tiers share a riskLimitValue")
        if limits[0] <= 0:
            raise ValueError(f"{self.symbol}: riskLimitValue must be positive")
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "limits", limits)

        best: dict[Decimal, Decimal] = {}
        for t in tiers:
            if t.risk_limit_value > best.get(t.max_leverage, ZERO):
                best[t.max_leverage] = t.risk_limit_value
        keys = sorted(best)
        caps: list[Decimal] = []
        running = ZERO
        for lev in reversed(keys):
            running = max(running, best[lev])
            caps.append(running)
        caps.reverse()
        object.__setattr__(self, "leverage_keys", tuple(keys))
        object.__setattr__(self, "leverage_caps", tuple(caps))

        suffix: list[Decimal] = []
        top = ZERO
        for t in reversed(tiers):
            top = max(top, t.max_leverage)
            suffix.append(top)
        suffix.reverse()
        object.__setattr__(self, "suffix_max_leverage", tuple(suffix))

    def index_for_value(self, value: Decimal) -> int:
        """Index of the lowest tier whose limit is >= value; ``len(tiers)`` when above all."""
        return bisect_left(self.limits, value)

    def cap_at_leverage(self, leverage: Decimal) -> Decimal | None:
        """Largest limit among tiers whose max leverage is >= ``leverage``."""
        i = bisect_left(self.leverage_keys, leverage)
        return self.leverage_caps[i] if i < len(self.leverage_caps) else None

    def max_leverage_from(self, index: int) -> Decimal:
        """Highest max leverage among tiers at ``index`` and above."""
        return self.suffix_max_leverage[index]


@dataclass(slots=True, frozen=True)
class Wallet:
    """Account-wide wallet figures in USD, as of Bybit's last wallet event or poll.

    Rates are fractions. Bybit does not push a wallet event when unrealized PnL moves, so
    the engine recomputes the moving parts from positions and marks (see ``margin``).
    """

    total_equity: Decimal
    total_wallet_balance: Decimal
    total_margin_balance: Decimal
    total_initial_margin: Decimal
    total_maintenance_margin: Decimal
    account_mm_rate: Decimal | None
    account_im_rate: Decimal | None
    total_perp_upl: Decimal


@dataclass(slots=True, frozen=True)
class AccountProfile:
    """How an account is set up; decides which margin formulas apply."""

    account: str
    account_type: AccountType = AccountType.UNIFIED
    margin_mode: MarginMode = MarginMode.CROSS
    position_mode: PositionMode = PositionMode.ONE_WAY
    group: str | None = None


def draft_class(cls: type) -> type:
    """A plain class with exactly the slots of the frozen slots dataclass ``cls``.

    Hot paths build a ``cls`` by filling a draft with ordinary attribute assignments and
    then setting ``draft.__class__ = cls``, which Python allows because both classes have
    the same slot layout. A frozen dataclass's generated ``__init__`` sets each field
    through ``object.__setattr__``, and even writing each slot through its descriptor costs
    several times what a plain slot store does; the result is a ``cls`` like any other,
    frozen for its readers. Every slot must be assigned before the switch: an unassigned
    slot would raise ``AttributeError`` when read.
    """
    slots = cls.__dict__.get("__slots__")
    if not isinstance(slots, tuple) or "__dict__" in slots or "__weakref__" in slots:
        raise TypeError(f"{cls.__name__} is not a slots dataclass")
    return type(f"_{cls.__name__}Draft", (), {"__slots__": slots, "__module__": cls.__module__})
