"""The query-vector log: the embedding of each search/ask question (never its text), by time.

What drift monitoring (`sovra monitor`) compares between a reference and a current window. It
holds no user id, no query text and no hash of it: only the time, the operation (`search` or
`ask`), the embedding model's name and the vector (float32). Rows older than the retention (the
monitor's reference + current windows) are pruned on write. The file is owner-only (0600) in
`<data dir>/monitor/`, or the `sovra_monitor` schema of the shared PostgreSQL database with
`[workspace] database_url` (so drift is measured over every replica's questions);
`[govern] log_query_vectors = false` turns the log off.

Writes are buffered: `add` costs a list append on the request's thread, and the rows reach the
store in one transaction within `FLUSH_S` (a timer), on `flush`, on any read through the same
log, or on `close`. One transaction per second instead of one per question took ~1 ms of CPU
off every search (a commit and a prune each). The price: a process killed without `close` loses
at most the last second's vectors, which drift statistics over days do not notice.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Column,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    delete,
    event,
    func,
    insert,
    select,
)

from sovra.storage import is_sqlite, store_engine

log = logging.getLogger(__name__)

SCHEMA = "sovra_monitor"
FLUSH_S = 1.0
"""How long an added vector may wait in memory before it is written."""
MAX_PENDING = 10_000
"""Rows kept in memory while the store cannot be written; older ones are dropped past this."""
metadata = MetaData()
query_vector_t = Table(
    "query_vector",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("time", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Index("query_vector_time", "time"),
)


def _secure_delete(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA secure_delete=ON")


def _time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("query-log times must carry a timezone (use UTC)")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class QueryVectorLog:
    """Append-only query embeddings with time-window reads (see the module docstring)."""

    def __init__(self, target: Path | str | Engine, *, retention_days: float | None = None) -> None:
        self.path = target if isinstance(target, Path) else None
        self.retention_days = retention_days
        self._lock = threading.Lock()  # one writer or reader of the store at a time
        self._pending_lock = threading.Lock()
        self._pending: list[tuple[datetime, dict[str, Any]]] = []
        self._timer: threading.Timer | None = None
        self.dropped = 0
        """Vectors dropped because the store could not be written (see MAX_PENDING)."""
        # engine_for makes a SQLite file owner-only (0600); every search and ask appends here,
        # so the file's connections are kept open (`keep_open`).
        self.engine = store_engine(target, SCHEMA, metadata, keep_open=True)
        if is_sqlite(self.engine):
            # secure_delete: pruned vectors are overwritten, not left in free pages (the
            # listener runs on every new connection of the pool).
            event.listen(self.engine, "connect", _secure_delete)

    @classmethod
    def in_home(
        cls,
        home: Path,
        *,
        retention_days: float | None = None,
        engine: Engine | str | None = None,
    ) -> QueryVectorLog:
        target = engine if engine is not None else home / "monitor" / "queries.sqlite"
        return cls(target, retention_days=retention_days)

    def close(self) -> None:
        self.flush()
        if is_sqlite(self.engine):  # a shared database's pool belongs to the process
            self.engine.dispose()

    def add(
        self, operation: str, model: str, vector: np.ndarray, *, time: datetime | None = None
    ) -> None:
        """Log one vector; it is written within FLUSH_S (see the module docstring)."""
        when = time or datetime.now(UTC)
        row = {
            "time": _time(when),  # checks the timezone here, where the caller can see it
            "operation": operation,
            "model": model,
            "vector": np.asarray(vector, dtype=np.float32).tobytes(),
        }
        with self._pending_lock:
            self._pending.append((when, row))
            if len(self._pending) > MAX_PENDING:
                del self._pending[0]
                self.dropped += 1
            if self._timer is None:
                self._schedule()

    def _schedule(self) -> None:
        """Start the timer that writes the buffer (the caller holds `_pending_lock`)."""
        self._timer = threading.Timer(FLUSH_S, self._flush_in_background)
        self._timer.daemon = True
        self._timer.start()

    def flush(self) -> None:
        """Write the buffered vectors now, in one transaction, and prune what the retention
        no longer keeps; raises when the store cannot be written (the rows stay buffered)."""
        with self._lock:
            with self._pending_lock:
                pending, self._pending = self._pending, []
                if self._timer is not None and self._timer is not threading.current_thread():
                    self._timer.cancel()
                self._timer = None
            if not pending:
                return
            t = query_vector_t
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(t), [row for _, row in pending])
                    if self.retention_days is not None:
                        # What each write would have pruned, at once: the latest cutoff wins.
                        latest = max(when for when, _ in pending)
                        cutoff = latest - timedelta(days=self.retention_days)
                        conn.execute(delete(t).where(t.c.time < _time(cutoff)))
            except BaseException:
                with self._pending_lock:
                    self._pending[:0] = pending
                    excess = len(self._pending) - MAX_PENDING
                    if excess > 0:
                        del self._pending[:excess]
                        self.dropped += excess
                raise

    def _flush_in_background(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # the next add, read or close tries again
            log.warning("query-vector log: cannot write (%s); will retry", type(exc).__name__)
            with self._pending_lock:
                if self._pending and self._timer is None:
                    self._schedule()

    def vectors(self, since: datetime, until: datetime, *, model: str | None = None) -> np.ndarray:
        """The vectors logged in [since, until) (of one model, if named), as an (n, d) array;
        rows of another dimension than the first are left out (the model was changed)."""
        t = query_vector_t.c
        stmt = select(t.vector).where(t.time >= _time(since), t.time < _time(until))
        if model is not None:
            stmt = stmt.where(t.model == model)
        self.flush()
        with self._lock, self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(t.id)).all()
        vecs = [np.frombuffer(bytes(r[0]), dtype=np.float32) for r in rows]
        if not vecs:
            return np.zeros((0, 0), dtype=np.float32)
        dim = vecs[0].shape[0]
        return np.vstack([v for v in vecs if v.shape[0] == dim])

    def count(self) -> int:
        self.flush()
        with self._lock, self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(query_vector_t)).scalar_one())
