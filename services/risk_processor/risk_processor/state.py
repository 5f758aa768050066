"""What the processor remembers, as immutable values, and how events change it.

Each value lives in a Faust table keyed by account (or symbol, or 'portfolio'). A value in
a table is never mutated: positions and orders are updated on a private copy made once
per batch (``apply_position`` / ``apply_order`` change it in place and return False for a
stale or duplicate update), the other ``apply_*`` functions return a new value or
``None``; the caller assigns the result back, which writes the changelog record.

Ordering keys (durable, so a replay after a crash is recognised):
- positions: Bybit's ``seq`` per (symbol, position_idx): an update at or below the stored
  seq is stale;
- orders: ``updated_at`` per order id; closed orders are remembered (bounded) so a
  replayed older "New" cannot reopen them;
- wallet: ``occurred_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from risk_processor import codec
from risk_processor.engine import (
    AccountExposure,
    AlertState,
    Order,
    Position,
    Side,
    Tier,
    TierTable,
    Wallet,
)
from risk_processor.engine.link import LinkState
from riskwatch_common.clock import to_ms
from riskwatch_common.contracts import (
    MarkPriceUpdated,
    OrderUpdated,
    PositionUpdated,
    RiskLimitTableUpdated,
    WalletUpdated,
    derived_event_id,
)
from riskwatch_common.contracts import Side as WireSide

CLOSED_ORDERS_KEPT = 256
TIER_HISTORY_KEPT = 4

_SIDE = {WireSide.BUY: Side.BUY, WireSide.SELL: Side.SELL}


def position_key(symbol: str, idx: int) -> str:
    return f"{symbol}|{idx}"


# --------------------------------------------------------------------------- positions


@dataclass(frozen=True, slots=True)
class PositionEntry:
    """A position with its ordering key and its changelog form, made once when the update
    arrives: an account's table value is rewritten on every change of any of its rows,
    so rows are not re-serialized each time."""

    position: Position
    seq: int
    wire: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, position: Position, seq: int) -> PositionEntry:
        return cls(position, seq, codec.position_to_json(position))


Positions = Mapping[str, PositionEntry]


def to_position(ev: PositionUpdated) -> Position:
    """The engine's view of a position row (raises ValueError on an inconsistent row)."""
    side = _SIDE[ev.side] if ev.side is not None and ev.size else None
    return Position(
        account=ev.account,
        symbol=ev.symbol,
        position_idx=ev.position_idx,
        side=side,
        size=ev.size,
        entry_price=ev.entry_price,
        leverage=ev.leverage or None,
        mark_price=ev.mark_price or None,
        liq_price=ev.liq_price or None,
        is_reduce_only=ev.is_reduce_only,
        mmr_sys_updated_at=ev.mmr_sys_updated_at,
        leverage_sys_updated_at=ev.leverage_sys_updated_at,
        risk_id=ev.risk_id,
        position_im=ev.position_im,
        position_mm=ev.position_mm,
    )


def apply_position(book: dict[str, PositionEntry], ev: PositionUpdated) -> bool:
    """Apply ``ev`` to ``book`` in place; False (nothing changed) when it is not newer.

    ``book`` is the caller's private copy of a table value (copied once per batch, so a
    batch of updates to one account costs one copy, not one per event). Flat rows are
    kept: they still carry the leverage that caps what orders may add.
    """
    key = position_key(ev.symbol, ev.position_idx)
    held = book.get(key)
    if held is not None and ev.seq <= held.seq:
        return False
    book[key] = PositionEntry.of(to_position(ev), ev.seq)
    return True


def positions_to_json(book: Positions) -> Any:
    return {
        k: [e.wire if e.wire is not None else codec.position_to_json(e.position), e.seq]
        for k, e in book.items()
    }


def positions_from_json(d: Mapping[str, Any]) -> dict[str, PositionEntry]:
    return {k: PositionEntry(codec.position_from_json(p), int(seq), p) for k, (p, seq) in d.items()}


# --------------------------------------------------------------------------- orders


@dataclass(frozen=True, slots=True)
class OrderEntry:
    """An open order, its ordering key and its changelog form (see ``PositionEntry``)."""

    order: Order
    updated_ms: int
    wire: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, order: Order, updated_ms: int) -> OrderEntry:
        return cls(order, updated_ms, codec.order_to_json(order))


