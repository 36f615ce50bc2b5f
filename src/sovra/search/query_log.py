"""The query-vector log: the embedding of each search/ask question (never its text), by time.

What drift monitoring (`sovra monitor`) compares between a reference and a current window. It
holds no user id, no query text and no hash of it: only the time, the operation (`search` or
`ask`), the embedding model's name and the vector (float32). Rows older than the retention (the
monitor's reference + current windows) are pruned on write. The file is owner-only (0600) in
`<data dir>/monitor/`; `[govern] log_query_vectors = false` turns the log off.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from sovra.storage import open_sqlite, write_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS query_vector (
  id INTEGER PRIMARY KEY,
  time TEXT NOT NULL,
  operation TEXT NOT NULL,
  model TEXT NOT NULL,
  vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS query_vector_time ON query_vector(time);
"""


def _time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("query-log times must carry a timezone (use UTC)")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class QueryVectorLog:
    """Append-only query embeddings with time-window reads (see the module docstring)."""

    def __init__(self, path: Path, *, retention_days: float | None = None) -> None:
        self.path = path
        self.retention_days = retention_days
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # secure_delete: pruned vectors are overwritten, not left in free pages.
        self._db = open_sqlite(path, owner_only=True, secure_delete=True)
        os.chmod(path, 0o600)
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_home(cls, home: Path, *, retention_days: float | None = None) -> QueryVectorLog:
        return cls(home / "monitor" / "queries.sqlite", retention_days=retention_days)

    def close(self) -> None:
        self._db.close()

    def add(
        self, operation: str, model: str, vector: np.ndarray, *, time: datetime | None = None
    ) -> None:
        when = time or datetime.now(UTC)
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        with self._lock, write_transaction(self._db) as db:
            db.execute(
                "INSERT INTO query_vector (time, operation, model, vector) VALUES (?,?,?,?)",
                (_time(when), operation, model, blob),
            )
            if self.retention_days is not None:
                cutoff = when - timedelta(days=self.retention_days)
                db.execute("DELETE FROM query_vector WHERE time < ?", (_time(cutoff),))

    def vectors(self, since: datetime, until: datetime, *, model: str | None = None) -> np.ndarray:
        """The vectors logged in [since, until) (of one model, if named), as an (n, d) array;
        rows of another dimension than the first are left out (the model was changed)."""
        sql = "SELECT vector FROM query_vector WHERE time >= ? AND time < ?"
        args: list[str] = [_time(since), _time(until)]
        if model is not None:
            sql += " AND model = ?"
            args.append(model)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        vecs = [np.frombuffer(r[0], dtype=np.float32) for r in rows]
        if not vecs:
            return np.zeros((0, 0), dtype=np.float32)
        dim = vecs[0].shape[0]
        return np.vstack([v for v in vecs if v.shape[0] == dim])

    def count(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM query_vector").fetchone()
        return int(row[0])
