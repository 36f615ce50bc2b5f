"""PostgreSQL log store (server mode), same protocol and transaction shape as SqliteStore.

Tables live in their own schema (default `sovra_audit`) so tests and several logs can share one
database. Appends serialise on a row lock of the `size` meta row; a commit returns only once
PostgreSQL has flushed its WAL (synchronous_commit stays on).

A dropped connection (server restart, failover, `pg_terminate_backend`) is replaced on the next
call: a read is retried once on a fresh connection; an append is retried once too, since a
transaction cut off before its COMMIT left nothing behind — and when the connection died during
the COMMIT itself, the fresh connection first checks whether that commit landed, so an append is
never written twice nor half.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg

from sovra.audit.merkle import NodeId
from sovra.audit.store import Planner, StoreError, key_node, node_key, signature_count

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_BATCH = 5000
_T = TypeVar("_T")
# A connection that failed like this is gone; a fresh one may work (the server is back, or the
# failover target answers). Errors in the SQL itself are not among them and are never retried.
_LOST = (psycopg.OperationalError, psycopg.InterfaceError)


def ddl_lock_name(schema: str) -> str:
    """The advisory lock every creator of the audit tables of `schema` holds while it creates."""
    return f"sovra.audit.ddl:{schema}"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class PostgresStore:
    shared = True
    """Several processes and hosts may write this store (AuditLog checks they share a key)."""

    def __init__(self, url: str, schema: str = "sovra_audit") -> None:
        if not _SCHEMA_NAME.match(schema):
            raise StoreError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
        self._url = url
        self._s = schema
        self._lock = threading.RLock()
        self._conn = self._connect()
        s = schema
        with self._lock, self._conn.transaction():
            # IF NOT EXISTS is not safe against a concurrent CREATE (a unique violation in the
            # catalog): replicas starting together on a fresh database take turns here.
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (ddl_lock_name(s),))
            self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL)"
            )
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.entries (idx bigint PRIMARY KEY, data bytea NOT NULL)"
            )
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.nodes (k bigint PRIMARY KEY, hash bytea NOT NULL)"
            )
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.checkpoints (size bigint PRIMARY KEY, "
                "note text NOT NULL, signatures int NOT NULL)"
            )
            self._conn.execute(
                f"INSERT INTO {s}.meta (key, value) VALUES ('size', '0') ON CONFLICT DO NOTHING"
            )

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            return psycopg.connect(self._url, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the audit database: {_first_line(exc)}") from None

    def _reconnect(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()
        self._conn = self._connect()

    def _retry(self, call: Callable[[], _T]) -> _T:
        """Run `call` (under the lock); once more on a fresh connection if the old one was lost."""
        with self._lock:
            try:
                return call()
            except _LOST:
                self._reconnect()
            try:
                return call()
            except _LOST as exc:
                raise StoreError(f"the audit database was lost: {_first_line(exc)}") from None

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._retry(lambda: self._conn.execute(sql, params).fetchall())

    def _exec(self, sql: str, params: Sequence[object] = ()) -> None:
        self._retry(lambda: self._conn.execute(sql, params))

    def get_meta(self, key: str) -> str | None:
        rows = self._rows(f"SELECT value FROM {self._s}.meta WHERE key = %s", (key,))
        return None if not rows else str(rows[0][0])

    def init_meta(self, key: str, value: str) -> str:
        self._exec(
            f"INSERT INTO {self._s}.meta (key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (key, value),
        )
        stored = self.get_meta(key)
        assert stored is not None
        return stored

    def set_meta(self, key: str, value: str) -> None:
        self._exec(
            f"INSERT INTO {self._s}.meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (key, value),
        )

    def size(self) -> int:
        value = self.get_meta("size")
        return int(value) if value else 0

    def _get_nodes(self, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
        keys = sorted({node_key(n) for n in nodes})
        if not keys:
            return {}
        rows = self._conn.execute(
            f"SELECT k, hash FROM {self._s}.nodes WHERE k = ANY(%s)", (keys,)
        ).fetchall()
        return {key_node(int(k)): bytes(h) for k, h in rows}

    def get_nodes(self, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
        wanted = list(nodes)
        return self._retry(lambda: self._get_nodes(wanted))

    def append(self, entries: Sequence[bytes], plan: Planner) -> int:
        with self._lock:
            committing: list[int] = []
            try:
                return self._append(entries, plan, committing)
            except _LOST:
                self._reconnect()
            if committing and self._landed(committing[0], entries):
                # The connection died in the COMMIT, after the server had made it durable.
                return committing[0]
            # Cut off before COMMIT: PostgreSQL rolled the whole transaction back.
            try:
                return self._append(entries, plan, [])
            except _LOST as exc:
                raise StoreError(f"the audit database was lost: {_first_line(exc)}") from None

    def _landed(self, size: int, entries: Sequence[bytes]) -> bool:
        rows = self._conn.execute(
            f"SELECT data FROM {self._s}.entries WHERE idx >= %s AND idx < %s ORDER BY idx",
            (size, size + len(entries)),
        ).fetchall()
        return [bytes(r[0]) for r in rows] == list(entries)

    def _append(self, entries: Sequence[bytes], plan: Planner, committing: list[int]) -> int:
        s = self._s
        with self._conn.transaction():
            row = self._conn.execute(
                f"SELECT value FROM {s}.meta WHERE key = 'size' FOR UPDATE"
            ).fetchone()
            size = int(row[0]) if row else 0
            result = plan(size, self._get_nodes)
            new_size = size + len(entries)
            nodes = list(result.nodes.items())
            # One pipelined round trip for all writes: under CPU contention every round trip to
            # the server costs a context switch, and they dominated the commit time.
            with self._conn.pipeline():
                self._conn.execute(
                    f"INSERT INTO {s}.entries (idx, data) "
                    "SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
                    (list(range(size, new_size)), list(entries)),
                )
                self._conn.execute(
                    f"INSERT INTO {s}.nodes (k, hash) SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
                    ([node_key(n) for n, _ in nodes], [h for _, h in nodes]),
                )
                self._conn.execute(
                    f"UPDATE {s}.meta SET value = %s WHERE key = 'size'", (str(new_size),)
                )
                self._conn.execute(
                    f"INSERT INTO {s}.checkpoints (size, note, signatures) VALUES (%s, %s, %s) "
                    "ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note, "
                    "signatures = EXCLUDED.signatures",
                    (new_size, result.checkpoint, signature_count(result.checkpoint)),
                )
                if result.drop_checkpoint is not None:
                    self._conn.execute(
                        f"DELETE FROM {s}.checkpoints WHERE size = %s AND signatures = 1",
                        (result.drop_checkpoint,),
                    )
            # Every write went through; leaving the block sends COMMIT. A lost connection from
            # here on may or may not have committed (append checks which).
            committing.append(size)
        return size

    def level_range(self, level: int, start: int, end: int) -> list[tuple[int, bytes]]:
        lo, hi = node_key((level, start)), node_key((level, 0)) + end
        rows = self._rows(
            f"SELECT k, hash FROM {self._s}.nodes WHERE k >= %s AND k < %s ORDER BY k", (lo, hi)
        )
        return [(key_node(int(k))[1], bytes(h)) for k, h in rows]

    def entries(self, start: int, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        pos = start
        while True:
            limit = _BATCH if end is None else min(_BATCH, end - pos)
            if limit <= 0:
                return
            rows = self._rows(
                f"SELECT idx, data FROM {self._s}.entries WHERE idx >= %s ORDER BY idx LIMIT %s",
                (pos, limit),
            )
            if not rows:
                return
            for idx, data in rows:
                if end is not None and int(idx) >= end:
                    return
                yield int(idx), bytes(data)
            pos = int(rows[-1][0]) + 1

    def entry_range(self, start: int, end: int) -> list[bytes]:
        rows = self._rows(
            f"SELECT data FROM {self._s}.entries WHERE idx >= %s AND idx < %s ORDER BY idx",
            (start, end),
        )
        return [bytes(r[0]) for r in rows]

    def node_range(self, level: int, start: int, end: int) -> list[bytes]:
        lo, hi = node_key((level, start)), node_key((level, 0)) + end
        rows = self._rows(
            f"SELECT hash FROM {self._s}.nodes WHERE k >= %s AND k < %s ORDER BY k", (lo, hi)
        )
        return [bytes(r[0]) for r in rows]

    def checkpoints(self) -> list[tuple[int, str]]:
        rows = self._rows(f"SELECT size, note FROM {self._s}.checkpoints ORDER BY size")
        return [(int(s), str(n)) for s, n in rows]

    def checkpoint_at(self, size: int) -> str | None:
        rows = self._rows(f"SELECT note FROM {self._s}.checkpoints WHERE size = %s", (size,))
        return None if not rows else str(rows[0][0])

    def latest_checkpoint(self) -> tuple[int, str] | None:
        rows = self._rows(
            f"SELECT size, note FROM {self._s}.checkpoints ORDER BY size DESC LIMIT 1"
        )
        return None if not rows else (int(rows[0][0]), str(rows[0][1]))

    def put_checkpoint(self, size: int, note: str) -> None:
        self._exec(
            f"INSERT INTO {self._s}.checkpoints (size, note, signatures) VALUES (%s, %s, %s) "
            "ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note, signatures = EXCLUDED.signatures",
            (size, note, signature_count(note)),
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