@dataclass(frozen=True, slots=True)
class OrderBook:
    """Open orders that can be valued, and recently closed order ids with their close time.

    Treated as immutable once stored in a table; ``apply_order`` works on ``copy()``.
    """

    open: dict[str, OrderEntry] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)

    def copy(self) -> OrderBook:
        return OrderBook(dict(self.open), dict(self.closed))


EMPTY_ORDERS = OrderBook()


def to_order(ev: OrderUpdated) -> Order | None:
    """The engine's open order, or ``None`` when it is not open or has no price to value."""
    if not ev.is_open:
        return None
    price = ev.price or ev.trigger_price or ev.avg_price
    qty = ev.leaves_qty or (ev.qty - ev.cum_exec_qty)
    if not price or qty <= 0:
        return None
    return Order(
        order_id=ev.order_id,
        symbol=ev.symbol,
        side=_SIDE[ev.side],
        price=price,
        qty=qty,
        position_idx=ev.position_idx,
        reduce_only=ev.reduce_only,
        close_on_trigger=ev.close_on_trigger,
        # Bybit: a conditional order waits as "Untriggered" and counts for nothing yet.
        is_conditional_untriggered=ev.order_status == "Untriggered",
    )


def apply_order(book: OrderBook, ev: OrderUpdated) -> bool:
    """Apply ``ev`` to ``book`` (a private ``copy()``) in place; False when not newer."""
    updated = to_ms(ev.updated_at)
    held = book.open.get(ev.order_id)
    if held is not None and updated < held.updated_ms:
        return False
    closed_at = book.closed.get(ev.order_id)
    if closed_at is not None and updated < closed_at:
        return False
    order = to_order(ev)
    if order is not None:
        book.open[ev.order_id] = OrderEntry.of(order, updated)
        if closed_at is not None:
            del book.closed[ev.order_id]
        return True
    if held is None and closed_at == updated:
        return False  # the same close again
    book.open.pop(ev.order_id, None)
    closed = book.closed
    closed.pop(ev.order_id, None)
    closed[ev.order_id] = updated
    if len(closed) > CLOSED_ORDERS_KEPT:
        # Insertion order is close order: the first key is the oldest close.
        del closed[next(iter(closed))]
    return True


def orders_to_json(book: OrderBook) -> Any:
    return {
        "open": {
            k: [e.wire if e.wire is not None else codec.order_to_json(e.order), e.updated_ms]
            for k, e in book.open.items()
        },
        "closed": dict(book.closed),
    }


def orders_from_json(d: Mapping[str, Any]) -> OrderBook:
    return OrderBook(
        {k: OrderEntry(codec.order_from_json(o), int(ms), o) for k, (o, ms) in d["open"].items()},
        {k: int(v) for k, v in d["closed"].items()},
    )


# --------------------------------------------------------------------------- wallet


@dataclass(frozen=True, slots=True)
class WalletEntry:
    wallet: Wallet
    account_type: str
    at_ms: int


def apply_wallet(entry: WalletEntry | None, ev: WalletUpdated) -> WalletEntry | None:
    at = to_ms(ev.occurred_at)
    if entry is not None and at < entry.at_ms:
        return None
    wallet = Wallet(
        total_equity=ev.total_equity,
        total_wallet_balance=ev.total_wallet_balance,
        total_margin_balance=ev.total_margin_balance,
        total_initial_margin=ev.total_initial_margin,
        total_maintenance_margin=ev.total_maintenance_margin,
        account_mm_rate=ev.account_mm_rate,
        account_im_rate=ev.account_im_rate,
        total_perp_upl=ev.total_perp_upl,
    )
    if entry is not None and at == entry.at_ms and wallet == entry.wallet:
        return None
    return WalletEntry(wallet, ev.account_type, at)


def wallet_to_json(e: WalletEntry) -> Any:
    return {"w": codec.wallet_to_json(e.wallet), "type": e.account_type, "at": e.at_ms}


def wallet_from_json(d: Mapping[str, Any]) -> WalletEntry:
    return WalletEntry(codec.wallet_from_json(d["w"]), str(d["type"]), int(d["at"]))


