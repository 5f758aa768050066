"""AI spend in tokens and USD, and the daily cap.

The cap is enforced before each call: a call is admitted only if the day's spend plus what
is already reserved by calls in flight plus this call's worst case (estimated prompt tokens
and the full ``max_tokens`` completion) stays within the budget, so concurrent calls can't
overshoot it. After the call the reservation is replaced by the real cost from ``usage``.
The day's spend is restored at startup from the persisted record (``budget_store``), so a
restart does not reset the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from riskwatch_common.clock import Clock

MILLION = Decimal(1_000_000)
_USD_PLACES = Decimal("0.000000001")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal


def cost_usd(prompt_tokens: int, completion_tokens: int, price: ModelPrice) -> Decimal:
    """Exact cost of a call, rounded to a billionth of a dollar."""
    raw = (
        Decimal(prompt_tokens) * price.input_per_mtok
        + Decimal(completion_tokens) * price.output_per_mtok
    ) / MILLION
    return raw.quantize(_USD_PLACES)


def estimate_prompt_tokens(characters: int) -> int:
    """An upper-side guess of prompt tokens: about two characters per token (JSON, digits)."""
    return characters // 2 + 16


@dataclass(slots=True)
class Reservation:
    day: date
    amount: Decimal
    settled: bool = False


class SpendLedger:
    """Today's (UTC) spend and reservations against a daily budget."""

    def __init__(self, budget_usd: Decimal, clock: Clock) -> None:
        self.budget_usd = budget_usd
        self._clock = clock
        self._day = clock().date()
        self._spent = Decimal(0)
        self._reserved = Decimal(0)
        self.calls = 0
        self.alerted = False

    def _roll(self) -> None:
        today = self._clock().date()
        if today != self._day:
            self._day, self._spent, self._reserved = today, Decimal(0), Decimal(0)
            self.calls, self.alerted = 0, False

    @property
    def day(self) -> date:
        self._roll()
        return self._day

    def restore(self, day: date, spent_usd: Decimal, calls: int, alerted: bool) -> None:
        """Take over a persisted day's spend; a record of another day is ignored."""
        self._roll()
        if day == self._day:
            self._spent, self.calls, self.alerted = spent_usd, calls, alerted

    @property
    def spent_today(self) -> Decimal:
        self._roll()
        return self._spent

    def try_reserve(self, worst_case_usd: Decimal) -> Reservation | None:
        """Reserve ``worst_case_usd`` if it fits today's remaining budget, else None."""
        self._roll()
        if self._spent + self._reserved + worst_case_usd > self.budget_usd:
            return None
        self._reserved += worst_case_usd
        return Reservation(self._day, worst_case_usd)

    def settle(self, reservation: Reservation, actual_usd: Decimal) -> None:
        """Replace a reservation with what the call really cost (0 if it failed)."""
        if reservation.settled:
            return
        reservation.settled = True
        self._roll()
        if reservation.day == self._day:
            self._reserved -= reservation.amount
        # a call reserved before midnight and finished after it counts on the new day
        self._spent += actual_usd
        if actual_usd > 0:
            self.calls += 1
