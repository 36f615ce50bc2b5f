"""Persistence plumbing shared by every store: SQLite connections, write transactions,
all-or-nothing file replacement, and the SQLAlchemy engines of the stores that run on either
a local SQLite file or the shared PostgreSQL database (`[workspace] database_url`).

Bottom layer: imports only the standard library and SQLAlchemy, so any package may use it. The
stores keep their own schemas and choose their durability here by parameter (journal mode,
synchronous, busy timeout), so what differs between them is visible at each call site.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    MetaData,
    Table,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool, QueuePool

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_PRIVATE_UMASK = 0o077
_UMASK_LOCK = threading.RLock()

JournalMode = Literal["WAL", "DELETE"]
Synchronous = Literal["NORMAL", "FULL", "EXTRA"]
_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
_JOURNAL_MODES = ("WAL", "DELETE")


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Whatever is created inside the block — by sovra or by a library (SQLite sidecars,
    LanceDB fragments, DBOS) — is owner-only: dirs 0700, files 0600 (umask 077).

    The umask is process-wide: a thread creating a file meanwhile gets the stricter mode too,
    never a wider one. The lock keeps nested and concurrent blocks from restoring each
    other's umask out of order.
    """
    with _UMASK_LOCK:
        old = os.umask(_PRIVATE_UMASK)
        try:
            yield
        finally:
            os.umask(old)


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents owner-only (0700); an existing folder is left
    as it is (`sovra doctor` reports one that is too open)."""
    if not path.is_dir():
        with private_files():
            path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def open_private(path: Path) -> TextIO:
    """Open a small text file for appending and reading (a lock file), created 0600 if missing."""
    with private_files():
        return path.open("a+", encoding="utf-8")


def open_sqlite(
    path: Path,
    *,
    timeout: float = 5.0,
    journal_mode: JournalMode = "WAL",
    synchronous: Synchronous | None = None,
    foreign_keys: bool = False,
    secure_delete: bool = False,
    owner_only: bool = True,
) -> sqlite3.Connection:
    """A connection for one store's database file, its parent directory created if missing.

    Autocommit (`isolation_level=None`): a store that needs several statements to be one
    change says so with `write_transaction`, instead of sqlite3 opening transactions behind
    its back. Shareable between threads (`check_same_thread=False`); the stores serialise
    their calls with their own locks. `timeout` is the busy timeout in seconds (5 is
    sqlite3's own default); `synchronous=None` keeps SQLite's compiled-in default.
    `owner_only` (the default: every store holds someone's data) creates a missing folder 0700
    and file 0600 before SQLite opens it, with umask 077 while it connects; SQLite gives its
    -wal, -shm and -journal files the mode of the database file.
    """
    if journal_mode not in _JOURNAL_MODES:
        raise ValueError(f"journal_mode must be one of {', '.join(_JOURNAL_MODES)}")
    if synchronous is not None and synchronous not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
    if not owner_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    else:
        private_dir(path.parent)
        with private_files():
            if not path.exists():
                path.touch(mode=PRIVATE_FILE_MODE)
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
    try:
        if secure_delete:
            conn.execute("PRAGMA secure_delete=ON")
        with private_files() if owner_only else contextlib.nullcontext():
            conn.execute(f"PRAGMA journal_mode={journal_mode}")
        if synchronous is not None:
            conn.execute(f"PRAGMA synchronous={synchronous}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic change: BEGIN IMMEDIATE, COMMIT when the block ends, ROLLBACK if it raises.

    IMMEDIATE takes the database's write lock at the start (waiting up to the busy timeout),
    so a read-then-write inside the block cannot race another connection's write: a check
    made in the block still holds when the block commits. A failed COMMIT is rolled back as
    well, so the connection is never left inside a transaction.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # SQLite ends the transaction itself on some errors (a full disk, an interrupt);
        # a ROLLBACK then would fail and hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _create_temp(path: Path, mode: int | None) -> tuple[int, Path]:
    """A new file beside `path` (same filesystem, so the rename is atomic), opened for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o600 if mode is not None else 0o666)
        except FileExistsError:
            continue
        if mode is not None:
            try:
                # Exactly `mode`, whatever the umask; created 0600 first, so a secret is
                # never readable by others, not even briefly.
                os.fchmod(fd, mode)
            except BaseException:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise
        return fd, tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def _sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (on Linux a rename is on disk only after this)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # The file has been replaced already; a filesystem that cannot sync a directory
        # (some network and FUSE mounts) must not turn a finished write into an error.
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, mode: int | None = 0o600, exclusive: bool = False
) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces `path` when the block ends without error.

    Readers see the old file or the new one, never a part; a crash or an exception leaves the
    old file and no temporary one. The content is fsynced before the rename and the directory
    after it. `mode`: the new file's permission bits exactly (default 0600, owner only);
    None gives what a plainly created file gets (0666 less the umask). `exclusive`: never
    replace an existing file — FileExistsError instead, and `path` is left untouched.
    """
    fd, tmp = _create_temp(path, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # atomic and exclusive: fails if `path` exists
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def atomic_write(
    path: Path, data: bytes | str, *, mode: int | None = 0o600, exclusive: bool = False
) -> None:
    """Replace `path` with `data` (text is written as UTF-8) all-or-nothing; see `atomic_writer`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(path, mode=mode, exclusive=exclusive) as fh:
        fh.write(raw)


