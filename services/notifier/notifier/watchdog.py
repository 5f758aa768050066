"""End-to-end freshness: is data still flowing from every ingestor group?

Each ingestor group emits a ``PipelineHeartbeat`` per account every few seconds; the risk
processor forwards it to ``risk.heartbeats.v1`` once it has handled everything before it,
so a fresh heartbeat here proves the whole chain moves for that group. When a group's
newest heartbeat (its ``occurred_at``, the ingestor's time) is older than the stall
threshold, the notifier itself raises "monitoring stalled" straight to its channels (the
pipeline that would carry an alert is what stalled) and resolves it when data flows again.

Watched groups: every group seen fresh since startup, plus the configured ones (a configured
group that never reports counts from startup). Pure: time comes in as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from riskwatch_common.contracts import AlertTransition, PipelineHeartbeat


@dataclass(frozen=True, slots=True)
class Change:
    group: str
    transition: AlertTransition  # RAISED or RESOLVED
    since: datetime  # the newest heartbeat when it stalled (startup for a silent group)
    age: timedelta  # how long without fresh data, at the check


@dataclass(slots=True)
class Watchdog:
    stall_after: timedelta
    started_at: datetime
    expected: frozenset[str] = frozenset()
    last: dict[str, datetime] = field(default_factory=dict)
    stalled: dict[str, datetime] = field(default_factory=dict)

    def beat(self, heartbeat: PipelineHeartbeat, now: datetime) -> None:
        seen = self.last.get(heartbeat.group)
        if seen is None and now - heartbeat.occurred_at > self.stall_after:
            # replaying a backlog (first start, long downtime): a group is watched from
            # its first fresh heartbeat, or a replay would page "stalled" for a moment
            return
        if seen is None or heartbeat.occurred_at > seen:
            self.last[heartbeat.group] = heartbeat.occurred_at

    def _groups(self) -> set[str]:
        return set(self.expected) | set(self.last)

    def check(self, now: datetime) -> list[Change]:
        """The groups that stalled or recovered since the last check."""
        changes = []
        for group in sorted(self._groups()):
            newest = self.last.get(group, self.started_at)
            age = now - newest
            if age > self.stall_after and group not in self.stalled:
                self.stalled[group] = newest
                changes.append(Change(group, AlertTransition.RAISED, newest, age))
            elif age <= self.stall_after and group in self.stalled:
                since = self.stalled.pop(group)
                changes.append(Change(group, AlertTransition.RESOLVED, since, age))
        return changes

    def fresh(self, now: datetime) -> bool:
        """Every watched group reported within the threshold (and there is one)."""
        groups = self._groups()
        return bool(groups) and all(
            now - self.last.get(g, self.started_at) <= self.stall_after and g in self.last
            for g in groups
        )
