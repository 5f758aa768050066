"""Bybit v5 frames and REST rows to riskwatch contract events. Pure: no I/O, no clock.

Numbers are parsed to Decimal from Bybit's strings, ``""`` meaning "not applicable"
(docs/bybit-v5.md §2). The exchange time of each row goes to ``occurred_at``; ``produced_at`` is
handed in by the caller. ``event_id`` is derived from the row's identity so the same state
change seen twice (stream and resync, a redelivered frame) has the same id downstream.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from ingestor import tiers as tiermath
from riskwatch_common.contracts import (
    AccountStatusChanged,
    CoinBalance,
    DataOrigin,
    Event,
    ExecutionReported,
    MarkPriceUpdated,
    OrderUpdated,
    PositionUpdated,
    RiskLimitTableUpdated,
    RiskTier,
    StreamStatus,
    WalletUpdated,
    derived_event_id,
    new_event_id,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_NONE_TEXT = frozenset({"", "None", "none"})

ROW_ERRORS: tuple[type[Exception], ...] = (
    KeyError,
    TypeError,
    ValueError,
    ArithmeticError,
    ValidationError,
)
"""What a row builder (position/order/execution/wallet/mark price/risk-limit table) raises
for a row it cannot use, and nothing else: callers catch exactly these."""
_ROW_ERRORS = ROW_ERRORS

PRIVATE_KINDS = ("position", "order", "execution", "wallet")


class FrameError(Exception):
    """A frame that cannot be used; ``reason`` is the dead-letter reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Meta:
    """Envelope values shared by every event built from one frame or one snapshot."""

    account: str
    source: str
    produced_at: datetime
    correlation_id: str
    origin: DataOrigin = DataOrigin.STREAM


# --------------------------------------------------------------------------- primitives


def from_ms(ms: int) -> datetime:
    """Exact for any millisecond count (no float rounding), so equal ms compare equal."""
    return _EPOCH + ms * _MS


def to_ms(when: datetime) -> int:
    return (when - _EPOCH) // _MS


def dec(value: Any) -> Decimal:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        d = Decimal(value)
    elif isinstance(value, float):
        # repr is the shortest text that round-trips: 0.1 stays 0.1, not its binary value
        d = Decimal(repr(value))
    else:
        raise TypeError(f"expected a number, got {value!r}")
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return d


def opt_dec(value: Any) -> Decimal | None:
    if value is None or (isinstance(value, str) and value in _NONE_TEXT):
        return None
    return dec(value)


def opt_nonzero(value: Any) -> Decimal | None:
    """Prices where Bybit writes "" or "0" for "none" (liqPrice, avgPrice, triggerPrice)."""
    d = opt_dec(value)
    return None if d is None or d == 0 else d


def _zero(value: Any) -> bool:
    """Bybit writes "" or "0" (or "0.00") where a price or a time does not apply."""
    if isinstance(value, str):
        return not value.strip("0.")
    return value is None or value == 0


def ms_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("timestamp is a bool")
    return int(value)


def canonical(d: Decimal) -> str:
    """One spelling per value ("0.00" and "0" alike) for identities built from numbers."""
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "0") else text


_NAMESPACE = uuid.NAMESPACE_URL.bytes