# --------------------------------------------------------------------------- risk book


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A tightened tier table that does not apply to this account yet (grace period).

    ``old`` keeps applying until ``deadline``, or until the trial calculation says the
    account's risk is lower under ``new_version`` (the trader added margin or cut size).
    """

    old: TierTable
    new_version: str
    changed_at: datetime
    deadline: datetime


@dataclass(frozen=True, slots=True)
class RiskBook:
    """Alert lifecycle state and tier bookkeeping of one account (or the portfolio).

    ``seqs`` counts the transitions published per alert id and survives resolution, so a
    re-raise gets a new event id while a replayed transition gets the same one.
    ``outbox`` holds the encoded alert records of transitions not yet known to be on the
    alerts topic, by event id: it is written in the same changelog record as the state
    change that caused them (a transactional outbox), so a crash between the two cannot
    lose an alert; entries leave once the broker acknowledged them.
    ``warmup_started`` (portfolio only): when the portfolio was first evaluated, the start
    of its warm-up (``evaluate.portfolio_readiness``).
    ``link`` (accounts only): what the ingestor last said about the account's link to
    Bybit (``engine.link``), ``None`` until it said anything.
    """

    alerts: Mapping[str, AlertState] = field(default_factory=dict)
    seqs: Mapping[str, int] = field(default_factory=dict)
    tiers_seen: Mapping[str, str] = field(default_factory=dict)
    tiers_held: Mapping[str, Tier] = field(default_factory=dict)
    pending: Mapping[str, PendingChange] = field(default_factory=dict)
    outbox: Mapping[str, bytes] = field(default_factory=dict)
    warmup_started: datetime | None = None
    link: LinkState | None = None


EMPTY_RISK = RiskBook()


def risk_to_json(b: RiskBook) -> Any:
    return {
        "alerts": {k: s.to_dict() for k, s in b.alerts.items()},
        "seqs": dict(b.seqs),
        "seen": dict(b.tiers_seen),
        "held": {k: codec.tier_to_json(t) for k, t in b.tiers_held.items()},
        "pending": {
            k: {
                "old": codec.table_to_json(p.old),
                "new": p.new_version,
                "at": p.changed_at.isoformat(),
                "deadline": p.deadline.isoformat(),
            }
            for k, p in b.pending.items()
        },
        "outbox": {k: v.decode() for k, v in b.outbox.items()},
        **({"warmup": b.warmup_started.isoformat()} if b.warmup_started is not None else {}),
        **({"link": b.link.to_dict()} if b.link is not None else {}),
    }


def risk_from_json(d: Mapping[str, Any]) -> RiskBook:
    return RiskBook(
        alerts={k: AlertState.from_dict(s) for k, s in d["alerts"].items()},
        seqs={k: int(v) for k, v in d["seqs"].items()},
        tiers_seen=dict(d.get("seen", {})),
        tiers_held={k: codec.tier_from_json(t) for k, t in d.get("held", {}).items()},
        pending={
            k: PendingChange(
                codec.table_from_json(p["old"]),
                p["new"],
                datetime.fromisoformat(p["at"]),
                datetime.fromisoformat(p["deadline"]),
            )
            for k, p in d.get("pending", {}).items()
        },
        outbox={k: v.encode() for k, v in d.get("outbox", {}).items()},
        warmup_started=datetime.fromisoformat(d["warmup"]) if "warmup" in d else None,
        link=LinkState.from_dict(d["link"]) if "link" in d else None,
    )


# --------------------------------------------------------------------------- market data


@dataclass(frozen=True, slots=True)
class MarkEntry:
    price: Decimal
    correlation_id: str
    produced_ms: int


def apply_mark(entry: MarkEntry | None, ev: MarkPriceUpdated) -> MarkEntry | None:
    """The new mark, or ``None`` when the price did not move (no table write, no re-run)."""
    if entry is not None and entry.price == ev.mark_price:
        return None
    return MarkEntry(ev.mark_price, ev.correlation_id, to_ms(ev.produced_at))


def mark_to_json(e: MarkEntry) -> Any:
    return [str(e.price), e.correlation_id, e.produced_ms]


def mark_from_json(d: Any) -> MarkEntry:
    return MarkEntry(Decimal(d[0]), str(d[1]), int(d[2]))


@dataclass(frozen=True, slots=True)
class TierEntry:
    """A symbol's current tier table and the few versions before it.

    ``version`` is a digest of the tiers' content: the ingestor republishes tables
    periodically, and only a content change is a platform risk-parameter change.
    """

    version: str
    table: TierTable
    history: Mapping[str, TierTable]
    changed_at: datetime
    correlation_id: str
    produced_ms: int


def to_tier_table(ev: RiskLimitTableUpdated) -> TierTable:
    return TierTable(
        ev.symbol,
        tuple(
            Tier(
                id=t.tier_id,
                risk_limit_value=t.risk_limit_value,
                mmr=t.maintenance_margin_rate,
                imr=t.initial_margin_rate,
                max_leverage=t.max_leverage,
                mm_deduction=t.mm_deduction,
            )
            for t in ev.tiers
        ),
    )


def table_version(table: TierTable) -> str:
    """A digest of the tiers' content (normalized numbers, so 0.0050 equals 0.005)."""
    return derived_event_id(
        table.symbol,
        *(
            f"{t.id}:{t.risk_limit_value.normalize()}:{t.mmr.normalize()}:{t.imr.normalize()}"
            f":{t.max_leverage.normalize()}:{t.mm_deduction.normalize()}"
            for t in table.tiers
        ),
    )


