"""Transport faults for exercising the ingestor: pure bookkeeping, the server acts on it.

Keys are account names; "*" stands for every account.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bybit_sim.scenario import Fault

ANY = "*"


@dataclass
class FaultState:
    # account -> silenced until (ms), or None for "until cleared"
    silenced: dict[str, int | None] = field(default_factory=dict)
    duplicate: dict[str, int] = field(default_factory=dict)
    reorder: dict[str, int] = field(default_factory=dict)
    auth_fail: dict[str, int] = field(default_factory=dict)
    # account -> (remaining refusals, omit the reset header)
    rate_limit: dict[str, tuple[int, bool]] = field(default_factory=dict)

    def arm(self, fault: Fault, now_ms: int) -> None:
        """Record a fault; `disconnect` needs no state and is ignored here."""
        who = fault.account or ANY
        match fault.kind:
            case "silence":
                until = None
                if fault.duration_s is not None:
                    until = now_ms + int(fault.duration_s * 1000)
                self.silenced[who] = until
            case "duplicate_next":
                self.duplicate[who] = fault.count
            case "reorder_next":
                self.reorder[who] = fault.count
            case "auth_fail":
                self.auth_fail[who] = fault.count
            case "rate_limit":
                self.rate_limit[who] = (fault.count, fault.omit_reset_header)
            case "clear":
                self.clear(fault.account)
            case "disconnect":
                pass

    def clear(self, account: str | None) -> None:
        for table in (self.silenced, self.duplicate, self.reorder, self.auth_fail):
            _drop(table, account)
        _drop(self.rate_limit, account)

    def is_silenced(self, account: str, now_ms: int) -> bool:
        for who in (account, ANY):
            if who in self.silenced:
                until = self.silenced[who]
                if until is None or now_ms < until:
                    return True
                del self.silenced[who]
        return False

    def _take(self, table: dict[str, int], account: str) -> bool:
        for who in (account, ANY):
            left = table.get(who, 0)
            if left > 0:
                if left == 1:
                    del table[who]
                else:
                    table[who] = left - 1
                return True
        return False

    def take_duplicate(self, account: str) -> bool:
        return self._take(self.duplicate, account)

    def take_auth_fail(self, account: str) -> bool:
        return self._take(self.auth_fail, account)

    def take_reorder_window(self, account: str) -> int:
        """Size of the reversed batch to start for this account (0: deliver in order)."""
        for who in (account, ANY):
            if who in self.reorder:
                return self.reorder.pop(who)
        return 0

    def take_rate_limit(self, account: str) -> tuple[bool, bool]:
        """(refuse this call, omit the reset header)."""
        for who in (account, ANY):
            left, omit = self.rate_limit.get(who, (0, False))
            if left > 0:
                if left == 1:
                    del self.rate_limit[who]
                else:
                    self.rate_limit[who] = (left - 1, omit)
                return True, omit
        return False, False

    def snapshot(self) -> dict[str, object]:
        return {
            "silenced": dict(self.silenced),
            "duplicate_next": dict(self.duplicate),
            "reorder_next": dict(self.reorder),
            "auth_fail": dict(self.auth_fail),
            "rate_limit": {k: v[0] for k, v in self.rate_limit.items()},
        }


def _drop(table: dict[str, Any], account: str | None) -> None:
    if account is None:
        table.clear()
    else:
        table.pop(account, None)
