"""The exchange core: a pure state machine over accounts, orders, positions and mark prices.

No I/O and no wall clock: time comes from the injected `now_ms`, ids from a per-run counter.
Every mutating call returns the private frames Bybit would push for it, in Bybit's order,
already in v5 wire format (docs/bybit-v5.md §3.6); the server only routes and serialises them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from bybit_sim.margin import build_tiers
from bybit_sim.rows import (
    Row,
    execution_row,
    fee_rate_for,
    fmt,
    order_row,
    position_row,
    rest_execution_row,
    risk_limit_rows,
    ticker_row,
    wallet_row,
)
from bybit_sim.scenario import (
    Action,
    AmendOrder,
    CancelOrder,
    Fault,
    FillOrder,
    PlaceOrder,
    PositionMode,
    Scenario,
    SetPosition,
    SetPrice,
    SetWalletBalance,
    resolve_position_idx,
)
from bybit_sim.state import CLOSED_ORDERS_LISTED, ZERO, Account, Market, Order, Position
from bybit_sim.valuation import (
    PositionView,
    leverage_for,
    position_views,
    symbol_risk,
    wallet_view,
)

# Ids stay stable for a given run id, so a recorded run can be compared with a replay.
_ID_NAMESPACE = uuid.UUID("6f1c2a52-9d0b-4a57-9a4e-6b7f0c1d2e3f")
_RISK_EVENTS_KEPT = 1000


class ExchangeError(Exception):
    """A request Bybit would refuse; `code` is the v5 retCode."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class PrivateFrame:
    id: str
    account: str
    # The all-in-one topic name; a categorised subscriber sees f"{topic}.linear".
    topic: str
    creation_time: int
    data: tuple[Row, ...]

    def message(self, topic: str | None = None) -> Row:
        return {
            "id": self.id,
            "topic": topic or self.topic,
            "creationTime": self.creation_time,
            "data": list(self.data),
        }

    def row_keys(self) -> list[Row]:
        """The identity of each row, per our dedup keys (docs/bybit-v5.md §3.7)."""
        wanted = {
            "position": ("symbol", "positionIdx", "seq", "size", "updatedTime"),
            "order": ("orderId", "orderStatus", "cumExecQty", "updatedTime"),
            "execution": ("execId", "orderId", "seq"),
            "wallet": ("totalWalletBalance", "accountMMRate"),
        }[self.topic]
        return [{k: row[k] for k in wanted} for row in self.data]


@dataclass
class ActionResult:
    frames: list[PrivateFrame] = field(default_factory=list)
    order_id: str | None = None


