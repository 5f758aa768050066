"""What the ingestor knows of each account and of market data: pure merge and dedupe rules.

No I/O and no clock. The account rules (docs/bybit-v5.md §3.7, §3.8):

- positions: keep the last ``(seq, updatedTime)`` per (symbol, positionIdx); a row with a
  lower seq, or the same seq and an older updatedTime, is stale; the same pair again is a
  duplicate (it would carry the same event id). REST rows follow the same rule, so a
  snapshot older than the stream is ignored.
- orders: keep the last ``updatedTime`` per orderId; older is stale. At the same time, a row
  that is less advanced (open after terminal, less filled) is stale, and the same status and
  filled quantity again is a duplicate. Once terminal, the same status and filled quantity
  at a later time is the duplicate ``Filled`` Bybit sends when a cancel races a fill (§3.5).
- executions: by execId. The execution watermark is the exchange time up to which every
  fill is known: the latest execTime accepted (stream or REST), or the time of a completed
  execution backfill. A resync fetches the history from a little before it, since a
  snapshot of positions, orders and wallet holds no fills (see ``begin_backfill``).
- wallet: by exchange time (frame creationTime, REST response time); an unchanged wallet is
  not published again.

A resync (``apply_snapshot``) also closes what vanished while the stream was down: an open
order missing from the open-orders snapshot is published as ``Deactivated`` (we cannot know
whether it filled or was cancelled; the execution and position streams carry the fills), and
a position missing from the positions snapshot is published flat. Those synthetic records
keep the last real ``(seq, updatedTime)``, so any real later update still wins over them and
a replay of an older frame is still stale.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ingestor.normalize import Meta, event_id, order_event_id, to_ms
from riskwatch_common.contracts import (
    DataOrigin,
    Event,
    ExecutionReported,
    OrderUpdated,
    PositionUpdated,
    WalletUpdated,
)

CLOSED_BY_RESYNC = "Deactivated"
TERMINAL_STATUSES = frozenset(
    {"Filled", "Cancelled", "Rejected", "Deactivated", "PartiallyFilledCanceled"}
)
_ZERO = Decimal(0)
# Bybit's /v5/execution/list answers at most 7 days back.
EXECUTION_HISTORY_MS = 7 * 24 * 3600 * 1000


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    STALE = "stale"
    DUPLICATE = "duplicate"


def settle_coin_of(symbol: str) -> str:
    """The settle coin of a linear symbol: USDT perps and futures name it; USDC ones don't
    (BTCPERP, BTC-26DEC25)."""
    return "USDT" if "USDT" in symbol else "USDC"


@dataclass(frozen=True, slots=True)
class ClosedOrder:
    """What dedupe needs of a terminal order; a full event per closed order would cost
    kilobytes, times hundreds of orders, times hundreds of accounts."""

    order_id: str
    symbol: str
    order_status: str
    cum_exec_qty: Decimal
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class BackfillWindow:
    """Where an execution backfill starts; ``wanted_ms`` differs when it was clamped to the
    history Bybit keeps (fills before ``start_ms`` can no longer be fetched)."""

    start_ms: int
    wanted_ms: int

    @property
    def clamped(self) -> bool:
        return self.start_ms != self.wanted_ms


@dataclass(frozen=True, slots=True)
class SnapshotEvents:
    positions: list[PositionUpdated]
    orders: list[OrderUpdated]
    wallet: WalletUpdated | None
    wallet_time_ms: int
    # Orders Bybit lists as recently closed, already limited to the backfill window: their
    # real final state, which beats "vanished, so Deactivated".
    closed_orders: list[OrderUpdated] = field(default_factory=list)


class AccountState:
    """One account's last known positions, orders and wallet, and the ids already seen."""

    def __init__(
        self,
        account: str,
        *,
        settle_coins: Iterable[str] = ("USDT",),
        closed_orders_kept: int = 1000,
        exec_ids_kept: int = 1000,
    ) -> None:
        self.account = account
        self.settle_coins = frozenset(settle_coins)
        self.positions: dict[tuple[str, int], PositionUpdated] = {}
        self.open_orders: dict[str, OrderUpdated] = {}
        # Terminal orders stay a while so late duplicates of them are still recognised.
        self._closed_orders: OrderedDict[str, ClosedOrder] = OrderedDict()
        self._closed_kept = closed_orders_kept
        self._exec_ids: OrderedDict[str, None] = OrderedDict()
        self._exec_kept = exec_ids_kept
        self.execution_watermark_ms: int | None = None
        # Start of a backfill that has not completed: the next one must reach back at least
        # as far, even if stream fills applied meanwhile moved the watermark on.
        self._backfill_pending_ms: int | None = None
        self.wallet: WalletUpdated | None = None
        self.wallet_time_ms = -1
        # How many open positions and open orders each symbol has: kept as things change
        # rather than recounted per frame, which was the costliest step at hundreds of orders.
        self._symbol_refs: dict[str, int] = {}
        self.symbols_changed = False

    # ------------------------------------------------------------------ positions

    def apply_position(self, ev: PositionUpdated) -> Verdict:
        key = (ev.symbol, ev.position_idx)
        last = self.positions.get(key)
        if last is not None:
            if ev.seq < last.seq:
                return Verdict.STALE
            if ev.seq == last.seq:
                if ev.updated_at < last.updated_at:
                    return Verdict.STALE
                if ev.updated_at == last.updated_at:
                    return Verdict.DUPLICATE
        self._set_position(key, ev)
        return Verdict.ACCEPTED

    def _set_position(self, key: tuple[str, int], ev: PositionUpdated) -> None:
        last = self.positions.get(key)
        was_open = last is not None and last.size != 0
        self.positions[key] = ev
        if was_open != (ev.size != 0):
            self._ref(ev.symbol, 1 if ev.size != 0 else -1)

    # ------------------------------------------------------------------ orders

    def order(self, order_id: str) -> OrderUpdated | ClosedOrder | None:
        return self.open_orders.get(order_id) or self._closed_orders.get(order_id)

    def apply_order(self, ev: OrderUpdated) -> Verdict:
        last = self.order(ev.order_id)
        if last is not None:
            verdict = self._compare_order(ev, last)
            if verdict is not Verdict.ACCEPTED:
                return verdict
        self._store_order(ev)
        return Verdict.ACCEPTED

    def _compare_order(self, ev: OrderUpdated, last: OrderUpdated | ClosedOrder) -> Verdict:
        new_terminal = ev.order_status in TERMINAL_STATUSES
        last_terminal = last.order_status in TERMINAL_STATUSES
        same_state = ev.order_status == last.order_status and ev.cum_exec_qty == last.cum_exec_qty
        if last_terminal and same_state:
            return Verdict.DUPLICATE  # includes Bybit's second "Filled" (docs/bybit-v5.md §3.5)
        if ev.updated_at < last.updated_at:
            return Verdict.STALE
        if ev.updated_at == last.updated_at:
            new_rank = (new_terminal, ev.cum_exec_qty)
            last_rank = (last_terminal, last.cum_exec_qty)
            if new_rank < last_rank:
                return Verdict.STALE
            if same_state:
                return Verdict.DUPLICATE
        return Verdict.ACCEPTED

    def _store_order(self, ev: OrderUpdated) -> None:
        if ev.order_status in TERMINAL_STATUSES:
            if self.open_orders.pop(ev.order_id, None) is not None:
                self._ref(ev.symbol, -1)
            self._closed_orders[ev.order_id] = ClosedOrder(
                ev.order_id, ev.symbol, ev.order_status, ev.cum_exec_qty, ev.updated_at
            )
            self._closed_orders.move_to_end(ev.order_id)
            while len(self._closed_orders) > self._closed_kept:
                self._closed_orders.popitem(last=False)
        else:
            self._closed_orders.pop(ev.order_id, None)
            if ev.order_id not in self.open_orders:
                self._ref(ev.symbol, 1)
            self.open_orders[ev.order_id] = ev

    def _ref(self, symbol: str, delta: int) -> None:
        count = self._symbol_refs.get(symbol, 0) + delta
        if count > 0:
            self._symbol_refs[symbol] = count
        else:
            self._symbol_refs.pop(symbol, None)
        if (count > 0) != (count - delta > 0):
            self.symbols_changed = True

    # ------------------------------------------------------------------ executions, wallet

    def apply_execution(self, ev: ExecutionReported) -> Verdict:
        if ev.exec_id in self._exec_ids:
            return Verdict.DUPLICATE
        self._exec_ids[ev.exec_id] = None
        while len(self._exec_ids) > self._exec_kept:
            self._exec_ids.popitem(last=False)
        self.executions_known_until(to_ms(ev.occurred_at))
        return Verdict.ACCEPTED

    def has_execution(self, exec_id: str) -> bool:
        """Whether this fill was accepted (among the last ``exec_ids_kept``)."""
        return exec_id in self._exec_ids

    def executions_known_until(self, time_ms: int) -> None:
        """Every fill up to ``time_ms`` (exchange clock) has been seen or is not wanted."""
        if self.execution_watermark_ms is None or time_ms > self.execution_watermark_ms:
            self.execution_watermark_ms = time_ms

    def begin_backfill(self, *, now_ms: int, overlap_ms: int) -> BackfillWindow | None:
        """Where the execution history should be read from, or None without a watermark.

        It starts ``overlap_ms`` before the watermark, because a fill can reach the stream
        after a later one (the later one moved the watermark; the earlier one died with the
        link); what the overlap re-reads is deduplicated by execId. It reaches back to a
        backfill that never completed, and no further than the 7 days Bybit keeps. The start
        stays pending until ``end_backfill``.
        """
        if self.execution_watermark_ms is None:
            return None
        wanted = self.execution_watermark_ms - overlap_ms
        if self._backfill_pending_ms is not None:
            wanted = min(wanted, self._backfill_pending_ms)
        self._backfill_pending_ms = wanted
        # A minute inside the limit, so that clock skew cannot push it outside.
        oldest = now_ms - EXECUTION_HISTORY_MS + 60_000
        return BackfillWindow(max(wanted, oldest), wanted)

    def end_backfill(self, known_until_ms: int) -> None:
        """The history up to ``known_until_ms`` (the REST response time) has been applied."""
        self._backfill_pending_ms = None
        self.executions_known_until(known_until_ms)

    def apply_wallet(self, ev: WalletUpdated, time_ms: int) -> Verdict:
        if time_ms < self.wallet_time_ms:
            return Verdict.STALE
        if self.wallet is not None and _wallet_content(self.wallet) == _wallet_content(ev):
            self.wallet_time_ms = time_ms
            return Verdict.DUPLICATE
        self.wallet = ev
        self.wallet_time_ms = time_ms
        return Verdict.ACCEPTED

    def apply(self, ev: Event, *, time_ms: int | None = None) -> Verdict:
        if isinstance(ev, PositionUpdated):
            return self.apply_position(ev)
        if isinstance(ev, OrderUpdated):
            return self.apply_order(ev)
        if isinstance(ev, ExecutionReported):
            return self.apply_execution(ev)
        if isinstance(ev, WalletUpdated):
            return self.apply_wallet(ev, time_ms if time_ms is not None else to_ms(ev.occurred_at))
        raise TypeError(f"not an account data event: {type(ev).__name__}")

    # ------------------------------------------------------------------ resync

    def apply_snapshot(
        self,
        snap: SnapshotEvents,
        meta: Meta,
        on_verdict: Callable[[str, Verdict], None] | None = None,
    ) -> list[Event]:
        """Merge a REST snapshot; returns what to publish, in order.

        Must run before the stream frames buffered during the snapshot are applied: those
        are newer, and an order created after the snapshot must not look vanished.
        """
        out: list[Event] = []
        seen_positions: set[tuple[str, int]] = set()
        for pos in snap.positions:
            seen_positions.add((pos.symbol, pos.position_idx))
            verdict = self.apply_position(pos)
            if on_verdict is not None:
                on_verdict("position", verdict)
            if verdict is Verdict.ACCEPTED:
                out.append(pos)
        for key, last in list(self.positions.items()):
            if key in seen_positions or last.size == 0:
                continue
            if settle_coin_of(last.symbol) not in self.settle_coins:
                continue  # outside what the snapshot asked for: absence proves nothing
            flat = _flat(last, meta)
            self._set_position(key, flat)
            out.append(flat)
        seen_orders: set[str] = set()
        for order in snap.orders:
            seen_orders.add(order.order_id)
            verdict = self.apply_order(order)
            if on_verdict is not None:
                on_verdict("order", verdict)
            if verdict is Verdict.ACCEPTED:
                out.append(order)
        for order in snap.closed_orders:
            if order.order_id in seen_orders or order.order_status not in TERMINAL_STATUSES:
                continue
            verdict = self.apply_order(order)
            if on_verdict is not None:
                on_verdict("closed_order", verdict)
            if verdict is Verdict.ACCEPTED:
                out.append(order)
        for order_id, last_order in list(self.open_orders.items()):
            if order_id in seen_orders:
                continue
            if settle_coin_of(last_order.symbol) not in self.settle_coins:
                continue
            closed = _closed(last_order, meta)
            self._store_order(closed)
            out.append(closed)
        if snap.wallet is not None:
            verdict = self.apply_wallet(snap.wallet, snap.wallet_time_ms)
            if on_verdict is not None:
                on_verdict("wallet", verdict)
            if verdict is Verdict.ACCEPTED:
                out.append(snap.wallet)
        return out

    # ------------------------------------------------------------------ market interest

    def symbols(self) -> frozenset[str]:
        """Symbols this account holds or has open orders in: they need mark prices."""
        return frozenset(self._symbol_refs)