def event_id(*parts: object) -> str:
    """``derived_event_id(*parts)``, computed without building a UUID object.

    Same bytes (uuid5 over NAMESPACE_URL and the '|'-joined parts), about 3x cheaper; the
    equality is a unit test. It is a quarter of the per-frame budget otherwise.
    """
    digest = bytearray(
        hashlib.sha1(_NAMESPACE + "|".join([str(p) for p in parts]).encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def _object(row: Any) -> Mapping[str, Any]:
    """``row`` itself when it is a JSON object; a row of another type is a TypeError (one
    of ``ROW_ERRORS``), never an AttributeError past the caller's handler."""
    if type(row) is dict or isinstance(row, Mapping):
        return row
    raise TypeError(f"row is not an object: {type(row).__name__}")


def _present(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row without Bybit's "" (= not applicable) values, so ``get`` yields None."""
    return {k: v for k, v in _object(row).items() if v != ""}


# --------------------------------------------------------------------------- private rows
#
# The builders hand Bybit's number strings and ms timestamps straight to the pydantic
# models, whose validators (Rust) parse them to Decimal / aware datetime and reject NaN,
# infinities and garbage: half the cost of converting each field in Python, which matters
# at a 50 µs per-frame budget.


def position_event(row: Mapping[str, Any], meta: Meta) -> PositionUpdated:
    r = _present(row)
    symbol = r["symbol"]
    idx = r.get("positionIdx", 0)
    seq = r["seq"]
    updated = r["updatedTime"]
    side = r.get("side")
    if side == "None":
        side = None
    liq = r.get("liqPrice")
    mark = r.get("markPrice")
    # the docs' REST example spells it mmrSysUpdateTime (docs/bybit-v5.md §2.1)
    mmr_sys = r.get("mmrSysUpdatedTime") or r.get("mmrSysUpdateTime")
    lev_sys = r.get("leverageSysUpdatedTime")
    event = PositionUpdated(
        event_id=event_id(meta.account, symbol, idx, seq, updated),
        occurred_at=updated,
        produced_at=meta.produced_at,
        source=meta.source,
        correlation_id=meta.correlation_id,
        account=meta.account,
        origin=meta.origin,
        symbol=symbol,
        position_idx=idx,
        side=side,
        size=r["size"],
        entry_price=r.get("entryPrice") or r.get("avgPrice") or "0",  # avgPrice: REST name
        leverage=r.get("leverage"),
        mark_price=None if _zero(mark) else mark,
        position_value=r.get("positionValue"),
        liq_price=None if _zero(liq) else liq,  # "" in REST, "0" in WS: none (§3.6)
        unrealised_pnl=r.get("unrealisedPnl"),
        cum_realised_pnl=r.get("cumRealisedPnl"),
        position_im=r.get("positionIM") or r.get("positionIMByMp"),
        position_mm=r.get("positionMM") or r.get("positionMMByMp"),
        risk_id=r.get("riskId"),
        position_status=r.get("positionStatus"),
        is_reduce_only=r.get("isReduceOnly", False),
        mmr_sys_updated_at=None if _zero(mmr_sys) else mmr_sys,
        leverage_sys_updated_at=None if _zero(lev_sys) else lev_sys,
        seq=seq,
        updated_at=updated,
    )
    if event.side is None and event.size != 0:
        raise ValueError(f"position {symbol} has size {event.size} but no side")
    return event


def order_event_id(account: str, order_id: str, status: str, updated_ms: Any, cum: Decimal) -> str:
    return event_id(account, order_id, status, updated_ms, canonical(cum))


def order_event(row: Mapping[str, Any], meta: Meta) -> OrderUpdated:
    r = _present(row)
    order_id = r["orderId"]
    status = r["orderStatus"]
    updated = r["updatedTime"]
    cum = dec(r.get("cumExecQty") or "0")
    stop_type = r.get("stopOrderType")
    trigger = r.get("triggerPrice")
    avg = r.get("avgPrice")
    return OrderUpdated(
        event_id=order_event_id(meta.account, order_id, status, ms_int(updated), cum),
        occurred_at=updated,
        produced_at=meta.produced_at,
        source=meta.source,
        correlation_id=meta.correlation_id,
        account=meta.account,
        origin=meta.origin,
        symbol=r["symbol"],
        order_id=order_id,
        order_link_id=r.get("orderLinkId") or "",
        side=r["side"],
        order_type=r.get("orderType") or "",
        order_status=status,
        price=r.get("price"),
        qty=r["qty"],
        leaves_qty=r.get("leavesQty") or "0",
        leaves_value=r.get("leavesValue"),
        cum_exec_qty=cum,
        avg_price=None if _zero(avg) else avg,
        position_idx=r.get("positionIdx", 0),
        reduce_only=r.get("reduceOnly", False),
        close_on_trigger=r.get("closeOnTrigger", False),
        stop_order_type=None if stop_type == "UNKNOWN" else stop_type,
        trigger_price=None if _zero(trigger) else trigger,
        time_in_force=r.get("timeInForce"),
        updated_at=updated,
    )


def execution_event(row: Mapping[str, Any], meta: Meta) -> ExecutionReported:
    r = _present(row)
    exec_id = r["execId"]
    return ExecutionReported(
        event_id=event_id(meta.account, exec_id),
        occurred_at=r["execTime"],
        produced_at=meta.produced_at,
        source=meta.source,
        correlation_id=meta.correlation_id,
        account=meta.account,
        origin=meta.origin,
        symbol=r["symbol"],
        exec_id=exec_id,
        order_id=r["orderId"],
        side=r["side"],
        exec_price=r["execPrice"],
        exec_qty=r["execQty"],
        exec_value=r.get("execValue"),
        exec_fee=r.get("execFee"),
        exec_type=r.get("execType") or "Trade",
        closed_size=r.get("closedSize"),
        is_maker=r.get("isMaker", False),
        seq=r.get("seq"),
    )


def _coin(row: Mapping[str, Any]) -> CoinBalance:
    return CoinBalance(
        coin=str(row["coin"]),
        equity=opt_dec(row.get("equity")),
        usd_value=opt_dec(row.get("usdValue")),
        wallet_balance=opt_dec(row.get("walletBalance")),
        unrealised_pnl=opt_dec(row.get("unrealisedPnl")),
        total_position_im=opt_dec(row.get("totalPositionIM")),
        total_position_mm=opt_dec(row.get("totalPositionMM")),
    )


def wallet_event(
    row: Mapping[str, Any], meta: Meta, *, time_ms: int, identity: str
) -> WalletUpdated:
    """``time_ms`` is the frame's creationTime or the REST response time: a wallet row
    carries no time of its own. ``identity`` is the frame id or the REST response time."""
    row = _object(row)
    coins = row.get("coin") or []
    if not isinstance(coins, list):
        raise TypeError(f"coin is not a list: {type(coins).__name__}")
    return WalletUpdated(
        event_id=event_id(meta.account, "wallet", identity),
        occurred_at=from_ms(time_ms),
        produced_at=meta.produced_at,
        source=meta.source,
        correlation_id=meta.correlation_id,
        account=meta.account,
        origin=meta.origin,
        account_type=str(row.get("accountType") or "UNIFIED"),
        total_equity=dec(row["totalEquity"]),
        total_wallet_balance=dec(row["totalWalletBalance"]),
        total_margin_balance=dec(row["totalMarginBalance"]),
        total_available_balance=opt_dec(row.get("totalAvailableBalance")),
        total_perp_upl=opt_dec(row.get("totalPerpUPL")) or Decimal(0),
        total_initial_margin=opt_dec(row.get("totalInitialMargin")) or Decimal(0),
        total_maintenance_margin=opt_dec(row.get("totalMaintenanceMargin")) or Decimal(0),
        account_im_rate=opt_dec(row.get("accountIMRate")),
        account_mm_rate=opt_dec(row.get("accountMMRate")),
        coins=tuple(_coin(c) for c in coins if isinstance(c, dict)),
    )


# --------------------------------------------------------------------------- private frames


def parse(raw: bytes | str) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError("malformed_frame", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise FrameError("malformed_frame", f"not a JSON object: {type(doc).__name__}")
    return doc


@dataclass(slots=True)
class PrivateFrame:
    kind: str
    frame_id: str
    creation_ms: int | None
    events: list[Event] = field(default_factory=list)
    # (row index, error) of rows that could not be normalized; the frame is dead-lettered
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    skipped_rows: int = 0


def private_kind(frame: Mapping[str, Any]) -> str:
    """'position' for both the all-in-one ('position') and categorised ('position.linear')."""
    topic = frame.get("topic")
    if not isinstance(topic, str):
        raise FrameError("unknown_frame", f"no topic in frame (keys {sorted(frame)[:8]})")
    kind = topic.split(".", 1)[0]
    if kind not in PRIVATE_KINDS:
        raise FrameError("unknown_frame", f"unknown topic {topic!r}")
    return kind


_ROW_BUILDERS: dict[str, Callable[[Mapping[str, Any], Meta], Event]] = {
    "position": position_event,
    "order": order_event,
    "execution": execution_event,
}


def private_frame(
    frame: Mapping[str, Any], *, account: str, source: str, produced_at: datetime
) -> PrivateFrame:
    """Normalize one private-stream data frame; bad rows are reported, not raised.

    Rows of other categories (inverse, option, spot on an all-in-one topic) are skipped:
    riskwatch follows linear contracts.
    """
    kind = private_kind(frame)
    data = frame.get("data")
    if not isinstance(data, list):
        raise FrameError("malformed_frame", f"{kind} frame has no data list")
    frame_id = frame.get("id")
    creation = frame.get("creationTime")
    try:
        creation_ms = ms_int(creation) if creation not in (None, "") else None
    except (TypeError, ValueError):
        raise FrameError("malformed_frame", f"creationTime {creation!r} is not ms") from None
    correlation = str(frame_id) if frame_id not in (None, "") else new_event_id()
    out = PrivateFrame(kind, correlation, creation_ms)
    meta = Meta(account, source, produced_at, correlation)
    if kind == "wallet":
        if creation_ms is None:
            raise FrameError("malformed_frame", "wallet frame without creationTime")
        for i, row in enumerate(data):
            try:
                out.events.append(
                    wallet_event(row, meta, time_ms=creation_ms, identity=f"{correlation}:{i}")
                )
            except _ROW_ERRORS as exc:
                out.bad_rows.append((i, f"{type(exc).__name__}: {exc}"))
        return out
    build = _ROW_BUILDERS[kind]
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            out.bad_rows.append((i, "row is not an object"))
            continue
        category = row.get("category")
        if category is not None and category != "linear":
            out.skipped_rows += 1
            continue
        try:
            out.events.append(build(row, meta))
        except _ROW_ERRORS as exc:
            out.bad_rows.append((i, f"{type(exc).__name__}: {exc}"))
    return out


def snapshot_events(
    rows: list[Any],
    build: Callable[[Mapping[str, Any], Meta], Event],
    meta: Meta,
) -> tuple[list[Event], list[tuple[int, str]]]:
    """Normalize REST rows; returns (events, bad rows)."""
    events: list[Event] = []
    bad: list[tuple[int, str]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            bad.append((i, "row is not an object"))
            continue
        if row.get("category") not in (None, "linear"):
            continue
        try:
            events.append(build(row, meta))
        except _ROW_ERRORS as exc:
            bad.append((i, f"{type(exc).__name__}: {exc}"))
    return events, bad


def status_event(
    account: str,
    status: StreamStatus,
    *,
    now: datetime,
    source: str,
    reason: str = "",
    ret_code: int | None = None,
    correlation_id: str | None = None,
) -> AccountStatusChanged:
    return AccountStatusChanged(
        event_id=new_event_id(),
        occurred_at=now,
        produced_at=now,
        source=source,
        correlation_id=correlation_id or new_event_id(),
        account=account,
        status=status,
        reason=reason[:500],
        ret_code=ret_code,
    )


# --------------------------------------------------------------------------- public data


@dataclass(frozen=True, slots=True)
class TickerFrame:
    symbol: str
    snapshot: bool
    data: dict[str, Any]
    ts_ms: int
    cross_seq: int | None


def ticker_frame(frame: Mapping[str, Any]) -> TickerFrame:
    topic = frame.get("topic")
    if not isinstance(topic, str) or not topic.startswith("tickers."):
        raise FrameError("unknown_frame", f"unexpected public topic {topic!r}")
    data = frame.get("data")
    kind = frame.get("type")
    if not isinstance(data, dict) or kind not in ("snapshot", "delta"):
        raise FrameError("malformed_frame", "ticker frame needs type snapshot|delta and data")
    try:
        ts = ms_int(frame["ts"])
    except (KeyError, TypeError, ValueError):
        raise FrameError("malformed_frame", "ticker frame without ts") from None
    cs = frame.get("cs")
    return TickerFrame(
        symbol=topic[len("tickers.") :],
        snapshot=kind == "snapshot",
        data=data,
        ts_ms=ts,
        cross_seq=int(cs) if isinstance(cs, int) else None,
    )


def mark_price_event(
    symbol: str,
    ticker: Mapping[str, Any],
    *,
    ts_ms: int,
    ticks: int,
    produced_at: datetime,
    source: str,
) -> MarkPriceUpdated:
    mark = dec(ticker["markPrice"])
    return MarkPriceUpdated(
        event_id=event_id("mark", symbol, ts_ms, canonical(mark)),
        occurred_at=from_ms(ts_ms),
        produced_at=produced_at,
        source=source,
        correlation_id=f"tickers.{symbol}@{ts_ms}",
        symbol=symbol,
        mark_price=mark,
        index_price=opt_nonzero(ticker.get("indexPrice")),
        last_price=opt_nonzero(ticker.get("lastPrice")),
        ticks_coalesced=ticks,
    )


@dataclass(frozen=True, slots=True)
class TierTable:
    event: RiskLimitTableUpdated
    units: tiermath.Units
    mismatches: list[tiermath.DeductionMismatch]


def risk_limit_table(
    symbol: str,
    rows: list[dict[str, Any]],
    *,
    produced_at: datetime,
    source: str,
    occurred_ms: int | None = None,
) -> TierTable:
    """Tier rows to a table in fractions, with the deduction check; raises ValueError."""
    if not rows:
        raise ValueError(f"{symbol}: empty risk-limit table")
    raw = tiermath.sort_tiers(
        [
            tiermath.RawTier(
                tier_id=int(r["id"]),
                risk_limit_value=dec(r["riskLimitValue"]),
                mmr=dec(r["maintenanceMargin"]),
                imr=dec(r["initialMargin"]),
                max_leverage=dec(r["maxLeverage"]),
                mm_deduction=opt_dec(r.get("mmDeduction")),
                is_lowest_risk=bool(int(r.get("isLowestRisk") or 0)),
            )
            for r in rows
        ]
    )
    units = tiermath.detect_units(raw)
    fractions = tiermath.to_fractions(raw, units)
    mismatches = tiermath.deduction_mismatches(fractions)
    expected = tiermath.recompute_deductions(fractions)
    tiers = tuple(
        RiskTier(
            tier_id=t.tier_id,
            risk_limit_value=t.risk_limit_value,
            maintenance_margin_rate=t.mmr,
            initial_margin_rate=t.imr,
            max_leverage=t.max_leverage,
            # Bybit's own number is what it charges; ours only fills the lowest tier's "".
            mm_deduction=t.mm_deduction if t.mm_deduction is not None else exp,
            is_lowest_risk=t.is_lowest_risk,
        )
        for t, exp in zip(fractions, expected, strict=True)
    )
    content = "|".join(
        f"{t.tier_id}:{canonical(t.risk_limit_value)}:{canonical(t.maintenance_margin_rate)}:"
        f"{canonical(t.initial_margin_rate)}:{canonical(t.max_leverage)}:{canonical(t.mm_deduction)}"
        for t in tiers
    )
    when = from_ms(occurred_ms) if occurred_ms is not None else produced_at
    event = RiskLimitTableUpdated(
        event_id=derived_event_id("risk-limit", symbol, content),
        occurred_at=when,
        produced_at=produced_at,
        source=source,
        correlation_id=new_event_id(),
        symbol=symbol,
        tiers=tiers,
    )
    return TierTable(event, units, mismatches)