class Exchange:
    def __init__(
        self,
        scenario: Scenario,
        *,
        now_ms: Callable[[], int],
        run_id: str | None = None,
    ) -> None:
        self._now = now_ms
        self.scenario = scenario
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.enforcement = scenario.risk_limit_enforcement
        self._counter = 0
        self.risk_events: list[Row] = []
        start = now_ms()
        self._markets: dict[str, Market] = {}
        for sym in scenario.symbols:
            self._markets[sym.symbol] = Market(
                symbol=sym.symbol,
                tiers=build_tiers(sym.tiers),
                tick_size=sym.tick_size,
                mark_price=sym.price.start,
                start_price=sym.price.start,
                funding_rate=sym.funding_rate,
                open_interest=sym.open_interest,
                volume_24h=sym.volume_24h,
                high_24h=sym.price.start,
                low_24h=sym.price.start,
                # Seeded from the clock so seq keeps increasing across sim restarts, which
                # is what a consumer's seq-based staleness check expects from Bybit.
                trade_seq=start,
            )
        self._accounts: dict[str, Account] = {}
        self._by_key: dict[str, Account] = {}
        specs = scenario.all_accounts()
        master_uid = next((s.uid for s in specs if s.is_master), 0) or 0
        for spec in specs:
            account = Account(
                name=spec.name,
                uid=spec.uid or 0,
                parent_uid=master_uid,
                is_master=spec.is_master,
                api_key=spec.api_key,
                api_secret=spec.api_secret.get_secret_value(),
                hedge=spec.position_mode == "hedge",
                wallet_balance=spec.wallet_balance,
                default_leverage=dict(spec.leverage),
                account_type=spec.account_type,
                key=spec.key,
            )
            mode = spec.position_mode
            for p in spec.positions:
                idx = resolve_position_idx(mode, p.side, p.position_idx)
                market = self._markets[p.symbol]
                market.trade_seq += 1
                account.positions[(p.symbol, idx)] = Position(
                    symbol=p.symbol,
                    position_idx=idx,
                    leverage=p.leverage,
                    created_time=start,
                    updated_time=start,
                    side=p.side,
                    size=p.size,
                    entry_price=p.entry_price,
                    seq=market.trade_seq,
                )
            for o in spec.orders:
                order = self._new_order(
                    account,
                    symbol=o.symbol,
                    side=o.side,
                    order_type=o.order_type,
                    price=o.price,
                    qty=o.qty,
                    time_in_force=o.time_in_force,
                    position_idx=resolve_position_idx(mode, o.side, o.position_idx),
                    reduce_only=o.reduce_only,
                    order_link_id=o.order_link_id,
                )
                account.open_orders[order.order_id] = order
            self._accounts[spec.name] = account
            self._by_key[spec.api_key] = account

    # -- lookups -----------------------------------------------------------------------------

    @property
    def markets(self) -> Mapping[str, Market]:
        return self._markets

    @property
    def accounts(self) -> Mapping[str, Account]:
        return self._accounts

    def now_ms(self) -> int:
        return self._now()

    def account(self, name: str) -> Account:
        try:
            return self._accounts[name]
        except KeyError:
            raise ExchangeError(10001, f"unknown account {name!r}") from None

    def account_for_key(self, api_key: str) -> Account | None:
        return self._by_key.get(api_key)

    def market(self, symbol: str) -> Market:
        try:
            return self._markets[symbol]
        except KeyError:
            raise ExchangeError(10001, f"params error: symbol invalid {symbol}") from None

    # -- actions -----------------------------------------------------------------------------

    def apply(self, action: Action) -> ActionResult:
        match action:
            case PlaceOrder():
                return self.place_order(action)
            case AmendOrder():
                return self.amend_order(action)
            case CancelOrder():
                return self.cancel_order(action)
            case FillOrder():
                return self.fill_order(action)
            case SetPosition():
                return self.set_position(action)
            case SetPrice():
                self.set_price(action.symbol, action.price)
                return ActionResult()
            case SetWalletBalance():
                return self.set_wallet_balance(action)
            case Fault():
                raise TypeError("faults act on transport; the server applies them")

    def place_order(self, spec: PlaceOrder) -> ActionResult:
        account = self.account(spec.account)
        market = self.market(spec.symbol)
        idx = self._position_idx(account, spec.side, spec.position_idx)
        if spec.order_link_id and self._find_open(account, None, spec.order_link_id):
            raise ExchangeError(110072, "OrderLinkedID is duplicate")
        if spec.reduce_only:
            self._check_reduces(account, spec.symbol, idx, spec.side, spec.qty)
        order = self._new_order(
            account,
            symbol=spec.symbol,
            side=spec.side,
            order_type=spec.order_type,
            price=spec.price if spec.price is not None else market.mark_price,
            qty=spec.qty,
            time_in_force=spec.time_in_force,
            position_idx=idx,
            reduce_only=spec.reduce_only,
            order_link_id=spec.order_link_id,
        )
        account.open_orders[order.order_id] = order
        try:
            self._check_leverage_cap(account, market, order)
        except ExchangeError:
            del account.open_orders[order.order_id]
            raise
        self._position(account, spec.symbol, idx)
        return ActionResult(self._order_frames(account, order), order.order_id)

    def amend_order(self, spec: AmendOrder) -> ActionResult:
        account = self.account(spec.account)
        order = self._open_order(account, spec.order_id, spec.order_link_id)
        if spec.qty is not None and spec.qty <= order.cum_exec_qty:
            raise ExchangeError(10001, "params error: qty must exceed the filled quantity")
        before = (order.qty, order.price)
        order.qty = spec.qty if spec.qty is not None else order.qty
        order.price = spec.price if spec.price is not None else order.price
        try:
            self._check_leverage_cap(account, self.market(order.symbol), order)
        except ExchangeError:
            order.qty, order.price = before
            raise
        order.updated_time = self._now()
        return ActionResult(self._order_frames(account, order), order.order_id)

    def cancel_order(self, spec: CancelOrder) -> ActionResult:
        account = self.account(spec.account)
        order = self._open_order(account, spec.order_id, spec.order_link_id)
        order.status = "Cancelled"
        order.cancel_type = "CancelByUser"
        order.updated_time = self._now()
        self._close_order(account, order)
        return ActionResult(self._order_frames(account, order), order.order_id)

    def fill_order(self, spec: FillOrder) -> ActionResult:
        account = self.account(spec.account)
        order = self._open_order(account, spec.order_id, spec.order_link_id)
        market = self.market(order.symbol)
        qty = spec.qty if spec.qty is not None else order.leaves_qty
        if qty > order.leaves_qty:
            raise ExchangeError(10001, f"fill qty {qty} exceeds leaves qty {order.leaves_qty}")
        if spec.price is not None:
            price = spec.price
        else:
            price = order.price if order.order_type == "Limit" else market.mark_price
        is_maker = spec.is_maker if spec.is_maker is not None else order.order_type == "Limit"
        fee_rate = fee_rate_for(is_maker)
        fee = qty * price * fee_rate
        position = self._position(account, order.symbol, order.position_idx)
        closed, pnl = self._trade(account, position, order, qty, price)
        now = self._now()
        realised = pnl - fee
        position.cur_realised_pnl += realised
        position.cum_realised_pnl += realised
        account.wallet_balance += realised
        account.cum_realised_pnl += realised
        market.trade_seq += 1
        position.seq = market.trade_seq
        position.updated_time = now
        order.cum_exec_qty += qty
        order.cum_exec_value += qty * price
        order.cum_exec_fee += fee
        order.closed_pnl += pnl
        order.status = "Filled" if order.cum_exec_qty == order.qty else "PartiallyFilled"
        order.updated_time = now
        exec_id = self._uuid("exec")
        execution = execution_row(
            order=order,
            exec_id=exec_id,
            exec_price=price,
            exec_qty=qty,
            exec_fee=fee,
            fee_rate=fee_rate,
            is_maker=is_maker,
            closed_size=closed,
            exec_pnl=pnl,
            mark_price=market.mark_price,
            exec_time=now,
            seq=market.trade_seq,
        )
        account.executions.append(rest_execution_row(execution))
        if order.status == "Filled":
            self._close_order(account, order)
        frames = [
            self._frame(account, "execution", [execution]),
            self._frame(account, "order", [order_row(order, ws=True)]),
            self._position_frame(account, position),
            self._wallet_frame(account),
        ]
        return ActionResult(frames, order.order_id)

    def set_position(self, spec: SetPosition) -> ActionResult:
        account = self.account(spec.account)
        self.market(spec.symbol)
        if account.hedge and spec.position_idx is None:
            idx = 2 if spec.side == "Sell" else 1
        else:
            idx = self._position_idx(account, "Buy", spec.position_idx)
        position = self._position(account, spec.symbol, idx)
        traded = any(v is not None for v in (spec.side, spec.size, spec.entry_price))
        if spec.size is not None:
            position.size = spec.size
        if spec.side is not None:
            position.side = spec.side
        if spec.entry_price is not None:
            position.entry_price = spec.entry_price
        if position.size == 0:
            position.side, position.entry_price = "", ZERO
        elif position.side not in ("Buy", "Sell") or position.entry_price <= 0:
            raise ExchangeError(10001, "params error: an open position needs side and entry")
        elif account.hedge and position.side != ("Buy" if idx == 1 else "Sell"):
            raise ExchangeError(10001, "params error: hedge idx 1 is Buy, 2 is Sell")
        if spec.leverage is not None:
            position.leverage = spec.leverage
        if spec.is_reduce_only is not None:
            position.is_reduce_only = spec.is_reduce_only
        if spec.mmr_sys_updated_time is not None:
            position.mmr_sys_updated_time = spec.mmr_sys_updated_time
        if spec.leverage_sys_updated_time is not None:
            position.leverage_sys_updated_time = spec.leverage_sys_updated_time
        if traded:
            market = self._markets[spec.symbol]
            market.trade_seq += 1
            position.seq = market.trade_seq
        # Settings-only changes keep the last trade's seq, as Bybit does (docs/bybit-v5.md §3.8).
        position.updated_time = self._now()
        frames = [self._position_frame(account, position)]
        if traded:
            frames.append(self._wallet_frame(account))
        return ActionResult(frames)

    def set_wallet_balance(self, spec: SetWalletBalance) -> ActionResult:
        account = self.account(spec.account)
        account.wallet_balance = spec.balance
        return ActionResult([self._wallet_frame(account)])

    def set_price(self, symbol: str, price: Decimal | None) -> None:
        """Pin the mark price (None releases it to the price path)."""
        market = self.market(symbol)
        if price is None:
            market.pinned = False
            return
        market.pinned = True
        self._move_mark(market, price)

    def tick_mark_price(self, symbol: str, price: Decimal) -> None:
        """A price-path tick. No private frame: Bybit's position and wallet streams do not
        push on mark moves alone (docs/bybit-v5.md §3.5, §7)."""
        market = self.market(symbol)
        if market.pinned:
            return
        quantized = (price / market.tick_size).to_integral_value() * market.tick_size
        self._move_mark(market, max(quantized, market.tick_size))

    # -- views -------------------------------------------------------------------------------

    def position_rows(
        self, account: Account, *, symbol: str | None = None, ws: bool = False
    ) -> list[Row]:
        """REST semantics: with a symbol, that symbol's rows even when flat; without, only
        open positions. Sorted by symbol then positionIdx."""
        if symbol is not None:
            self.market(symbol)
            idxs = (1, 2) if account.hedge else (0,)
            positions = [
                account.positions.get((symbol, i)) or self._flat(account, symbol, i) for i in idxs
            ]
        else:
            positions = [p for p in account.positions.values() if p.is_open]
        positions.sort(key=lambda p: (p.symbol, p.position_idx))
        views = position_views(account, self._markets)
        out = []
        for p in positions:
            view = views.get((p.symbol, p.position_idx))
            if view is None:
                view = self._flat_view(account, p)
            out.append(position_row(view, ws=ws))
        return out

    def order_rows(self, account: Account, *, open_only: bool = True) -> list[Row]:
        """Newest first, like /v5/order/realtime (closed: the 500 most recently closed)."""
        if open_only:
            orders = list(account.open_orders.values())
        else:
            orders = list(itertools.islice(reversed(account.closed_orders), CLOSED_ORDERS_LISTED))
        orders.sort(key=lambda o: (o.created_time, o.order_id), reverse=True)
        return [order_row(o, ws=False) for o in orders]

    def execution_rows(
        self,
        account: Account,
        *,
        start_ms: int,
        end_ms: int,
        symbol: str | None = None,
        order_id: str | None = None,
        exec_type: str | None = None,
    ) -> list[Row]:
        """Executions with `start_ms <= execTime <= end_ms`, newest first (execTime, then
        execId, both descending), like /v5/execution/list."""
        rows = [
            r
            for r in account.executions
            if start_ms <= int(str(r["execTime"])) <= end_ms
            and symbol in (None, r["symbol"])
            and order_id in (None, r["orderId"])
            and exec_type in (None, r["execType"])
        ]
        rows.sort(key=lambda r: (int(str(r["execTime"])), str(r["execId"])), reverse=True)
        return rows

    def wallet_row(self, account: Account) -> Row:
        return wallet_row(wallet_view(account, self._markets), account.wallet_account_type)

    def ticker_row(self, symbol: str) -> Row:
        return ticker_row(self.market(symbol), self._now())

    def risk_limit_rows(self, symbol: str) -> list[Row]:
        return risk_limit_rows(self.market(symbol))

    def risk_rows(self, account: Account) -> list[Row]:
        """Per-symbol tier standing: what the risk processor should conclude."""
        out = []
        for market in self._markets.values():
            risk = symbol_risk(account, market)
            touched = any(sym == market.symbol for sym, _ in account.positions) or any(
                o.symbol == market.symbol for o in account.open_orders.values()
            )
            if risk.effective_value == 0 and not touched:
                continue
            out.append(
                {
                    "symbol": market.symbol,
                    "effectiveValue": fmt(risk.effective_value),
                    "riskId": risk.tier.id,
                    "riskLimitValue": fmt(risk.tier.risk_limit_value),
                    "leverage": fmt(risk.leverage),
                    "maxPositionValue": fmt(risk.max_value_at_leverage),
                    "exceedsLeverageCap": risk.exceeds_leverage_cap,
                }
            )
        return out

    def ground_truth(self, account: Account) -> Row:
        return {
            "account": account.name,
            "uid": account.uid,
            "isMaster": account.is_master,
            "positionMode": "hedge" if account.hedge else "one_way",
            "accountType": account.account_type,
            "positions": self.position_rows(account),
            "orders": self.order_rows(account),
            "wallet": self.wallet_row(account),
            "risk": self.risk_rows(account),
            "riskEvents": [e for e in self.risk_events if e["account"] == account.name],
            # Every fill in the order made (the most recent 50,000), so a test can check each
            # one reached the pipeline, including those made while the socket was down.
            "executions": [r["execId"] for r in account.executions],
            # Final states, in closing order (the most recent 10,000).
            "closedOrders": [
                {
                    "orderId": o.order_id,
                    "orderLinkId": o.order_link_id,
                    "symbol": o.symbol,
                    "orderStatus": o.status,
                    "cumExecQty": fmt(o.cum_exec_qty),
                    "updatedTime": str(o.updated_time),
                }
                for o in account.closed_orders
            ],
        }

    # -- internals ---------------------------------------------------------------------------

    def _uuid(self, kind: str) -> str:
        self._counter += 1
        return str(uuid.uuid5(_ID_NAMESPACE, f"{self.run_id}:{kind}:{self._counter}"))

    def _frame(self, account: Account, topic: str, rows: list[Row]) -> PrivateFrame:
        self._counter += 1
        return PrivateFrame(
            id=f"{self.run_id}-{self._counter}",
            account=account.name,
            topic=topic,
            creation_time=self._now(),
            data=tuple(rows),
        )

    def _position_frame(self, account: Account, position: Position) -> PrivateFrame:
        view = position_views(account, self._markets)[(position.symbol, position.position_idx)]
        return self._frame(account, "position", [position_row(view, ws=True)])

    def _wallet_frame(self, account: Account) -> PrivateFrame:
        return self._frame(account, "wallet", [self.wallet_row(account)])

    def _order_frames(self, account: Account, order: Order) -> list[PrivateFrame]:
        # Bybit pushes `position` on every order create/amend/cancel, changed or not.
        position = self._position(account, order.symbol, order.position_idx)
        return [
            self._frame(account, "order", [order_row(order, ws=True)]),
            self._position_frame(account, position),
        ]

    def _new_order(
        self,
        account: Account,
        *,
        symbol: str,
        side: str,
        order_type: str,
        price: Decimal,
        qty: Decimal,
        time_in_force: str,
        position_idx: int,
        reduce_only: bool,
        order_link_id: str,
    ) -> Order:
        now = self._now()
        return Order(
            order_id=self._uuid("order"),
            order_link_id=order_link_id,
            symbol=symbol,
            side=side,
            order_type=order_type,
            price=price,
            qty=qty,
            time_in_force=time_in_force,
            position_idx=position_idx,
            reduce_only=reduce_only,
            created_time=now,
            updated_time=now,
            last_price_on_created=self._markets[symbol].mark_price,
        )

    def _position_idx(self, account: Account, side: str, given: int | None) -> int:
        mode: PositionMode = "hedge" if account.hedge else "one_way"
        try:
            return resolve_position_idx(mode, "Buy" if side == "Buy" else "Sell", given)
        except ValueError:
            raise ExchangeError(10001, "position idx not match position mode") from None

    def _flat(self, account: Account, symbol: str, idx: int) -> Position:
        now = self._now()
        return Position(
            symbol=symbol,
            position_idx=idx,
            leverage=leverage_for(account, symbol, idx),
            created_time=now,
            updated_time=now,
        )

    def _flat_view(self, account: Account, position: Position) -> PositionView:
        # A flat position not yet stored: value it as the tier its orders would select.
        market = self._markets[position.symbol]
        return PositionView(
            position=position,
            tier=symbol_risk(account, market).tier,
            mark_price=market.mark_price,
            value=ZERO,
            im=ZERO,
            mm=ZERO,
            upl=ZERO,
            liq_price=None,
        )

    def _position(self, account: Account, symbol: str, idx: int) -> Position:
        key = (symbol, idx)
        if key not in account.positions:
            account.positions[key] = self._flat(account, symbol, idx)
        return account.positions[key]

    def _find_open(
        self, account: Account, order_id: str | None, link_id: str | None
    ) -> Order | None:
        if order_id:
            return account.open_orders.get(order_id)
        return next(
            (o for o in account.open_orders.values() if link_id and o.order_link_id == link_id),
            None,
        )

    def _open_order(self, account: Account, order_id: str | None, link_id: str | None) -> Order:
        order = self._find_open(account, order_id, link_id)
        if order is None:
            raise ExchangeError(110001, "order not exists or too late to cancel")
        return order

    def _close_order(self, account: Account, order: Order) -> None:
        account.open_orders.pop(order.order_id, None)
        account.closed_orders.append(order)

    def _check_reduces(
        self, account: Account, symbol: str, idx: int, side: str, qty: Decimal
    ) -> None:
        position = account.positions.get((symbol, idx))
        if position is None or not position.is_open:
            raise ExchangeError(110017, "current position is zero, cannot fix reduce-only qty")
        if position.side == side:
            raise ExchangeError(110017, "reduce-only order has same side with current position")

    def _check_leverage_cap(self, account: Account, market: Market, order: Order) -> None:
        if order.reduce_only:
            return
        risk = symbol_risk(account, market)
        if not risk.exceeds_leverage_cap:
            return
        value = risk.effective_value
        fitting = [t.max_leverage for t in market.tiers if t.risk_limit_value >= value]
        lower_to = max(fitting) if fitting else market.tiers[-1].max_leverage
        message = (
            "The position may exceed the maximum limit. Please lower the leverage to "
            f"{fmt(lower_to)}x or below to increase the maximum position limit."
        )
        event: Row = {
            "time": self._now(),
            "account": account.name,
            "symbol": market.symbol,
            "orderId": order.order_id,
            "orderLinkId": order.order_link_id,
            "retCode": 110090,
            "retMsg": message,
            "effectiveValue": fmt(risk.effective_value),
            "maxPositionValue": fmt(risk.max_value_at_leverage),
            "leverage": fmt(risk.leverage),
            "rejected": self.enforcement == "reject",
        }
        self.risk_events.append(event)
        del self.risk_events[:-_RISK_EVENTS_KEPT]
        if self.enforcement == "reject":
            raise ExchangeError(110090, message)

    def _trade(
        self, account: Account, position: Position, order: Order, qty: Decimal, price: Decimal
    ) -> tuple[Decimal, Decimal]:
        """Apply a fill to a position; returns (closed size, gross realised PnL)."""
        if not position.is_open:
            # A new holding starts a new curRealisedPnl session.
            position.cur_realised_pnl = ZERO
            position.created_time = self._now()
        if not position.is_open or position.side == order.side:
            if account.hedge and position.position_idx != (1 if order.side == "Buy" else 2):
                raise ExchangeError(110017, "close order on an empty hedge side")
            new_size = position.size + qty
            position.entry_price = (position.size * position.entry_price + qty * price) / new_size
            position.size = new_size
            position.side = order.side
            return ZERO, ZERO
        closed = min(qty, position.size)
        remainder = qty - closed
        if remainder > 0 and (order.reduce_only or account.hedge):
            raise ExchangeError(110017, "fill would reverse a reduce-only or hedge position")
        direction = 1 if position.side == "Buy" else -1
        pnl = (price - position.entry_price) * closed * direction
        position.size -= closed
        if position.size == 0:
            position.side, position.entry_price = "", ZERO
        if remainder > 0:
            position.side, position.size, position.entry_price = order.side, remainder, price
            position.cur_realised_pnl = ZERO
            position.created_time = self._now()
        return closed, pnl

    def _move_mark(self, market: Market, price: Decimal) -> None:
        old = market.mark_price
        if price > old:
            market.tick_direction = "PlusTick"
        elif price < old:
            market.tick_direction = "MinusTick"
        elif market.tick_direction in ("PlusTick", "MinusTick"):
            market.tick_direction = "Zero" + market.tick_direction
        market.mark_price = price
        market.high_24h = max(market.high_24h, price)
        market.low_24h = min(market.low_24h, price)
        if price != old:
            market.ticker_cs += 1