_ENVELOPE = frozenset(
    {"event_id", "occurred_at", "produced_at", "correlation_id", "origin", "source"}
)


def _wallet_content(ev: WalletUpdated) -> dict[str, Any]:
    return ev.model_dump(exclude=set(_ENVELOPE))


def _flat(last: PositionUpdated, meta: Meta) -> PositionUpdated:
    updated_ms = to_ms(last.updated_at)
    return last.model_copy(
        update={
            "event_id": event_id(
                meta.account, last.symbol, last.position_idx, last.seq, updated_ms, "resync-flat"
            ),
            "produced_at": meta.produced_at,
            "correlation_id": meta.correlation_id,
            "origin": DataOrigin.SNAPSHOT,
            "side": None,
            "size": _ZERO,
            "position_value": _ZERO,
            "unrealised_pnl": _ZERO,
            "position_im": _ZERO,
            "position_mm": _ZERO,
            "liq_price": None,
        }
    )


def _closed(last: OrderUpdated, meta: Meta) -> OrderUpdated:
    updated_ms = to_ms(last.updated_at)
    return last.model_copy(
        update={
            "event_id": order_event_id(
                meta.account, last.order_id, CLOSED_BY_RESYNC, updated_ms, last.cum_exec_qty
            ),
            "produced_at": meta.produced_at,
            "correlation_id": meta.correlation_id,
            "origin": DataOrigin.SNAPSHOT,
            "order_status": CLOSED_BY_RESYNC,
            "leaves_qty": _ZERO,
            "leaves_value": _ZERO,
        }
    )


