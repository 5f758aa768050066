"""The accounts agent: account events and re-evaluate requests, keyed by account.

Per batch: apply events, evaluate each touched account once, publish alert transitions
(kept in the risk book's outbox), write each changed table once, stage the snapshot, and
forward the batch's pipeline heartbeats once everything before them was handled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from risk_processor import metrics, state
from risk_processor.agents.context import EVENT_KINDS, Context
from risk_processor.engine import link as link_rule
from risk_processor.evaluate import AccountState, evaluate_account
from risk_processor.outputs import Cause
from risk_processor.reevaluate import fingerprint
from riskwatch_common.contracts import (
    AccountStatusChanged,
    ExecutionReported,
    OrderUpdated,
    PipelineHeartbeat,
    PositionUpdated,
    WalletUpdated,
    is_reserved_account,
)
from riskwatch_common.topics import ACCOUNT_EVENTS, HEARTBEATS, REEVALUATE

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Work:
    """One account's state while a batch is being applied to it.

    Table values are never mutated: the first change in a batch copies the value, later
    changes in the same batch mutate that private copy, and the copy is assigned back once.
    """

    account: str
    partition: int
    positions: state.Positions
    orders: state.OrderBook
    wallet: state.WalletEntry | None
    risk: state.RiskBook
    loaded_risk: state.RiskBook
    dirty: set[str] = field(default_factory=set)
    copied: set[str] = field(default_factory=set)
    cause: Cause | None = None
    reevaluate: bool = False
    # A time-based rule is due: evaluate even when nothing moved.
    forced: bool = False

    def positions_for_update(self) -> dict[str, state.PositionEntry]:
        if "positions" not in self.copied:
            self.positions = dict(self.positions)
            self.copied.add("positions")
        return self.positions  # type: ignore[return-value]

    def orders_for_update(self) -> state.OrderBook:
        if "orders" not in self.copied:
            self.orders = self.orders.copy()
            self.copied.add("orders")
        return self.orders

    def account_state(self) -> AccountState:
        return AccountState(self.account, self.positions, self.orders, self.wallet, self.risk)


def apply(work: Work, event: Any) -> bool:
    """Apply one account event to ``work``; False when it changed nothing."""
    if isinstance(event, PositionUpdated):
        if not state.apply_position(work.positions_for_update(), event):
            return False
        work.dirty.add("positions")
    elif isinstance(event, OrderUpdated):
        if not state.apply_order(work.orders_for_update(), event):
            return False
        work.dirty.add("orders")
    elif isinstance(event, WalletUpdated):
        wallet = state.apply_wallet(work.wallet, event)
        if wallet is None:
            return False
        work.wallet = wallet
        work.dirty.add("wallets")
    elif isinstance(event, AccountStatusChanged):
        # The link state lives in the risk book (it survives restarts) and the account is
        # evaluated even when no figure moved: ``account_link`` is raised or resolved now.
        link = link_rule.step(
            work.risk.link,
            event.status.value,
            event.occurred_at,
            reason=event.reason,
            down_since=event.down_since,
            key_expires_at=event.key_expires_at,
        )
        if link == work.risk.link:
            return True
        work.risk = replace(work.risk, link=link)
        work.dirty.add("risk")
        work.forced = True
    else:
        # Executions are followed by the position and order updates they cause.
        return isinstance(event, ExecutionReported)
    return True


class AccountsAgent:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Labelled children looked up once: ``labels()`` costs microseconds per call.
        self._processed = {k: metrics.EVENTS_PROCESSED.labels(k) for k in EVENT_KINDS}
        self._stale = {k: metrics.STALE_DROPPED.labels(k) for k in EVENT_KINDS}
        self._eval_seconds = metrics.EVALUATION_SECONDS.labels("account")
        self._reevaluate_topic = ctx.topic(REEVALUATE)
        self._heartbeats_topic = ctx.topic(HEARTBEATS)

    def _load(self, account: str, partition: int) -> Work:
        t = self.ctx.tables
        risk = t.risk.get(account) or state.EMPTY_RISK
        return Work(
            account=account,
            partition=partition,
            positions=t.positions.get(account) or {},
            orders=t.orders.get(account) or state.EMPTY_ORDERS,
            wallet=t.wallets.get(account),
            risk=risk,
            loaded_risk=risk,
        )

    async def __call__(self, events: list[Any]) -> None:
        ctx = self.ctx
        work: dict[str, Work] = {}
        heartbeats: list[Any] = []
        ctx.records_handled += len(events)
        processed = self._processed
        stale = self._stale
        newest: datetime | None = None
        for ev in events:
            message = ev.message
            if message.topic == self._reevaluate_topic:
                try:
                    request = REEVALUATE.decode(message.value or b"")
                    if is_reserved_account(request.account):
                        raise ValueError(f"account name {request.account!r} is reserved")
                except (ValidationError, ValueError) as exc:
                    await ctx.dead_letter(REEVALUATE, message, exc, "decode")
                    continue
                w = work.get(request.account)
                if w is None:
                    w = work[request.account] = self._load(request.account, message.partition)
                w.reevaluate = True
                w.forced = w.forced or request.reason == "deadline"
                continue
            try:
                event = ACCOUNT_EVENTS.decode(message.value or b"")
            except (ValidationError, ValueError) as exc:
                await ctx.dead_letter(ACCOUNT_EVENTS, message, exc, "decode")
                continue
            kind = event.event_type
            processed[kind].inc()
            if message.key != event.account.encode():
                # The partition (and the table partition) follows the key: a record keyed
                # by another account would put this account's state in the wrong place.
                error = ValueError(f"record key {message.key!r} is not account {event.account!r}")
                await ctx.dead_letter(ACCOUNT_EVENTS, message, error, "key")
                continue
            if is_reserved_account(event.account):
                # an account named 'portfolio' would overwrite the portfolio's state
                error = ValueError(f"account name {event.account!r} is reserved by the processor")
                await ctx.dead_letter(ACCOUNT_EVENTS, message, error, "reserved")
                continue
            if isinstance(event, PipelineHeartbeat):
                # Forwarded unchanged once everything before it in the batch is handled.
                heartbeats.append(message)
                continue
            if ctx.dedup.seen(event.event_id):
                stale[kind].inc()
                continue
            w = work.get(event.account)
            if w is None:
                w = work[event.account] = self._load(event.account, message.partition)
            try:
                changed = apply(w, event)
            except (ValueError, ArithmeticError) as exc:
                await ctx.dead_letter(ACCOUNT_EVENTS, message, exc, "handle")
                continue
            if not changed:
                stale[kind].inc()
                continue
            if not isinstance(event, ExecutionReported):
                w.cause = Cause(event.correlation_id, event.occurred_at, event.produced_at)
            newest = event.produced_at
        if work:
            await self._evaluate(work, newest)
        for message in heartbeats:
            await ctx.app.producer.send(
                self._heartbeats_topic, message.key, message.value, None, None, None
            )
            metrics.HEARTBEATS_FORWARDED.inc()

    async def _evaluate(self, work: dict[str, Work], newest: datetime | None) -> None:
        ctx = self.ctx
        outbox = ctx.outbox
        reevaluator = ctx.reevaluator
        now = ctx.clock()
        if newest is not None:
            metrics.INPUT_LAG_SECONDS.observe(max((now - newest).total_seconds(), 0.0))
        for w in work.values():
            if w.risk.outbox:
                w.risk = await outbox.recover(w.partition, w.risk)
        market = ctx.market()
        for w in work.values():
            symbols = w.account_state().symbols()
            print_ = fingerprint(symbols, market.get)
            unchanged = reevaluator.unchanged(w.account, print_)
            if not w.dirty and not w.forced and (not w.reevaluate or unchanged):
                continue
            if not symbols and w.wallet is None and w.risk.link is None:
                continue
            cause = w.cause or reevaluator.market_cause(w.account, symbols, now, market.get)
            started = time.perf_counter()
            try:
                result = evaluate_account(
                    w.account_state(),
                    marks=market.marks(symbols),
                    tiers=market.tiers(symbols),
                    config=ctx.config,
                    now=now,
                    cause=cause,
                    source=ctx.source,
                    previous=ctx.exposures.get(w.account),
                )
            except Exception:
                metrics.EVALUATION_FAILURES.labels("account").inc()
                log.exception("account evaluation failed", extra={"account": w.account})
                continue
            self._eval_seconds.observe(time.perf_counter() - started)
            ctx.exposures[w.account] = result.exposure
            metrics.record_exposure(result.exposure, now.timestamp())
            reevaluator.evaluated(w.account, print_, result.risk)
            if result.risk_id_mismatches:
                metrics.RISK_ID_DISAGREEMENTS.inc(result.risk_id_mismatches)
            if result.platform_changes:
                metrics.PLATFORM_CHANGES.inc(result.platform_changes)
            # Alerts go out now, in this batch; the risk book written below carries them in
            # its outbox, so no wait for the broker's acknowledgement is needed here.
            w.risk = await outbox.publish(
                w.partition, outbox.settle(result.risk), result.alerts, cause.produced_at
            )
            if w.risk != w.loaded_risk:
                w.dirty.add("risk")
            ctx.coalescer.stage(w.account, w.partition, result.exposure, w.risk, cause, now)
        t = ctx.tables
        put = ctx.writer.put
        for w in work.values():
            if "positions" in w.dirty:
                await put(t.positions, w.partition, w.account, w.positions)
            if "orders" in w.dirty:
                await put(t.orders, w.partition, w.account, w.orders)
            if "wallets" in w.dirty:
                await put(t.wallets, w.partition, w.account, w.wallet)
            if "risk" in w.dirty:
                await put(t.risk, w.partition, w.account, w.risk)
        await ctx.emit_due()
        metrics.ACCOUNTS.set(len(reevaluator.fingerprints))
