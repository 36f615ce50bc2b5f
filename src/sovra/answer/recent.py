"""Each user's recent questions (`<home>/recent-questions.sqlite`), shown back to that user
alone on the Ask page.

The question text is personal data: rows are keyed by the asker's id, read only for that id
(the workspace passes the principal's own), bounded per user, and `sovra erase` deletes a
user's rows for good (secure delete, VACUUM, WAL truncated).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sovra.storage import erasing, open_sqlite, private_dir, write_transaction

KEEP_PER_USER = 20
"""Questions kept per user; older ones are deleted as new ones arrive."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recent (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, question TEXT NOT NULL,
    asked_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS recent_user ON recent (user_id, id);
"""


class RecentQuestions:
    """Thread-safe; one per workspace."""

    def __init__(self, path: Path, *, keep: int = KEEP_PER_USER) -> None:
        private_dir(path.parent)
        self.path = path
        self.keep = keep
        self._lock = threading.Lock()
        self._db = open_sqlite(path, timeout=30)
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_home(cls, home: Path) -> RecentQuestions:
        return cls(home / "recent-questions.sqlite")

    def add(self, user_id: str, question: str) -> None:
        """Remember `question` as the user's newest (an earlier identical one moves up)."""
        with self._lock, write_transaction(self._db) as db:
            db.execute("DELETE FROM recent WHERE user_id=? AND question=?", (user_id, question))
            db.execute(
                "INSERT INTO recent(user_id, question, asked_at) VALUES (?,?,?)",
                (user_id, question, time.time()),
            )
            db.execute(
                "DELETE FROM recent WHERE user_id=? AND id NOT IN"
                " (SELECT id FROM recent WHERE user_id=? ORDER BY id DESC LIMIT ?)",
                (user_id, user_id, self.keep),
            )

    def of_user(self, user_id: str, limit: int = 10) -> list[str]:
        """The user's own recent questions, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT question FROM recent WHERE user_id=? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def erase_user(self, user_id: str) -> int:
        """Erasure: delete every question of the user for good; returns the rows deleted."""
        with self._lock, erasing(self._db) as db:
            return int(db.execute("DELETE FROM recent WHERE user_id=?", (user_id,)).rowcount)

    def close(self) -> None:
        with self._lock:
            self._db.close()