# --------------------------------------------------------------------------- market data


class TickerBook:
    """Latest full ticker per symbol: a delta carries only changed fields (§3.5)."""

    def __init__(self) -> None:
        self._tickers: dict[str, dict[str, Any]] = {}

    def apply(self, symbol: str, data: dict[str, Any], *, snapshot: bool) -> dict[str, Any]:
        if snapshot or symbol not in self._tickers:
            # A delta before any snapshot still carries what changed; start from it.
            merged = dict(data)
            self._tickers[symbol] = merged
            return merged
        current = self._tickers[symbol]
        current.update(data)
        return current

    def get(self, symbol: str) -> dict[str, Any] | None:
        return self._tickers.get(symbol)

    def forget(self, symbol: str) -> None:
        self._tickers.pop(symbol, None)

    def clear(self) -> None:
        self._tickers.clear()


@dataclass(slots=True)
class Tick:
    symbol: str
    ticker: dict[str, Any]
    ts_ms: int


@dataclass(slots=True)
class _Slot:
    pending: Tick | None = None
    count: int = 0
    last_emit: float | None = None


@dataclass(slots=True)
class Coalesced:
    tick: Tick
    ticks: int


@dataclass
class Coalescer:
    """At most one record per symbol per interval; the latest tick wins and is never lost.

    The first tick after a quiet interval goes out at once (no added latency for slow
    symbols); ticks inside the interval wait in one slot that the next ``due`` call emits
    when the interval is over. ``now`` is a monotonic time in seconds.
    """

    interval_s: float
    _slots: dict[str, _Slot] = field(default_factory=dict)

    def offer(self, tick: Tick, now: float) -> Coalesced | None:
        slot = self._slots.get(tick.symbol)
        if slot is None:
            slot = self._slots[tick.symbol] = _Slot()
        slot.pending = Tick(tick.symbol, dict(tick.ticker), tick.ts_ms)
        slot.count += 1
        if slot.last_emit is None or now - slot.last_emit >= self.interval_s:
            return self._take(slot, now)
        return None

    def due(self, now: float) -> list[Coalesced]:
        out = []
        for slot in self._slots.values():
            if slot.pending is not None and (
                slot.last_emit is None or now - slot.last_emit >= self.interval_s
            ):
                out.append(self._take(slot, now))
        return out

    def next_due(self) -> float | None:
        """Monotonic time when the earliest pending record becomes due, if any."""
        times = [(s.last_emit or 0.0) + self.interval_s for s in self._slots.values() if s.pending]
        return min(times) if times else None

    def drain(self, now: float) -> list[Coalesced]:
        """Everything pending, whatever the interval (shutdown: never drop the last one)."""
        return [self._take(s, now) for s in self._slots.values() if s.pending is not None]

    def _take(self, slot: _Slot, now: float) -> Coalesced:
        assert slot.pending is not None
        out = Coalesced(slot.pending, slot.count)
        slot.pending = None
        slot.count = 0
        slot.last_emit = now
        return out

    @staticmethod
    def folded(items: Iterable[Coalesced]) -> int:
        return sum(c.ticks - 1 for c in items)
