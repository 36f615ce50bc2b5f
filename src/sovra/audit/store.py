"""Storage of the log behind one protocol: SQLite (embedded default) and PostgreSQL (server).

A store keeps three things: the entries (leaf bytes by index), every complete-subtree hash
("nodes", keyed level << 48 | index — the unpacked tlog-tiles hashes) and the signed
checkpoints. An append writes entries, new nodes, the new size and the new checkpoint in one
transaction, so a crash leaves either all of it or none. Stores hold no trust: the verifier
recomputes everything they return.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sovra.audit.merkle import NodeId
from sovra.errors import Unavailable
from sovra.storage import open_sqlite, write_transaction

LEVEL_SHIFT = 48

NodeReader = Callable[[Iterable[NodeId]], dict[NodeId, bytes]]


def node_key(node: NodeId) -> int:
    return (node[0] << LEVEL_SHIFT) | node[1]


def key_node(key: int) -> NodeId:
    return key >> LEVEL_SHIFT, key & ((1 << LEVEL_SHIFT) - 1)


@dataclass(frozen=True)
class AppendPlan:
    """What an append adds besides the entries: new node hashes and the signed checkpoint."""

    nodes: dict[NodeId, bytes]
    checkpoint: str
    drop_checkpoint: int | None = None
    """A superseded checkpoint size to forget (unless it carries more than one signature)."""


def signature_count(note: str) -> int:
    return note.count("\n\u2014 ") + note.startswith("\u2014 ")


Planner = Callable[[int, NodeReader], AppendPlan]
"""Called inside the write transaction with the current size and a node reader."""


class StoreError(Unavailable):
    """The store cannot be opened or used (bad URL, unreachable server, wrong schema)."""


class LogStore(Protocol):
    def get_meta(self, key: str) -> str | None: ...

    def init_meta(self, key: str, value: str) -> str:
        """Set `key` unless already set; return the stored value."""
        ...

    def set_meta(self, key: str, value: str) -> None: ...

    def size(self) -> int: ...

    def append(self, entries: Sequence[bytes], plan: Planner) -> int:
        """Durably append; returns the index of the first new entry once committed."""
        ...

    def get_nodes(self, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]: ...

    def level_range(self, level: int, start: int, end: int) -> list[tuple[int, bytes]]:
        """(index, hash) of stored nodes of `level` with start <= index < end, in order."""
        ...

    def entries(self, start: int, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(index, bytes) of stored entries from `start` (to `end`), in index order."""
        ...

    def entry_range(self, start: int, end: int) -> list[bytes]:
        """The bytes of the entries with start <= index < end, in order (gaps just shrink it)."""
        ...

    def node_range(self, level: int, start: int, end: int) -> list[bytes]:
        """The hashes of level-`level` nodes with start <= index < end, in order."""
        ...

    def checkpoints(self) -> list[tuple[int, str]]: ...

    def checkpoint_at(self, size: int) -> str | None: ...

    def latest_checkpoint(self) -> tuple[int, str] | None: ...

    def put_checkpoint(self, size: int, note: str) -> None:
        """Store or replace (e.g. with more cosignatures) the checkpoint for `size`."""
        ...

    def close(self) -> None: ...


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (k INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
  size INTEGER PRIMARY KEY, note TEXT NOT NULL, signatures INTEGER NOT NULL);
