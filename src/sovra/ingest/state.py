"""Sync state per source in SQLite (WAL): what version of each document is indexed, what failed.

Tables:
  documents(source, external_id, version, status, error, chunk_count, synced_at, pipeline)
      one row per document the last syncs saw; status is `ok` (indexed), `failed` (error
      holds the reason: needs action) or `skipped` (nothing to index, e.g. a redirect page
      with front matter only; error holds why: fine as it is); `pipeline` names the embedding model and chunking settings
      the chunks were made with, so changing either re-indexes; key (source, external_id).
  reports(source, finished_at, report)
      the last SyncReport of each source as JSON, for `sovra source show`.
  meta(key, value)
      schema version.

The pipeline writes the index first and this store second, in batches; after a crash the
store may lag the index by the in-flight batch, never lead it, so a re-run redoes at most
those documents (index replace is idempotent) and loses nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sovra.errors import Unavailable
from sovra.storage import open_sqlite, write_transaction

SCHEMA_VERSION = "1"

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'skipped')),
    error TEXT,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    synced_at TEXT NOT NULL,
    pipeline TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (source, external_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS documents_status ON documents (source, status);
CREATE TABLE IF NOT EXISTS reports (
    source TEXT PRIMARY KEY,
    finished_at TEXT NOT NULL,
    report TEXT NOT NULL
);
"""


class StateError(Unavailable):
    """The state database cannot be opened or is from a newer sovra."""


class StoredVersion(NamedTuple):
    """What the pipeline compares a listed item against."""

    version: str
    status: str
    pipeline: str


@dataclass(frozen=True)
class DocumentState:
    """The stored state of one document of one source."""

    source: str
    external_id: str
    version: str
    status: str
    error: str | None
    chunk_count: int
    synced_at: datetime
    pipeline: str = ""


def _allow_skipped(db: sqlite3.Connection) -> None:
    """A store made before `skipped` existed has a CHECK that refuses it; SQLite cannot alter a
    CHECK, so the table is rebuilt once, rows kept, in one transaction."""
    row = db.execute(
        "SELECT sql FROM sqlite_master WHERE type='table' AND name='documents'"
    ).fetchone()
    if row is None or "'skipped'" in row[0]:
        return
    create = _SCHEMA.split("CREATE TABLE IF NOT EXISTS documents", 1)[1].split(";", 1)[0]
    with write_transaction(db):
        db.execute("ALTER TABLE documents RENAME TO documents_before_skipped")
        db.execute("CREATE TABLE documents" + create)
        db.execute(
            "INSERT INTO documents SELECT source, external_id, version, status, error,"
            " chunk_count, synced_at, pipeline FROM documents_before_skipped"
        )
        db.execute("DROP TABLE documents_before_skipped")
        db.execute("CREATE INDEX IF NOT EXISTS documents_status ON documents (source, status)")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class StateStore:
    """One SQLite file; safe to share between threads of one process (calls are serialised)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # NORMAL is durable against process kills in WAL mode; only power loss can drop
            # the last commits, which a re-sync then redoes.
            self._db = open_sqlite(path, timeout=30, synchronous="NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(documents)")}
            if "pipeline" not in columns:  # a store from before the column existed
                self._db.execute(
                    "ALTER TABLE documents ADD COLUMN pipeline TEXT NOT NULL DEFAULT ''"
                )
            _allow_skipped(self._db)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"cannot open sync state {path}: {exc}") from None
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise StateError(
                f"sync state {path} has schema {row[0]}, this sovra expects {SCHEMA_VERSION}"
            )
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic batch of writes: all of it is visible after a crash, or none."""
        with self._lock, write_transaction(self._db) as db:
            yield db

    def versions(self, source: str) -> dict[str, StoredVersion]:
        """external_id → (version, status, pipeline) for every stored document of the source."""
        with self._lock:
            rows = self._db.execute(
                "SELECT external_id, version, status, pipeline FROM documents WHERE source=?",
                (source,),
            ).fetchall()
        return {r[0]: StoredVersion(r[1], r[2], r[3]) for r in rows}

    def record_ok(
        self,
        source: str,
        items: Iterable[tuple[str, str, int]],
        *,
        pipeline: str = "",
        at: str | None = None,
    ) -> None:
        """Mark (external_id, version, chunk_count) items indexed, in one transaction."""
        stamp = at or _now()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, 'ok', NULL, ?, ?, ?)",
                [(source, eid, ver, n, stamp, pipeline) for eid, ver, n in items],
            )

    def record_failed(
        self,
        source: str,
        items: Iterable[tuple[str, str, str]],
        *,
        pipeline: str = "",
        at: str | None = None,
        status: str = STATUS_FAILED,
    ) -> None:
        """Mark (external_id, version, reason) items failed — or, with `status=STATUS_SKIPPED`,
        skipped (nothing to index) — in one transaction."""
        if status not in (STATUS_FAILED, STATUS_SKIPPED):
            raise ValueError(f"status {status!r} is neither failed nor skipped")
        stamp = at or _now()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                [(source, eid, ver, status, why, stamp, pipeline) for eid, ver, why in items],
            )

    def forget(self, source: str, external_ids: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM documents WHERE source=? AND external_id=?",
                [(source, eid) for eid in external_ids],
            )

    def forget_source(self, source: str) -> None:
        """Drop all state of a source (after `sovra source remove` deleted its documents)."""
        with self.transaction() as db:
            db.execute("DELETE FROM documents WHERE source=?", (source,))
            db.execute("DELETE FROM reports WHERE source=?", (source,))

    def documents(
        self, source: str, *, status: str | None = None, limit: int | None = None
    ) -> list[DocumentState]:
        sql = "SELECT * FROM documents WHERE source=?"
        args: list[Any] = [source]
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        sql += " ORDER BY external_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            DocumentState(r[0], r[1], r[2], r[3], r[4], r[5], datetime.fromisoformat(r[6]), r[7])
            for r in rows
        ]

    def counts(self, source: str) -> dict[str, int]:
        """Documents and chunks per status: {"ok": n, "failed": n, "skipped": n, "chunks": n}."""
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*), SUM(chunk_count) FROM documents WHERE source=? "
                "GROUP BY status",
                (source,),
            ).fetchall()
        out = {STATUS_OK: 0, STATUS_FAILED: 0, STATUS_SKIPPED: 0, "chunks": 0}
        for status, n, chunks in rows:
            out[status] = n
            out["chunks"] += chunks or 0
        return out

    def save_report(self, source: str, report: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO reports VALUES (?, ?, ?)",
                (source, _now(), json.dumps(report, default=str)),
            )

    def last_report(self, source: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT report FROM reports WHERE source=?", (source,)
            ).fetchone()
        if row is None:
            return None
        value = json.loads(row[0])
        return value if isinstance(value, dict) else None

    def sources(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source FROM documents UNION SELECT source FROM reports ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
