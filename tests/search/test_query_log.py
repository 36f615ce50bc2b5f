"""The query-vector log's buffered writes: what reaches the store, when, and on failure."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from sovra.search import query_log
from sovra.search.query_log import QueryVectorLog


def _stored(path: Path) -> int:
    """Rows in the file, read by a second log (it sees only what the first one wrote)."""
    reader = QueryVectorLog(path)
    try:
        return reader.count()
    finally:
        reader.close()


def test_added_vectors_reach_the_store_within_the_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    log = QueryVectorLog(path)
    for i in range(5):
        log.add("search", "m", np.full(4, float(i)))
    deadline = time.monotonic() + 10 * query_log.FLUSH_S
    while _stored(path) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stored(path) == 5  # no flush, read or close: the timer wrote them
    log.close()


def test_reads_and_close_write_what_is_buffered(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    log = QueryVectorLog(path)
    now = datetime.now(UTC)
    log.add("search", "m", np.arange(4.0), time=now)
    got = log.vectors(now - timedelta(seconds=1), now + timedelta(seconds=1), model="m")
    assert got.tolist() == [[0.0, 1.0, 2.0, 3.0]]
    log.add("ask", "m", np.ones(4))
    log.close()
    assert _stored(path) == 2


def test_one_flush_prunes_as_each_write_would_have(tmp_path: Path) -> None:
    log = QueryVectorLog(tmp_path / "q.sqlite", retention_days=1)
    now = datetime.now(UTC)
    log.add("search", "m", np.ones(4), time=now - timedelta(days=3))
    log.add("search", "m", np.ones(4), time=now - timedelta(hours=1))
    log.add("search", "m", np.ones(4), time=now)
    assert log.count() == 2  # the 3-day-old row is past the retention of the latest write
    log.close()


def test_a_failed_write_keeps_the_rows_for_the_next_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "q.sqlite"
    log = QueryVectorLog(path)
    log.add("search", "m", np.ones(4))
    real_begin = log.engine.begin
    failures = [1]

    def failing_begin(*args: Any, **kwargs: Any) -> Any:
        if failures:
            failures.pop()
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        return real_begin(*args, **kwargs)

    monkeypatch.setattr(log.engine, "begin", failing_begin)
    with pytest.raises(OperationalError):
        log.flush()
    log.add("search", "m", np.zeros(4))
    log.flush()
    assert _stored(path) == 2 and log.dropped == 0
    log.close()


def test_a_store_that_stays_down_costs_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query_log, "MAX_PENDING", 3)
    log = QueryVectorLog(tmp_path / "q.sqlite")

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    real_begin = log.engine.begin
    monkeypatch.setattr(log.engine, "begin", down)
    for i in range(5):
        log.add("search", "m", np.full(4, float(i)))
    with pytest.raises(OperationalError):
        log.flush()
    assert log.dropped == 2  # the oldest two went; memory holds MAX_PENDING rows
    monkeypatch.setattr(log.engine, "begin", real_begin)
    now = datetime.now(UTC)
    kept = log.vectors(now - timedelta(minutes=1), now + timedelta(minutes=1))
    assert kept[:, 0].tolist() == [2.0, 3.0, 4.0]
    log.close()


def test_a_time_without_a_timezone_is_refused_at_add(tmp_path: Path) -> None:
    log = QueryVectorLog(tmp_path / "q.sqlite")
    with pytest.raises(ValueError, match="timezone"):
        log.add("search", "m", np.ones(4), time=datetime(2026, 1, 1))
    log.close()
