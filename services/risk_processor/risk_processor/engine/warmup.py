"""Portfolio warm-up: portfolio rules judge all accounts or say which are missing.

A portfolio alert raised while only some accounts are loaded states a wrong total (net
exposure 49,586 USD for a portfolio whose net is 1.41 M). So portfolio rules wait until
every expected account completed its first resync, or until ``timeout`` after the first
account was seen; after a timeout they run on what is there and their alerts say which
accounts are missing.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Readiness:
    """``ready``: portfolio rules may run; ``missing``: expected accounts not loaded yet
    (non-empty when ready only after ``timed_out``)."""

    ready: bool
    missing: tuple[str, ...] = ()
    timed_out: bool = False

    def note(self) -> str:
        """What a portfolio alert must say when it judges part of the portfolio."""
        if not self.missing:
            return ""
        names = ", ".join(self.missing)
        return f" (warm-up timed out: {len(self.missing)} account(s) not loaded yet: {names})"


READY = Readiness(True)


def portfolio_readiness(
    expected: Set[str],
    loaded: Set[str],
    first_seen: datetime | None,
    now: datetime,
    timeout: timedelta,
) -> Readiness:
    """Whether portfolio rules may run: every ``expected`` account is ``loaded`` (completed
    its first resync), or ``timeout`` passed since the first account was seen."""
    missing = tuple(sorted(expected - loaded))
    if not missing:
        return READY
    if first_seen is not None and now - first_seen >= timeout:
        return Readiness(True, missing, True)
    return Readiness(False, missing)