def apply_tiers(entry: TierEntry | None, ev: RiskLimitTableUpdated) -> TierEntry | None:
    """The new table, or ``None`` when the content is what we hold already."""
    table = to_tier_table(ev)
    version = table_version(table)
    if entry is not None and entry.version == version:
        return None
    history: dict[str, TierTable] = {}
    if entry is not None:
        history = dict(entry.history)
        history[entry.version] = entry.table
        history.pop(version, None)
        while len(history) > TIER_HISTORY_KEPT:
            del history[next(iter(history))]
    return TierEntry(
        version, table, history, ev.occurred_at, ev.correlation_id, to_ms(ev.produced_at)
    )


def tiers_to_json(e: TierEntry) -> Any:
    return {
        "version": e.version,
        "table": codec.table_to_json(e.table),
        "history": {k: codec.table_to_json(t) for k, t in e.history.items()},
        "at": e.changed_at.isoformat(),
        "corr": e.correlation_id,
        "produced": e.produced_ms,
    }


def tiers_from_json(d: Mapping[str, Any]) -> TierEntry:
    return TierEntry(
        d["version"],
        codec.table_from_json(d["table"]),
        {k: codec.table_from_json(t) for k, t in d["history"].items()},
        datetime.fromisoformat(d["at"]),
        d["corr"],
        int(d["produced"]),
    )


# --------------------------------------------------------------------------- portfolio


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """An account's latest exposure as the portfolio stage received it (``wire``: the
    exposure's JSON form as received, reused for the changelog). ``resynced``: whether the
    account completed its first resync, ``None`` when it never reported a link status."""

    exposure: AccountExposure
    at_ms: int
    correlation_id: str
    produced_ms: int
    wire: Any = field(default=None, compare=False, repr=False)
    resynced: bool | None = None


def newer_summary(held: AccountSummary | None, summary: AccountSummary) -> bool:
    """Whether ``summary`` may replace ``held`` (evaluation time never goes back)."""
    return held is None or summary.at_ms >= held.at_ms


def summary_to_json(s: AccountSummary) -> Any:
    return {
        "e": s.wire if s.wire is not None else codec.exposure_to_json(s.exposure),
        "at": s.at_ms,
        "corr": s.correlation_id,
        "produced": s.produced_ms,
        **({"resynced": s.resynced} if s.resynced is not None else {}),
    }


def summary_from_json(d: Mapping[str, Any]) -> AccountSummary:
    resynced = d.get("resynced")
    return AccountSummary(
        codec.exposure_from_json(d["e"]),
        int(d["at"]),
        str(d["corr"]),
        int(d["produced"]),
        d["e"],
        None if resynced is None else bool(resynced),
    )


# The portfolio table holds two kinds of value: each account's summary and the portfolio's
# own risk book, so a batch rewrites only the accounts that changed.
PortfolioValue = AccountSummary | RiskBook


def portfolio_value_to_json(v: PortfolioValue) -> Any:
    if isinstance(v, AccountSummary):
        return {"summary": summary_to_json(v)}
    return {"risk": risk_to_json(v)}


def portfolio_value_from_json(d: Mapping[str, Any]) -> PortfolioValue:
    if "summary" in d:
        return summary_from_json(d["summary"])
    return risk_from_json(d["risk"])
