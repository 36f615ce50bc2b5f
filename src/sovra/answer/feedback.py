"""Ratings of answers by the people who asked them (`<home>/feedback.sqlite`, or the
`sovra_feedback` schema of the shared PostgreSQL database with `[workspace] database_url`).

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

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy import case as sql_case
from sqlalchemy import update as sql_update

from sovra.storage import erasing, erasing_rows, is_sqlite, open_sqlite, store_engine

Rating = Literal["up", "down"]
RATINGS: tuple[str, ...] = ("up", "down")

SCHEMA = "sovra_feedback"
metadata = MetaData()
feedback_t = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False),
    Column("answer_index", Integer, nullable=False),
    Column("rating", Text, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    sqlite_autoincrement=True,
)


@dataclass(frozen=True)
class Feedback:
    """A stored rating and the receipt of its audit entry."""

    id: int
    receipt: dict[str, Any]


class FeedbackStore:
    """Thread-safe; one per workspace."""

    def __init__(self, target: Path | str | Engine, *, legacy: Path | None = None) -> None:
        fresh = isinstance(target, Path) and not target.exists()
        self.path = target if isinstance(target, Path) else None
        self.legacy = legacy
        self._lock = threading.Lock()
        self.engine = store_engine(target, SCHEMA, metadata)
        if fresh and legacy is not None and legacy.is_file():
            self._import_legacy(legacy)

    @classmethod
    def in_home(cls, home: Path, engine: Engine | str | None = None) -> FeedbackStore:
        if engine is not None:  # a shared database never had the account store's old table
            return cls(engine)
        return cls(home / "feedback.sqlite", legacy=home / "server" / "accounts.sqlite")

    def _import_legacy(self, legacy: Path) -> None:
        with self._lock, self.engine.connect() as conn:
            conn.exec_driver_sql("ATTACH DATABASE ? AS legacy", (f"file:{legacy}?mode=ro",))
            try:
                has = conn.exec_driver_sql(
                    "SELECT 1 FROM legacy.sqlite_master WHERE type='table' AND name='feedback'"
                ).fetchone()
                if has:
                    conn.exec_driver_sql(
                        "INSERT INTO feedback(id, user_id, answer_index, rating, comment,"
                        " created_at) SELECT id, user_id, answer_index, rating, comment,"
                        " created_at FROM legacy.feedback"
                    )
                conn.commit()
            finally:
                conn.exec_driver_sql("DETACH DATABASE legacy")

    def add(self, user_id: str, answer_index: int, rating: str, comment: str) -> int:
        if rating not in RATINGS:
            raise ValueError(f"rating {rating!r} is not one of {', '.join(RATINGS)}")
        with self._lock, self.engine.begin() as conn:
            new_id = conn.execute(
                insert(feedback_t)
                .values(
                    user_id=user_id,
                    answer_index=answer_index,
                    rating=rating,
                    comment=comment,
                    created_at=time.time(),
                )
                .returning(feedback_t.c.id)
            ).scalar_one()
        return int(new_id)

    def for_answer(self, answer_index: int) -> list[dict[str, Any]]:
        t = feedback_t.c
        with self._lock, self.engine.connect() as conn:
            rows = conn.execute(
                select(t.id, t.user_id, t.rating, t.comment, t.created_at)
                .where(t.answer_index == answer_index)
                .order_by(t.id)
            ).all()
        return [
            {"id": r[0], "user_id": r[1], "rating": r[2], "comment": r[3], "created_at": r[4]}
            for r in rows
        ]

    def summary(self, *, by_user: bool = False, since: float | None = None) -> list[dict[str, Any]]:
        """Ratings counted (up, down, with a comment) overall or per user, for `sovra report
        usage`; `since`: a Unix time."""
        t = feedback_t.c
        key = t.user_id if by_user else func.min(literal_column("CAST('all' AS TEXT)"))

        def count(cond: Any) -> Any:
            return func.coalesce(func.sum(sql_case((cond, 1), else_=0)), 0)

        stmt = select(
            key, count(t.rating == "up"), count(t.rating == "down"), count(t.comment != "")
        )
        stmt = stmt.where(t.created_at >= (since or 0.0))
        if by_user:
            stmt = stmt.group_by(t.user_id).order_by(t.user_id)
        with self._lock, self.engine.connect() as conn:
            rows = [r for r in conn.execute(stmt).all() if r[0] is not None]
        return [
            {"key": r[0], "up": int(r[1]), "down": int(r[2]), "comments": int(r[3])} for r in rows
        ]

    def erase_user(self, user_id: str, pseudonym: str) -> int:
        """Erasure: the user's ratings stay (counted, by `pseudonym`), their comments go — here
        and in the legacy table of the account store, whose rows were copied here once.
        Returns the rows changed."""
        with self._lock, erasing_rows(self.engine, "feedback") as conn:
            changed = conn.execute(
                sql_update(feedback_t)
                .where(feedback_t.c.user_id == user_id)
                .values(user_id=pseudonym, comment="")
            ).rowcount
        if self.legacy is not None and self.legacy.is_file() and is_sqlite(self.engine):
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
        return None  # no connection is held between calls
