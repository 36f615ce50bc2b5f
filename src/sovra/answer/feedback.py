"""Ratings of answers by the people who asked them (`<home>/feedback.sqlite`).

One row per rating: who, which answer (the audit index of its receipt), up or down, a comment.
The audit log records the same rating with the comment encrypted under the rater's subject key;
this table is what a product owner queries. Stores made before this module kept the table in
the server's account store; its rows are copied here once, on first open.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sovra.storage import erasing, open_sqlite, private_dir

Rating = Literal["up", "down"]
RATINGS: tuple[str, ...] = ("up", "down")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, answer_index INTEGER NOT NULL,
    rating TEXT NOT NULL, comment TEXT NOT NULL, created_at REAL NOT NULL);
"""


@dataclass(frozen=True)
class Feedback:
    """A stored rating and the receipt of its audit entry."""

    id: int
    receipt: dict[str, Any]


class FeedbackStore:
    """Thread-safe; one per workspace."""

    def __init__(self, path: Path, *, legacy: Path | None = None) -> None:
        private_dir(path.parent)
        fresh = not path.exists()
        self.path = path
        self.legacy = legacy
        self._lock = threading.Lock()
        self._db = open_sqlite(path, timeout=30)
        self._db.executescript(_SCHEMA)
        if fresh and legacy is not None and legacy.is_file():
            self._import_legacy(legacy)

    @classmethod
    def in_home(cls, home: Path) -> FeedbackStore:
        return cls(home / "feedback.sqlite", legacy=home / "server" / "accounts.sqlite")

    def _import_legacy(self, legacy: Path) -> None:
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS legacy", (f"file:{legacy}?mode=ro",))
            try:
                has = self._db.execute(
                    "SELECT 1 FROM legacy.sqlite_master WHERE type='table' AND name='feedback'"
                ).fetchone()
                if has:
                    self._db.execute(
                        "INSERT INTO feedback(id, user_id, answer_index, rating, comment,"
                        " created_at) SELECT id, user_id, answer_index, rating, comment,"
                        " created_at FROM legacy.feedback"
                    )
            finally:
                self._db.execute("DETACH DATABASE legacy")

    def add(self, user_id: str, answer_index: int, rating: str, comment: str) -> int:
        if rating not in RATINGS:
            raise ValueError(f"rating {rating!r} is not one of {', '.join(RATINGS)}")
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO feedback(user_id, answer_index, rating, comment, created_at) "
                "VALUES (?,?,?,?,?)",
                (user_id, answer_index, rating, comment, time.time()),
            )
        return int(cur.lastrowid or 0)

    def for_answer(self, answer_index: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, user_id, rating, comment, created_at FROM feedback"
                " WHERE answer_index=? ORDER BY id",
                (answer_index,),
            ).fetchall()
        return [
            {"id": r[0], "user_id": r[1], "rating": r[2], "comment": r[3], "created_at": r[4]}
            for r in rows
        ]

    def summary(self, *, by_user: bool = False, since: float | None = None) -> list[dict[str, Any]]:
        """Ratings counted (up, down, with a comment) overall or per user, for `sovra report
        usage`; `since`: a Unix time."""
        key = "user_id" if by_user else "'all'"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {key}, SUM(rating='up'), SUM(rating='down'), SUM(comment != '')"
                " FROM feedback WHERE created_at >= ? GROUP BY 1 ORDER BY 1",
                (since or 0.0,),
            ).fetchall()
        return [{"key": r[0], "up": r[1], "down": r[2], "comments": r[3]} for r in rows]

    def erase_user(self, user_id: str, pseudonym: str) -> int:
        """Erasure: the user's ratings stay (counted, by `pseudonym`), their comments go — here
        and in the legacy table of the account store, whose rows were copied here once.
        Returns the rows changed."""
        with self._lock, erasing(self._db) as db:
            changed = db.execute(
                "UPDATE feedback SET user_id = ?, comment = '' WHERE user_id = ?",
                (pseudonym, user_id),
            ).rowcount
        if self.legacy is not None and self.legacy.is_file():
            legacy = open_sqlite(self.legacy, timeout=30)
            try:
                has = legacy.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='feedback'"
                ).fetchone()
                if has:
                    with erasing(legacy) as db:
                        changed += db.execute(
                            "UPDATE feedback SET user_id = ?, comment = '' WHERE user_id = ?",
                            (pseudonym, user_id),
                        ).rowcount
            finally:
                legacy.close()
        return changed

    def close(self) -> None:
        with self._lock:
            self._db.close()
