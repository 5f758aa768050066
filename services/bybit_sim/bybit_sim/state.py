"""Mutable exchange state: markets, accounts, positions and orders.

Only `exchange.Exchange` mutates these; `rows` turns them into Bybit-format dicts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from bybit_sim.margin import Tier
from bybit_sim.scenario import AccountType, ApiKeySpec

ZERO = Decimal(0)
# Bybit's default linear fee rates (non-VIP): maker 0.02 %, taker 0.055 %.
MAKER_FEE_RATE = Decimal("0.0002")
TAKER_FEE_RATE = Decimal("0.00055")
# /v5/order/realtime with openOnly=1 returns up to 500 recent closed orders; ground truth
# keeps more so a long test run can still check the final state of each order it made.
CLOSED_ORDERS_LISTED = 500
CLOSED_ORDERS_KEPT = 10_000
# /v5/execution/list and the ground truth read this history; bounded so a looping demo
# scenario runs for days in constant memory.
EXECUTIONS_KEPT = 50_000
OPEN_STATUSES = frozenset({"New", "PartiallyFilled", "Untriggered"})


@dataclass
class Market:
    symbol: str
    tiers: tuple[Tier, ...]
    tick_size: Decimal
    mark_price: Decimal
    start_price: Decimal
    funding_rate: Decimal
    open_interest: Decimal
    volume_24h: Decimal
    high_24h: Decimal
    low_24h: Decimal
    tick_direction: str = "ZeroPlusTick"
    # Cross sequence of trades; positions carry the value of their symbol's last trade.
    trade_seq: int = 0
    # Cross sequence of the public ticker stream (`cs`).
    ticker_cs: int = 0
    # A pinned price (POST /sim/action set_price) is not moved by the price path.
    pinned: bool = False


@dataclass
class Position:
    symbol: str
    position_idx: int
    leverage: Decimal
    created_time: int
    updated_time: int
    side: str = ""
    size: Decimal = ZERO
    entry_price: Decimal = ZERO
    cur_realised_pnl: Decimal = ZERO
    cum_realised_pnl: Decimal = ZERO
    # -1 until the symbol is traded on this position (Bybit's convention).
    seq: int = -1
    is_reduce_only: bool = False
    mmr_sys_updated_time: str = ""
    leverage_sys_updated_time: str = ""
    position_status: str = "Normal"

    @property
    def is_open(self) -> bool:
        return self.size > 0


@dataclass
class Order:
    order_id: str
    order_link_id: str
    symbol: str
    side: str
    order_type: str
    price: Decimal
    qty: Decimal
    time_in_force: str
    position_idx: int
    reduce_only: bool
    created_time: int
    updated_time: int
    last_price_on_created: Decimal
    status: str = "New"
    cum_exec_qty: Decimal = ZERO
    cum_exec_value: Decimal = ZERO
    cum_exec_fee: Decimal = ZERO
    closed_pnl: Decimal = ZERO
    cancel_type: str = "UNKNOWN"
    reject_reason: str = "EC_NoError"

    @property
    def leaves_qty(self) -> Decimal:
        if self.status not in OPEN_STATUSES:
            return ZERO
        return self.qty - self.cum_exec_qty

    @property
    def avg_price(self) -> Decimal:
        return self.cum_exec_value / self.cum_exec_qty if self.cum_exec_qty else ZERO

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass
class Account:
    name: str
    uid: int
    parent_uid: int
    is_master: bool
    api_key: str
    api_secret: str
    hedge: bool
    wallet_balance: Decimal
    default_leverage: dict[str, Decimal]
    account_type: AccountType = "unified"
    key: ApiKeySpec = field(default_factory=ApiKeySpec)
    cum_realised_pnl: Decimal = ZERO
    positions: dict[tuple[str, int], Position] = field(default_factory=dict)
    # Insertion order is creation order; the REST view sorts newest first.
    open_orders: dict[str, Order] = field(default_factory=dict)
    # In closing order, oldest first.
    closed_orders: deque[Order] = field(default_factory=lambda: deque(maxlen=CLOSED_ORDERS_KEPT))
    # REST-form execution rows (no `category`), oldest first.
    executions: deque[dict[str, object]] = field(
        default_factory=lambda: deque(maxlen=EXECUTIONS_KEPT)
    )

    @property
    def wallet_account_type(self) -> str:
        """The `accountType` wallet-balance accepts and echoes: UTA wallets are UNIFIED; a
        standard (never-upgraded) account's derivatives wallet is CONTRACT
        (docs/bybit-v5.md §2.3)."""
        return "UNIFIED" if self.account_type == "unified" else "CONTRACT"
