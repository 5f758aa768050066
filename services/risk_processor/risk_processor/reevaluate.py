"""Which accounts to re-evaluate without an account event, and when.

Three things change an account's risk without a record of its own: its symbols' mark
prices, their tier tables (both global, written by whichever worker reads them), and time
(a platform change's grace period ends at a deadline). ``Reevaluator`` keeps, per account,
the market fingerprint of its last evaluation and its next deadline; the timer asks it
which accounts are due and sends each a request on the internal re-evaluate topic, so the
request lands in the partition (and agent) that owns the account. At most one request
per account per interval, whatever the tick or mark rate. Pure bookkeeping with an
injected clock; the caller sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal

from risk_processor import state
from risk_processor.outputs import Cause
from riskwatch_common.clock import from_ms

Monotonic = Callable[[], float]
Lookup = Callable[[str], tuple[state.MarkEntry | None, state.TierEntry | None]]

# (symbol, mark price, tier-table version) of every symbol an account holds.
Fingerprint = tuple[tuple[str, Decimal | None, str | None], ...]


def fingerprint(symbols: Iterable[str], market: Lookup) -> Fingerprint:
    out = []
    for symbol in sorted(symbols):
        mark, tiers = market(symbol)
        out.append(
            (
                symbol,
                mark.price if mark is not None else None,
                tiers.version if tiers is not None else None,
            )
        )
    return tuple(out)


def next_deadline(risk: state.RiskBook) -> datetime | None:
    """The earliest time-based rule deadline in ``risk`` (a grace period's end)."""
    deadlines = [p.deadline for p in risk.pending.values()]
    return min(deadlines) if deadlines else None


class Reevaluator:
    """Dirty accounts, and when each was last requested."""

    def __init__(self, interval_s: float, *, monotonic: Monotonic = time.monotonic) -> None:
        self.interval_s = interval_s
        self._monotonic = monotonic
        self.fingerprints: dict[str, Fingerprint] = {}
        self._holders: dict[str, set[str]] = {}
        self._deadlines: dict[str, datetime] = {}
        self._requested: dict[str, float] = {}
        self._dirty: dict[str, str] = {}

    def evaluated(self, account: str, print_: Fingerprint, risk: state.RiskBook) -> None:
        """``account`` was just evaluated on the market ``print_``."""
        self.fingerprints[account] = print_
        for symbol, _, _ in print_:
            self._holders.setdefault(symbol, set()).add(account)
        deadline = next_deadline(risk)
        if deadline is None:
            self._deadlines.pop(account, None)
        else:
            self._deadlines[account] = deadline
        self._dirty.pop(account, None)

    def unchanged(self, account: str, print_: Fingerprint) -> bool:
        return self.fingerprints.get(account) == print_

    def moved(self, symbols: Iterable[str], reason: str) -> None:
        """Market data of ``symbols`` changed: their holders are dirty."""
        for symbol in symbols:
            for account in self._holders.get(symbol, ()):
                self._dirty.setdefault(account, reason)

    def check(self, accounts: Iterable[str], market: Lookup, now: datetime) -> None:
        """The timer's sweep over the accounts this worker owns: dirty when the market
        moved since the last evaluation (also what another worker wrote to the global
        tables), when never evaluated by this process, or when a deadline has passed."""
        for account in accounts:
            if account in self._dirty:
                continue
            deadline = self._deadlines.get(account)
            if deadline is not None and now >= deadline:
                self._dirty[account] = "deadline"
                continue
            held = self.fingerprints.get(account)
            if held is None or fingerprint([s for s, _, _ in held], market) != held:
                self._dirty[account] = "timer"

    def due(self, *, min_age: float | None = None) -> list[tuple[str, str]]:
        """Remove and return (account, reason) of every dirty account last requested
        ``min_age`` (default: the interval) or more seconds ago."""
        age = self.interval_s if min_age is None else min_age
        now = self._monotonic()
        out = []
        for account in sorted(self._dirty):
            last = self._requested.get(account)
            if last is not None and now - last < age:
                continue
            self._requested[account] = now
            out.append((account, self._dirty.pop(account)))
        return out

    def market_cause(
        self, account: str, symbols: Iterable[str], now: datetime, market: Lookup
    ) -> Cause:
        """The newest market record among the symbols that moved since the last evaluation."""
        before = {s: (m, v) for s, m, v in self.fingerprints.get(account, ())}
        best: tuple[int, str] | None = None
        for symbol in symbols:
            mark, tiers = market(symbol)
            held = before.get(symbol)
            moves: list[tuple[int, str]] = []
            if mark is not None and (held is None or held[0] != mark.price):
                moves.append((mark.produced_ms, mark.correlation_id))
            if tiers is not None and (held is None or held[1] != tiers.version):
                moves.append((tiers.produced_ms, tiers.correlation_id))
            for move in moves:
                if best is None or move[0] > best[0]:
                    best = move
        if best is None:
            return Cause(f"reevaluate-{account}", now, None)
        return Cause(best[1], from_ms(best[0]), from_ms(best[0]))

    def reset(self) -> None:
        """After a rebalance: accounts may have moved to another worker."""
        self.fingerprints.clear()
        self._holders.clear()
        self._deadlines.clear()
