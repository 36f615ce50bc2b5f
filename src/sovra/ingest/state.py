"""Sync state per source: what version of each document is indexed, what failed. SQLite (WAL,
`<home>/state.db`) by default; the `sovra_sync` schema of the shared PostgreSQL database with
`[workspace] database_url` (replicas and ingestion workers then see one state).

Tables:
  documents(source, external_id, version, status, error, chunk_count, synced_at, pipeline)
      one row per document the last syncs saw; status is `ok` (indexed), `failed` (error
      holds the reason: needs action) or `skipped` (nothing to index, e.g. a redirect page
      with front matter only; error holds why: fine as it is); `pipeline` names the embedding
      model and chunking settings
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
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    union,
)
from sqlalchemy.exc import SQLAlchemyError

from sovra.errors import Unavailable
from sovra.storage import missing_columns, store_engine, upsert

SCHEMA_VERSION = "1"
SCHEMA = "sovra_sync"

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"

metadata = MetaData()
meta_t = Table(
    "meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
documents_t = Table(
    "documents",
    metadata,
    Column("source", Text, primary_key=True),
    Column("external_id", Text, primary_key=True),
    Column("version", Text, nullable=False),
    Column(
        "status", Text, CheckConstraint("status IN ('ok', 'failed', 'skipped')"), nullable=False
    ),
    Column("error", Text),
    Column("chunk_count", Integer, nullable=False, server_default="0"),
    Column("synced_at", Text, nullable=False),
    Column("pipeline", Text, nullable=False, server_default=""),
    Index("documents_status", "source", "status"),
)
reports_t = Table(
    "reports",
    metadata,
    Column("source", Text, primary_key=True),
    Column("finished_at", Text, nullable=False),
    Column("report", Text, nullable=False),
)


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


def _allow_skipped(conn: Connection) -> None:
    """A SQLite store made before `skipped` existed has a CHECK that refuses it; SQLite cannot
    alter a CHECK, so the table is rebuilt once, rows kept, inside the caller's transaction.
    (Shared-database stores were never made with the old CHECK.)"""
    if conn.dialect.name != "sqlite":
        return
    found = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type='table' AND name='documents'"
    ).scalar()
    if found is None or "'skipped'" in found:
        return
    conn.exec_driver_sql("ALTER TABLE documents RENAME TO documents_before_skipped")
    conn.exec_driver_sql("DROP INDEX IF EXISTS documents_status")
    documents_t.create(conn)
    conn.exec_driver_sql(
        "INSERT INTO documents (source, external_id, version, status, error, chunk_count,"
        " synced_at, pipeline) SELECT source, external_id, version, status, error,"
        " chunk_count, synced_at, pipeline FROM documents_before_skipped"
    )
    conn.exec_driver_sql("DROP TABLE documents_before_skipped")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class StateStore:
    """One database; safe to share between threads (each call is its own transaction)."""

    def __init__(self, target: Path | str | Engine) -> None:
        self.path = target if isinstance(target, Path) else None
        where = target if isinstance(target, Path) else "the shared database"
        self._lock = threading.RLock()
        try:
            self.engine = store_engine(target, SCHEMA, metadata)
            with self.engine.begin() as conn:
                # A store from before the column existed.
                missing_columns(conn, "documents", {"pipeline": "TEXT NOT NULL DEFAULT ''"})
                _allow_skipped(conn)
                row = conn.scalar(select(meta_t.c.value).where(meta_t.c.key == "schema"))
                if row is None:
                    conn.execute(insert(meta_t).values(key="schema", value=SCHEMA_VERSION))
        except SQLAlchemyError as exc:
            raise StateError(f"cannot open sync state {where}: {exc}") from None
        if row is not None and row != SCHEMA_VERSION:
            raise StateError(
                f"sync state {where} has schema {row}, this sovra expects {SCHEMA_VERSION}"
            )

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One atomic batch of writes: all of it is visible after a crash, or none."""
        with self._lock, self.engine.begin() as conn:
            yield conn

    def versions(self, source: str) -> dict[str, StoredVersion]:
        """external_id → (version, status, pipeline) for every stored document of the source."""
        d = documents_t
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(d.c.external_id, d.c.version, d.c.status, d.c.pipeline).where(
                    d.c.source == source
                )
            ).all()
        return {r[0]: StoredVersion(r[1], r[2], r[3]) for r in rows}

    def _put(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self.transaction() as conn:
            stmt = upsert(conn, documents_t, ["source", "external_id"]).many(list(rows[0]))
            conn.execute(stmt, rows)

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
        self._put(
            [
                {
                    "source": source,
                    "external_id": eid,
                    "version": ver,
                    "status": STATUS_OK,
                    "error": None,
                    "chunk_count": n,
                    "synced_at": stamp,
                    "pipeline": pipeline,
                }
                for eid, ver, n in items
            ]
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
        self._put(
            [
                {
                    "source": source,
                    "external_id": eid,
                    "version": ver,
                    "status": status,
                    "error": reason,
                    "chunk_count": 0,
                    "synced_at": stamp,
                    "pipeline": pipeline,
                }
                for eid, ver, reason in items
            ]
        )

    def forget(self, source: str, external_ids: Iterable[str]) -> None:
        d = documents_t
        ids = list(external_ids)
        with self.transaction() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(
                    delete(d).where(
                        d.c.source == source, d.c.external_id.in_(ids[start : start + 500])
                    )
                )

    def forget_source(self, source: str) -> None:
        """Drop all state of a source (after `sovra source remove` deleted its documents)."""
        with self.transaction() as conn:
            conn.execute(delete(documents_t).where(documents_t.c.source == source))
            conn.execute(delete(reports_t).where(reports_t.c.source == source))

    def documents(
        self, source: str, *, status: str | None = None, limit: int | None = None
    ) -> list[DocumentState]:
        d = documents_t
        query = select(
            d.c.source,
            d.c.external_id,
            d.c.version,
            d.c.status,
            d.c.error,
            d.c.chunk_count,
            d.c.synced_at,
            d.c.pipeline,
        ).where(d.c.source == source)
        if status is not None:
            query = query.where(d.c.status == status)
        query = query.order_by(d.c.external_id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            DocumentState(r[0], r[1], r[2], r[3], r[4], r[5], datetime.fromisoformat(r[6]), r[7])
            for r in rows
        ]

    def counts(self, source: str) -> dict[str, int]:
        """Documents and chunks per status: {"ok": n, "failed": n, "skipped": n, "chunks": n}."""
        d = documents_t
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(d.c.status, func.count(), func.sum(d.c.chunk_count))
                .where(d.c.source == source)
                .group_by(d.c.status)
            ).all()
        out = {STATUS_OK: 0, STATUS_FAILED: 0, STATUS_SKIPPED: 0, "chunks": 0}
        for status, n, chunks in rows:
            out[status] = n
            out["chunks"] += int(chunks or 0)
        return out

    def save_report(self, source: str, report: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                upsert(conn, reports_t, ["source"]).values(
                    source=source, finished_at=_now(), report=json.dumps(report, default=str)
                )
            )

    def last_report(self, source: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.scalar(select(reports_t.c.report).where(reports_t.c.source == source))
        if row is None:
            return None
        value = json.loads(row)
        return value if isinstance(value, dict) else None

    def sources(self) -> list[str]:
        query = union(select(documents_t.c.source), select(reports_t.c.source))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return sorted(str(r[0]) for r in rows)

    def close(self) -> None:
        return None  # no connection is held between calls

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
