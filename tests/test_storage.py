"""sovra.storage: store connections, write transactions and atomic file replacement."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovra.storage import atomic_write, atomic_writer, open_sqlite, write_transaction


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_sqlite(tmp_path / "sub" / "store.sqlite")
    conn.execute("CREATE TABLE t (v INTEGER)")
    yield conn
    conn.close()


def _values(conn: sqlite3.Connection) -> list[int]:
    return [int(r[0]) for r in conn.execute("SELECT v FROM t ORDER BY v")]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- open_sqlite ------------------------------------------------------------------------------


def test_open_sqlite_applies_the_store_settings(tmp_path: Path) -> None:
    conn = open_sqlite(
        tmp_path / "a" / "b.sqlite",
        timeout=12.5,
        synchronous="NORMAL",
        foreign_keys=True,
        secure_delete=True,
    )
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 12500
        assert conn.isolation_level is None  # autocommit: transactions only when asked for
    finally:
        conn.close()


def test_open_sqlite_rollback_journal_and_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    conn = open_sqlite(path, journal_mode="DELETE", synchronous="FULL", owner_only=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        conn.close()


def test_open_sqlite_refuses_unknown_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        open_sqlite(tmp_path / "x.sqlite", synchronous="OFF; DROP TABLE t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="journal_mode"):
        open_sqlite(tmp_path / "x.sqlite", journal_mode="MEMORY")  # type: ignore[arg-type]


def test_open_sqlite_can_be_shared_between_threads(db: sqlite3.Connection) -> None:
    import threading

    errors: list[BaseException] = []

    def write() -> None:
        try:
            db.execute("INSERT INTO t VALUES (7)")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=write)
    worker.start()
    worker.join()
    assert errors == []
    assert _values(db) == [7]


# -- write_transaction ------------------------------------------------------------------------


def test_transaction_commits_when_the_block_ends(db: sqlite3.Connection, tmp_path: Path) -> None:
    with write_transaction(db) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("INSERT INTO t VALUES (2)")
    other = sqlite3.connect(tmp_path / "sub" / "store.sqlite")
    try:
        assert _values(other) == [1, 2]
    finally:
        other.close()
    assert not db.in_transaction


def test_transaction_rolls_back_when_the_block_raises(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError, match="half-way"), write_transaction(db) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
        conn.execute("DELETE FROM t WHERE v = 1")
        raise RuntimeError("half-way")
    assert _values(db) == [1]
    assert not db.in_transaction
    with write_transaction(db) as conn:  # the connection is usable again
        conn.execute("INSERT INTO t VALUES (3)")
    assert _values(db) == [1, 3]


def test_a_failed_commit_is_rolled_back(tmp_path: Path) -> None:
    # A deferred foreign key is checked only at COMMIT: the commit itself fails.
    conn = open_sqlite(tmp_path / "fk.sqlite", foreign_keys=True)
    try:
        conn.executescript(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
        )
        with pytest.raises(sqlite3.IntegrityError), write_transaction(conn) as c:
            c.execute("INSERT INTO child VALUES (42)")
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    finally:
        conn.close()


def test_begin_immediate_holds_the_write_lock_before_any_write(
    db: sqlite3.Connection, tmp_path: Path
) -> None:
    other = open_sqlite(tmp_path / "sub" / "store.sqlite", timeout=0.05)
    try:
        with write_transaction(db):
            # Nothing written yet, and still a second writer waits its busy timeout and fails:
            # a check made inside the block cannot be raced.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("INSERT INTO t VALUES (9)")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            assert _values(other) == []  # readers are not blocked (WAL)
        other.execute("INSERT INTO t VALUES (9)")
        assert _values(db) == [9]
    finally:
        other.close()


# -- atomic_write -----------------------------------------------------------------------------


def test_atomic_write_replaces_text_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "file.json"
    atomic_write(path, "first ✓\n")
    assert path.read_text(encoding="utf-8") == "first ✓\n"
    atomic_write(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    assert _leftovers(tmp_path) == []


def test_a_writer_that_fails_midway_leaves_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "file.json"
    atomic_write(path, "old")
    with pytest.raises(OSError, match="disk full"), atomic_writer(path) as fh:
        fh.write(b"new but only ha")
        raise OSError("disk full")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_a_failed_rename_leaves_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "file.json"
    atomic_write(path, "old")

    def boom(*args: object) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        atomic_write(tmp_path / "secret.key", "k")
        atomic_write(tmp_path / "shared.txt", "s", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644
    # Replacing an existing, more open file gives the new mode, not the old one.
    (tmp_path / "open.key").write_text("x")
    (tmp_path / "open.key").chmod(0o666)
    atomic_write(tmp_path / "open.key", "k")
    assert stat.S_IMODE((tmp_path / "open.key").stat().st_mode) == 0o600


def test_mode_none_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "cache.npz", b"c", mode=None)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cache.npz").stat().st_mode) == 0o640


def test_exclusive_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    atomic_write(path, "first", exclusive=True)
    assert path.read_text() == "first"
    with pytest.raises(FileExistsError):
        atomic_write(path, "second", exclusive=True)
    assert path.read_text() == "first"
    assert _leftovers(tmp_path) == []