"""

_BATCH = 5000


_ROWS_PER_INSERT = 400


def _insert_rows(db: sqlite3.Connection, target: str, rows: list[tuple[int, bytes]]) -> None:
    """Multi-row INSERTs: executemany steps (and drops the GIL) once per row, which under a
    busy producer thread turns each row into a GIL hand-off; a few big statements do not."""
    for i in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[i : i + _ROWS_PER_INSERT]
        marks = ",".join(["(?, ?)"] * len(chunk))
        db.execute(f"INSERT INTO {target} VALUES {marks}", [v for row in chunk for v in row])


class SqliteStore:
    """One SQLite file in WAL mode with synchronous=FULL: a commit is on disk when it returns."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = open_sqlite(path, timeout=30.0, synchronous="FULL", owner_only=True)
            self._db.executescript(_SQLITE_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open the audit database: {exc}") from None
        self.path = path
        self._lock = threading.RLock()

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def init_meta(self, key: str, value: str) -> str:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
        stored = self.get_meta(key)
        assert stored is not None
        return stored

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def size(self) -> int:
        value = self.get_meta("size")
        return int(value) if value else 0

    def _get_nodes(self, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
        keys = sorted({node_key(n) for n in nodes})
        out: dict[NodeId, bytes] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for k, h in self._db.execute(f"SELECT k, hash FROM nodes WHERE k IN ({marks})", chunk):
                out[key_node(int(k))] = bytes(h)
        return out

    def get_nodes(self, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
        with self._lock:
            return self._get_nodes(nodes)

    def append(self, entries: Sequence[bytes], plan: Planner) -> int:
        with self._lock:
            # IMMEDIATE takes the write lock first, so a second process appends after us.
            with write_transaction(self._db) as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'size'").fetchone()
                size = int(row[0]) if row else 0
                result = plan(size, self._get_nodes)
                _insert_rows(
                    db, "entries (idx, data)", [(size + i, e) for i, e in enumerate(entries)]
                )
                _insert_rows(
                    db, "nodes (k, hash)", [(node_key(n), h) for n, h in result.nodes.items()]
                )
                new_size = size + len(entries)
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('size', ?)", (str(new_size),)
                )
                db.execute(
                    "INSERT OR REPLACE INTO checkpoints (size, note, signatures) VALUES (?, ?, ?)",
                    (new_size, result.checkpoint, signature_count(result.checkpoint)),
                )
                if result.drop_checkpoint is not None:
                    db.execute(
                        "DELETE FROM checkpoints WHERE size = ? AND signatures = 1",
                        (result.drop_checkpoint,),
                    )
            return size

    def level_range(self, level: int, start: int, end: int) -> list[tuple[int, bytes]]:
        lo, hi = node_key((level, start)), node_key((level, 0)) + end
        with self._lock:
            rows = self._db.execute(
                "SELECT k, hash FROM nodes WHERE k >= ? AND k < ? ORDER BY k", (lo, hi)
            ).fetchall()
        return [(key_node(int(k))[1], bytes(h)) for k, h in rows]

    def entries(self, start: int, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        pos = start
        while True:
            limit = _BATCH if end is None else min(_BATCH, end - pos)
            if limit <= 0:
                return
            with self._lock:
                rows = self._db.execute(
                    "SELECT idx, data FROM entries WHERE idx >= ? ORDER BY idx LIMIT ?",
                    (pos, limit),
                ).fetchall()
            if not rows:
                return
            for idx, data in rows:
                if end is not None and idx >= end:
                    return
                yield int(idx), bytes(data)
            pos = int(rows[-1][0]) + 1

    def entry_range(self, start: int, end: int) -> list[bytes]:
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
            ).fetchall()
        return [r[0] for r in rows]

    def node_range(self, level: int, start: int, end: int) -> list[bytes]:
        lo, hi = node_key((level, start)), node_key((level, 0)) + end
        with self._lock:
            rows = self._db.execute(
                "SELECT hash FROM nodes WHERE k >= ? AND k < ? ORDER BY k", (lo, hi)
            ).fetchall()
        return [r[0] for r in rows]

    def checkpoints(self) -> list[tuple[int, str]]:
        with self._lock:
            rows = self._db.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
        return [(int(s), str(n)) for s, n in rows]

    def checkpoint_at(self, size: int) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT note FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
        return None if row is None else str(row[0])

    def latest_checkpoint(self) -> tuple[int, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def put_checkpoint(self, size: int, note: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints (size, note, signatures) VALUES (?, ?, ?)",
                (size, note, signature_count(note)),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
