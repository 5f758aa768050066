"""The delivery log: durable across restarts, bounded, tolerant of a torn last line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from notifier.dedup import DeliveryLog

AT = datetime(2026, 3, 2, tzinfo=UTC)


def test_recorded_delivery_is_known_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "delivered.jsonl"
    log = DeliveryLog(path)
    log.open()
    log.record("telegram", "e1", AT)
    log.close()

    again = DeliveryLog(path)
    again.open()
    assert again.delivered("telegram", "e1")
    assert not again.delivered("slack", "e1")
    assert not again.delivered("telegram", "e2")
    again.close()


def test_torn_last_line_from_a_crash_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    path.write_bytes(b'{"channel":"file","event_id":"e1"}\n{"channel":"tele')
    log = DeliveryLog(path)
    log.open()
    assert log.delivered("file", "e1")
    log.record("file", "e2", AT)
    log.close()
    reopened = DeliveryLog(path)
    reopened.open()
    assert reopened.delivered("file", "e2")
    reopened.close()


def test_log_keeps_the_newest_entries_and_compacts_the_file_while_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "delivered.jsonl"
    log = DeliveryLog(path, capacity=100)
    log.open()
    for i in range(250):
        log.record("console", f"e{i}", AT)
        assert len(path.read_bytes().splitlines()) <= 200  # never past twice the capacity
    assert log.delivered("console", "e249")
    log.close()

    reopened = DeliveryLog(path, capacity=100)
    reopened.open()
    assert reopened.delivered("console", "e249")
    assert reopened.delivered("console", "e150")
    assert not reopened.delivered("console", "e149")
    reopened.close()
    assert len(path.read_bytes().splitlines()) <= 200


def test_without_a_path_dedup_is_in_memory_only(tmp_path: Path) -> None:
    log = DeliveryLog(None)
    log.open()
    log.record("console", "e1", AT)
    assert log.delivered("console", "e1")
    assert list(tmp_path.iterdir()) == []
