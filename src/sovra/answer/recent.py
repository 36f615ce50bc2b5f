"""Each user's recent questions (`<home>/recent-questions.sqlite`, or the `sovra_recent`
schema of the shared PostgreSQL database with `[workspace] database_url`), shown back to that
user alone on the Ask page.

The question text is personal data: rows are keyed by the asker's id, read only for that id
(the workspace passes the principal's own), bounded per user, and `sovra erase` deletes a
user's rows for good (secure delete, VACUUM, WAL truncated).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    insert,
    select,
)

from sovra.storage import erasing_rows, is_sqlite, store_engine

KEEP_PER_USER = 20
"""Questions kept per user; older ones are deleted as new ones arrive."""

SCHEMA = "sovra_recent"
metadata = MetaData()
recent_t = Table(
    "recent",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False),
    Column("question", Text, nullable=False),
    Column("asked_at", Float, nullable=False),
    Index("recent_user", "user_id", "id"),
    sqlite_autoincrement=True,
)


class RecentQuestions:
    """Thread-safe; one per workspace."""

    def __init__(self, target: Path | str | Engine, *, keep: int = KEEP_PER_USER) -> None:
        self.path = target if isinstance(target, Path) else None
        self.keep = keep
        self._lock = threading.Lock()
        # Every ask appends here: the SQLite file's connections are kept open (`keep_open`).
        self.engine = store_engine(target, SCHEMA, metadata, keep_open=True)

    @classmethod
    def in_home(cls, home: Path, engine: Engine | str | None = None) -> RecentQuestions:
        return cls(engine if engine is not None else home / "recent-questions.sqlite")

    def add(self, user_id: str, question: str) -> None:
        """Remember `question` as the user's newest (an earlier identical one moves up)."""
        t = recent_t.c
        mine = t.user_id == user_id
        with self._lock, self.engine.begin() as conn:
            conn.execute(delete(recent_t).where(mine, t.question == question))
            conn.execute(
                insert(recent_t).values(user_id=user_id, question=question, asked_at=time.time())
            )
            kept = select(t.id).where(mine).order_by(t.id.desc()).limit(self.keep)
            conn.execute(delete(recent_t).where(mine, t.id.not_in(kept)))

    def of_user(self, user_id: str, limit: int = 10) -> list[str]:
        """The user's own recent questions, newest first."""
        t = recent_t.c
        with self._lock, self.engine.connect() as conn:
            rows = conn.execute(
                select(t.question).where(t.user_id == user_id).order_by(t.id.desc()).limit(limit)
            ).all()
        return [r[0] for r in rows]

    def erase_user(self, user_id: str) -> int:
        """Erasure: delete every question of the user for good; returns the rows deleted."""
        with self._lock, erasing_rows(self.engine, "recent") as conn:
            return int(conn.execute(delete(recent_t).where(recent_t.c.user_id == user_id)).rowcount)

    def close(self) -> None:
        if is_sqlite(self.engine):  # a shared database's pool belongs to the process
            self.engine.dispose()
