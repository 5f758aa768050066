"""What the query API reads from a running processor: the ``views`` GlobalTable (every
worker has all of it) and, for a what-if, one account's inputs from the partitioned
tables (only the worker that owns the account's partition has them current).

``ProcessorState`` is the only code that knows the processor's attribute names; the rest
of the query API sees the ``LiveState`` protocol, which tests implement with plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from risk_processor.engine import AccountProfile, Order, Position, TierTable, Wallet
from risk_processor.evaluate import AccountState, profile_of
from risk_processor.state import EMPTY_ORDERS
from riskwatch_common.topics import ACCOUNT_EVENTS


class NotOwned(Exception):
    """Another worker owns the account's partition (``partition``)."""

    def __init__(self, account: str, partition: int) -> None:
        super().__init__(
            f"account {account!r} is in partition {partition}, owned by another worker: "
            "ask that worker (or retry: a rebalance may be under way)"
        )
        self.partition = partition


class NotReady(Exception):
    """The worker is joining the group or recovering its tables: it cannot tell yet."""

    def __init__(self) -> None:
        super().__init__("the processor is starting (joining the group or recovering tables)")


class UnknownAccount(Exception):
    def __init__(self, account: str) -> None:
        super().__init__(f"no state for account {account!r}")


@dataclass(frozen=True, slots=True)
class AccountInputs:
    """One account's positions, open orders, wallet, and the market data they need."""

    profile: AccountProfile
    positions: tuple[Position, ...]
    orders: tuple[Order, ...]
    wallet: Wallet | None
    tables: Mapping[str, TierTable]
    marks: Mapping[str, Decimal]


class LiveState(Protocol):
    def views(self) -> Mapping[str, bytes]: ...

    def closing(self) -> bool:
        """The service is stopping: open streams end, so the HTTP server stops at once."""
        ...

    def account_inputs(self, account: str, symbol: str) -> AccountInputs:
        """Raises ``NotReady``, ``NotOwned`` or ``UnknownAccount``."""
        ...


class ProcessorState:
    """``LiveState`` over a ``RiskProcessor`` (read lazily: tables exist after __init__)."""

    def __init__(self, processor: Any) -> None:
        self._p = processor

    def views(self) -> Mapping[str, bytes]:
        return self._p.tables.views  # type: ignore[no-any-return]

    def closing(self) -> bool:
        return bool(self._p.app.should_stop)

    def account_inputs(self, account: str, symbol: str) -> AccountInputs:
        p = self._p
        if not p.ready:
            raise NotReady
        partition = p.ctx.outbox.partition_for(account)
        topic = p.names[ACCOUNT_EVENTS.name]
        owned = {tp.partition for tp in p.app.consumer.assignment() if tp.topic == topic}
        if partition not in owned:
            raise NotOwned(account, partition)
        tables = p.tables
        positions = tables.positions.get(account)
        orders = tables.orders.get(account)
        wallet = tables.wallets.get(account)
        if positions is None and orders is None and wallet is None:
            raise UnknownAccount(account)
        state = AccountState(account, positions or {}, orders or EMPTY_ORDERS, wallet)
        symbols = state.symbols() | {symbol}
        marks = {s: m.price for s in symbols if (m := tables.marks.get(s)) is not None}
        tier_tables = {s: t.table for s in symbols if (t := tables.tiers.get(s)) is not None}
        return AccountInputs(
            profile=profile_of(state, p.config),
            positions=tuple(e.position for e in state.positions.values()),
            orders=tuple(e.order for e in state.orders.open.values()),
            wallet=wallet.wallet if wallet is not None else None,
            tables=tier_tables,
            marks=marks,
        )
