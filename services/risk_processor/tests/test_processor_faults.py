"""The processor under faults and hostile input (issue 10) and its heartbeats: a reserved
account name, pipeline heartbeats, an oversize poison record, and a failing agent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from processor_testkit import mark, position, publish, publish_raw, settings_for
from risk_processor.app import RiskProcessor
from riskwatch_common.contracts import PipelineHeartbeat, RecordDeadLettered, Side
from riskwatch_common.kafka import DEAD_LETTER_MAX_BYTES
from riskwatch_common.settings import KafkaSettings
from riskwatch_common.testkit import read_topic, wait_until
from riskwatch_common.topics import ACCOUNT_EVENTS, HEARTBEATS, dead_letter_of

pytestmark = pytest.mark.integration


def heartbeat(account: str, n: int) -> PipelineHeartbeat:
    now = datetime.now(UTC)
    return PipelineHeartbeat(
        event_id=f"hb-{account}-{n}",
        occurred_at=now,
        produced_at=now,
        source="ingestor/group-a",
        correlation_id=f"hb-{account}-{n}",
        account=account,
        group="group-a",
        link_up=True,
    )


async def dead_letters(kafka: KafkaSettings, n: int) -> list[RecordDeadLettered]:
    spec = dead_letter_of(ACCOUNT_EVENTS)
    records = await read_topic(kafka, spec, min_records=n, timeout=2)
    return [spec.decode(value) for _, value in records]


async def start(kafka: KafkaSettings, tmp_path: Path) -> tuple[RiskProcessor, asyncio.Task[None]]:
    proc = RiskProcessor(settings_for(kafka, tmp_path))
    task = asyncio.ensure_future(proc.run())

    def ready() -> bool:
        if task.done():
            task.result()
        return proc.ready

    await wait_until(ready, timeout=60, message="risk processor ready")
    return proc, task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_event_for_the_reserved_account_portfolio_is_dead_lettered_not_applied(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    # An account named 'portfolio' stopped the processor (AttributeError
    # ... worst_margin_ratio): its snapshot overwrote the portfolio's.
    proc, task = await start(kafka, tmp_path)
    try:
        await publish(kafka, [mark("ETHUSDT", 4000)])
        await publish(
            kafka,
            [
                position("portfolio", "ETHUSDT", Side.BUY, 1, 4000, 5),
                # reserved in any letter case, as the accounts file refuses it
                position("Portfolio", "ETHUSDT", Side.BUY, 1, 4000, 5),
                position("after", "ETHUSDT", Side.BUY, 2, 4000, 5),
            ],
        )

        async def reserved() -> list[RecordDeadLettered] | None:
            found = [d for d in await dead_letters(kafka, 2) if d.reason == "reserved"]
            return found if len(found) == 2 else None

        dead = await wait_until(reserved, timeout=20, message="reserved names dead-lettered")
        assert sorted(d.key or "" for d in dead) == ["Portfolio", "portfolio"]
        assert "'portfolio' is reserved" in dead[0].error + dead[1].error
        await wait_until(lambda: "after" in proc.ctx.exposures, message="next account handled")
        assert proc.positions.get("portfolio") is None
        assert proc.positions.get("Portfolio") is None
        assert not task.done()
    finally:
        await stop(task)


async def test_heartbeats_are_forwarded_unchanged_after_the_events_before_them(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    proc, task = await start(kafka, tmp_path)
    try:
        await publish(kafka, [mark("ETHUSDT", 4000)])
        beat = heartbeat("hb1", 1)
        await publish(kafka, [position("hb1", "ETHUSDT", Side.BUY, 1, 4000, 5), beat])
        await publish(kafka, [heartbeat("idle", 1)])

        async def forwarded() -> list[tuple[bytes | None, bytes]] | None:
            got = await read_topic(kafka, HEARTBEATS, min_records=2, timeout=0.5)
            return got if len(got) >= 2 else None

        records = await wait_until(forwarded, timeout=20, message="heartbeats forwarded")
        # When its heartbeat is out, the position before it is in the table.
        assert proc.positions.get("hb1") is not None
        by_key = {key: value for key, value in records}
        sent = [
            v for _, v in await read_topic(kafka, ACCOUNT_EVENTS, min_records=4) if b"hb1-1" in v
        ]
        assert by_key[b"hb1"] == sent[0]  # the same bytes
        assert HEARTBEATS.decode(by_key[b"hb1"]).event_id == beat.event_id
        # Heartbeats never touch tables.
        for table in (proc.positions, proc.risk, proc.tables.orders, proc.tables.wallets):
            assert table.get("idle") is None
        assert not task.done()
    finally:
        await stop(task)


async def test_a_700kb_poison_record_becomes_a_bounded_dead_letter(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    # Escaped as JSON, this became a dead letter over the broker's 1 MiB record limit.
    proc, task = await start(kafka, tmp_path)
    try:
        poison = b'{"event_type": "PositionUpdated", "x": "' + b"\x01" * 700_000 + b'"}'
        await publish_raw(kafka, ACCOUNT_EVENTS, "big", poison)
        await publish(
            kafka, [mark("ETHUSDT", 4000), position("next", "ETHUSDT", Side.BUY, 1, 4000, 5)]
        )
        spec = dead_letter_of(ACCOUNT_EVENTS)

        async def dead_lettered() -> list[tuple[bytes | None, bytes]]:
            return await read_topic(kafka, spec, min_records=1, timeout=0.5)

        records = await wait_until(dead_lettered, timeout=20, message="dead letter")
        [(_, body)] = records
        assert len(body) <= DEAD_LETTER_MAX_BYTES
        dead = spec.decode(body)
        assert dead.value_length == len(poison)
        assert dead.value_truncated
        await wait_until(lambda: "next" in proc.ctx.exposures, message="next record handled")
    finally:
        await stop(task)


async def test_a_failing_agent_stops_the_worker_within_10_s_and_healthz_at_once(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    # Before: the worker hung for ever in Faust's wait_empty on the unacked batch while
    # /healthz answered alive.
    proc, task = await start(kafka, tmp_path)
    port = proc.http.port

    async def broken_output(*, everything: bool = False) -> None:
        raise RuntimeError("injected: the snapshot output failed")

    proc.ctx.emit_due = broken_output  # type: ignore[method-assign]
    try:
        await publish(
            kafka, [mark("ETHUSDT", 4000), position("f1", "ETHUSDT", Side.BUY, 1, 4000, 5)]
        )
        await wait_until(proc.failed.is_set, timeout=20, message="the failure seen")
        failed_at = time.monotonic()

        async def healthz_down() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{port}/healthz") as r,
                ):
                    return r.status != 200
            except aiohttp.ClientError:
                return True

        await wait_until(healthz_down, timeout=1, message="/healthz unhealthy at once")
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, "the worker did not stop within 10 s"
        assert time.monotonic() - failed_at < 10
        with pytest.raises(RuntimeError, match="the Faust worker stopped"):
            task.result()
    finally:
        await stop(task)


def test_a_worker_whose_stop_hangs_is_forced_out_with_a_non_zero_exit() -> None:
    # main arms the shared watchdog (runtime.force_exit_after) when the worker fails; here
    # the worker's stop never returns.
    script = (
        "import asyncio\n"
        "from risk_processor import app\n"
        "app.FORCED_EXIT_S = 0.5\n"
        "class Hung:\n"
        "    failed = asyncio.Event()\n"
        "    async def run(self):\n"
        "        self.failed.set()\n"
        "        await asyncio.sleep(60)\n"  # Faust's stop that never returns
        "app.RiskProcessor = lambda settings: Hung()\n"
        "app.quiet_faust_logs = lambda level: None\n"
        "asyncio.run(app.main(None))\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], timeout=30, check=False)
    assert done.returncode == 1
    assert time.monotonic() - started < 10
