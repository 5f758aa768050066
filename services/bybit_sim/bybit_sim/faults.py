"""Transport faults for exercising the ingestor: pure bookkeeping, the server acts on it.

Keys are account names; "*" stands for every account.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from bybit_sim.scenario import Fault

ANY = "*"
# Bybit's IP ban lasts "at least 10 minutes" (docs/bybit-v5.md §1.5).
DEFAULT_IP_BAN_S = 600

MalformedVariant = Literal["truncated", "unknown_topic", "missing_field"]
# malformed_next cycles through these, one per corrupted frame.
MALFORMED_VARIANTS: tuple[MalformedVariant, ...] = ("truncated", "unknown_topic", "missing_field")
# A topic no Bybit stream has, so no client can mistake it for one it handles.
UNKNOWN_TOPIC = "sim.unknown"
# Fields dropped from every row by the missing_field variant: each row's identity, without
# which a client can neither apply nor deduplicate the row.
_REQUIRED_FIELDS = {
    "position": ("symbol", "size"),
    "order": ("orderId", "orderStatus"),
    "execution": ("execId", "execQty"),
    "wallet": ("totalWalletBalance", "accountMMRate"),
}


@dataclass
class FaultState:
    # account -> silenced until (ms), or None for "until cleared"
    silenced: dict[str, int | None] = field(default_factory=dict)
    duplicate: dict[str, int] = field(default_factory=dict)
    reorder: dict[str, int] = field(default_factory=dict)
    auth_fail: dict[str, int] = field(default_factory=dict)
    sign_fail: dict[str, int] = field(default_factory=dict)
    # account -> (remaining refusals, omit the reset header)
    rate_limit: dict[str, tuple[int, bool]] = field(default_factory=dict)
    # account -> (remaining corrupted frames, index of the next variant)
    malformed: dict[str, tuple[int, int]] = field(default_factory=dict)
    # The sim serves one IP as far as a fault goes: every REST call is refused until then.
    ip_banned_until: int | None = None

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
            case "malformed_next":
                self.malformed[who] = (fault.count, 0)
            case "ip_ban":
                seconds = fault.duration_s if fault.duration_s is not None else DEFAULT_IP_BAN_S
                self.ip_banned_until = now_ms + int(seconds * 1000)
            case "auth_fail":
                self.auth_fail[who] = fault.count
            case "sign_fail":
                self.sign_fail[who] = fault.count
            case "rate_limit":
                self.rate_limit[who] = (fault.count, fault.omit_reset_header)
            case "clear":
                self.clear(fault.account)
            case "disconnect":
                pass

    def clear(self, account: str | None) -> None:
        for table in (self.silenced, self.duplicate, self.reorder, self.auth_fail, self.sign_fail):
            _drop(table, account)
        _drop(self.rate_limit, account)
        _drop(self.malformed, account)
        if account is None:
            self.ip_banned_until = None

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

    def take_sign_fail(self, account: str) -> bool:
        return self._take(self.sign_fail, account)

    def take_reorder_window(self, account: str) -> int:
        """Size of the reversed batch to start for this account (0: deliver in order)."""
        for who in (account, ANY):
            if who in self.reorder:
                return self.reorder.pop(who)
        return 0

    def take_malformed(self, account: str) -> MalformedVariant | None:
        """The corruption to send before this account's next frame, if one is armed."""
        for who in (account, ANY):
            left, variant = self.malformed.get(who, (0, 0))
            if left > 0:
                if left == 1:
                    del self.malformed[who]
                else:
                    self.malformed[who] = (left - 1, variant + 1)
                return MALFORMED_VARIANTS[variant % len(MALFORMED_VARIANTS)]
        return None

    def ip_ban_until(self, now_ms: int) -> int | None:
        """End of the armed ip_ban if it is still in force."""
        if self.ip_banned_until is not None and now_ms >= self.ip_banned_until:
            self.ip_banned_until = None
        return self.ip_banned_until

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
            "malformed_next": {k: v[0] for k, v in self.malformed.items()},
            "ip_banned_until": self.ip_banned_until,
        }


def corrupt(message: dict[str, Any], topic: str, variant: MalformedVariant) -> str:
    """The text sent in place of `message` (a private frame whose all-in-one topic is
    `topic`). The id gets a suffix so a client deduplicating on frame id still takes the
    real frame that follows."""
    bad = {**message, "id": f"{message['id']}-malformed"}
    match variant:
        case "truncated":
            # A JSON object cut anywhere before its closing brace never parses.
            text = orjson.dumps(bad).decode()
            return text[: len(text) // 2]
        case "unknown_topic":
            bad["topic"] = UNKNOWN_TOPIC
        case "missing_field":
            dropped = _REQUIRED_FIELDS[topic]
            bad["data"] = [
                {k: v for k, v in row.items() if k not in dropped} for row in message["data"]
            ]
    return orjson.dumps(bad).decode()


def _drop(table: dict[str, Any], account: str | None) -> None:
    if account is None:
        table.clear()
    else:
        table.pop(account, None)