@contextlib.contextmanager
def erasing(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Erase rows for good: SQLite's secure_delete zeroes what the block frees, then VACUUM
    rewrites the file and a TRUNCATE checkpoint empties the WAL, so no free page, journal or
    WAL frame keeps the old bytes. The block's changes are one transaction."""
    conn.execute("PRAGMA secure_delete=ON")
    with write_transaction(conn):
        yield conn
    conn.execute("VACUUM")
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# ---------------------------------------------------------------------- SQLAlchemy stores
def engine_for(
    target: Path | str | Engine, *, synchronous: Synchronous = "NORMAL", keep_open: bool = False
) -> Engine:
    """An engine for a SQLite file path (created owner-only), a database URL, or an engine
    passed through. `postgresql://` (the form operators write) means psycopg 3, the driver
    sovra ships; one pooled engine per URL per process. `synchronous`: the SQLite file's
    durability (FULL for a store whose lost commit would repeat an action in the world).

    `keep_open`: a SQLite store that every request touches (the directory, the query log, the
    recent questions) keeps its connections in a pool, since opening one per call costs the
    open, the pragmas and, on closing the last one, a WAL checkpoint with its fsync — about a
    millisecond per store per request. Its owner disposes the engine on `close()`."""
    if synchronous not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
    if isinstance(target, Engine):
        return target
    if isinstance(target, Path):
        private_dir(target.parent)
        # Owner-only like every store in the home; SQLite gives its -wal/-shm the file's mode.
        with private_files():
            target.touch(mode=PRIVATE_FILE_MODE, exist_ok=True)
        url, connect = f"sqlite:///{target}", {"timeout": 30}
        if keep_open:
            # max_overflow=-1: a burst of server threads never waits for a pooled connection;
            # the connections beyond pool_size are closed when returned.
            engine = create_engine(
                url, poolclass=QueuePool, pool_size=4, max_overflow=-1, connect_args=connect
            )
        else:
            # NullPool: many short-lived stores (one per CLI command) hold no file open.
            engine = create_engine(url, poolclass=NullPool, connect_args=connect)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.close()

        return engine
    for plain in ("postgresql://", "postgres://"):
        if target.startswith(plain):
            target = "postgresql+psycopg://" + target[len(plain) :]
    return _shared_engine(target)


@functools.lru_cache(maxsize=8)
def _shared_engine(url: str) -> Engine:
    # One pool per database for the process: stores are built per request and per command.
    return create_engine(url, pool_pre_ping=True)


def store_engine(
    target: Path | str | Engine,
    schema: str,
    metadata: MetaData,
    *,
    synchronous: Synchronous = "NORMAL",
    keep_open: bool = False,
) -> Engine:
    """The engine of one store, its tables created if missing.

    On PostgreSQL the store's tables live in their own schema (`schema`), so stores that share
    one database keep their historic, short table names (`sessions`, `documents`) without
    colliding with each other or with the index; on SQLite the store has its own file and the
    tables sit where they always did, so an existing home's files keep working unchanged.
    `synchronous`, `keep_open`: see `engine_for`."""
    engine = engine_for(target, synchronous=synchronous, keep_open=keep_open)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        engine = engine.execution_options(schema_translate_map={None: schema})
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
    except (OperationalError, ProgrammingError, IntegrityError):
        # Another process (a second replica, a CLI beside the server) created a table between
        # create_all's existence check and its CREATE; the second pass finds it there. An error
        # of another kind repeats here and propagates.
        with engine.begin() as conn:
            metadata.create_all(conn)
    return engine


def store_schema(bind: Engine | Connection) -> str | None:
    """The PostgreSQL schema `store_engine` gave a store (None on SQLite): hand-written SQL
    names it, since SQLAlchemy translates only the statements it compiles itself."""
    translate = bind.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(None)
    return str(schema) if schema else None


def _qualified(bind: Engine | Connection, table: str) -> str:
    schema = store_schema(bind)
    return f'"{schema}".{table}' if schema else table


def missing_columns(conn: Connection, table: str, wanted: dict[str, str]) -> None:
    """Add the columns (name → SQL type) that a store made by an older sovra lacks."""
    have = {c["name"] for c in inspect(conn).get_columns(table, schema=store_schema(conn))}
    for name, sql_type in wanted.items():
        if name not in have:
            conn.execute(
                text(f"ALTER TABLE {_qualified(conn, table)} ADD COLUMN {name} {sql_type}")
            )


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextlib.contextmanager
def erasing_rows(engine: Engine, *tables: str) -> Iterator[Connection]:
    """Erase rows for good on either backend: the block's deletes are one transaction; then
    SQLite zeroes freed pages, rewrites the file and empties the WAL (see `erasing`), and
    PostgreSQL VACUUMs the tables so dead row versions are reclaimed (their pages are reused;
    the WAL and backups are the operator's, as for every PostgreSQL store)."""
    if is_sqlite(engine):
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA secure_delete=ON")
            conn.commit()  # the PRAGMA autobegan a transaction; the deletes get their own
            with conn.begin():
                yield conn
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("PRAGMA secure_delete=ON")
            conn.exec_driver_sql("VACUUM")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    with engine.begin() as conn:
        yield conn
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.execute(text(f"VACUUM {_qualified(engine, table)}"))


@contextlib.contextmanager
def write_lock(engine: Engine, name: str) -> Iterator[Connection]:
    """One writer at a time across processes, on either backend: the block is one transaction
    that first takes SQLite's write lock (BEGIN IMMEDIATE) or, on PostgreSQL, a
    transaction-scoped advisory lock on `name` (held by every replica's writers of that store).
    A check made in the block (a vote not yet cast, a key not yet delivered) therefore still
    holds when the block commits; on PostgreSQL each later statement reads what the previous
    holder committed (READ COMMITTED takes a fresh snapshot per statement)."""
    with engine.connect() as conn:
        if is_sqlite(engine):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


class _Upsert:
    """`upsert(...).values(...)`: INSERT that replaces the other columns of an existing row."""

    def __init__(self, dialect: str, table: Table, keys: list[str]) -> None:
        self.dialect, self.table, self.keys = dialect, table, keys

    def insert_values(self, **row: Any) -> Any:
        """The dialect's INSERT of `row`, for a statement that spells its own ON CONFLICT."""
        from sqlalchemy.dialects import postgresql, sqlite

        make = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = make(self.table)
        return stmt.values(**row) if row else stmt

    def many(self, columns: list[str]) -> Executable:
        """The statement for `conn.execute(stmt, rows)`: one round trip for a whole batch."""
        stmt = self.insert_values()
        changed = {k: stmt.excluded[k] for k in columns if k not in self.keys}
        out: Executable = stmt.on_conflict_do_update(index_elements=self.keys, set_=changed)
        return out

    def values(self, **row: Any) -> Executable:
        stmt = self.insert_values(**row)
        changed = {k: stmt.excluded[k] for k in row if k not in self.keys}
        out: Executable = stmt.on_conflict_do_update(index_elements=self.keys, set_=changed)
        return out


def upsert(bind: Engine | Connection, table: Table, keys: list[str]) -> _Upsert:
    """INSERT … ON CONFLICT (keys) DO UPDATE, in the dialect of `bind` (SQLite or PostgreSQL:
    both spell it the same, SQLAlchemy needs the dialect's own construct)."""
    return _Upsert(bind.dialect.name, table, keys)
