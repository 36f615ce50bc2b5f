"""A workspace's lazily opened stores under concurrent first use: what a server's first requests
do. Two request threads once opened the query-vector log together; both ran CREATE TABLE and the
loser's request answered 500 (seen in the load benchmark's first second)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event

from sovra.config import parse_config
from sovra.search.query_log import QueryVectorLog
from sovra.storage import store_engine
from sovra.workspace import Workspace

THREADS = 8


def test_concurrent_first_use_opens_each_store_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace.open(parse_config({"workspace": {"home": str(tmp_path / "home")}}, tmp_path))
    opened: list[QueryVectorLog] = []
    real = QueryVectorLog.in_home

    def slow_open(*args: Any, **kwargs: Any) -> QueryVectorLog:
        time.sleep(0.05)  # widen the window in which a second thread would open it too
        log = real(*args, **kwargs)
        opened.append(log)
        return log

    monkeypatch.setattr(QueryVectorLog, "in_home", staticmethod(slow_open))
    start = threading.Barrier(THREADS)

    def first_use(_: int) -> tuple[QueryVectorLog, int]:
        start.wait()
        log = ws.query_log
        return log, log.count()

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(first_use, range(THREADS)))
    assert len(opened) == 1
    assert {id(log) for log, _ in results} == {id(opened[0])}
    assert [count for _, count in results] == [0] * THREADS
    ws.close()


def test_a_table_created_by_another_process_meanwhile_is_no_error(tmp_path: Path) -> None:
    """Between create_all's existence check and its CREATE another process (a second replica, a
    CLI beside the server) creates the table: opening the store still succeeds."""
    db = tmp_path / "store.db"
    metadata = MetaData()
    table = Table("things", metadata, Column("id", Integer, primary_key=True))
    raced: list[bool] = []

    @event.listens_for(table, "before_create")
    def other_process_first(*_: Any, **__: Any) -> None:
        if not raced:
            raced.append(True)
            import sqlite3

            other = sqlite3.connect(db)
            other.execute("CREATE TABLE things (id INTEGER PRIMARY KEY)")
            other.commit()
            other.close()

    engine = store_engine(db, "things", metadata)
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=1))
        assert conn.execute(table.select()).all() == [(1,)]
    assert raced == [True]
    engine.dispose()
