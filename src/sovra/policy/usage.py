"""Usage accounting: every routed model call's endpoint, tokens, cost and latency.

Rows live in `<home>/usage/usage.sqlite` (WAL, one INSERT per call, atomic). Cost is computed
at record time from the endpoint's `cost_per_1k_tokens`, so a later price change does not
rewrite history. The principal id is personal data: `erase_principal` replaces it (group
and endpoint totals stay correct) and is meant to run with `sovra erase --subject`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sovra.config import EndpointConfig
from sovra.domain import Principal
from sovra.storage import erasing, open_sqlite, write_transaction

GroupBy = Literal["user", "group", "endpoint"]
ERASED = "erased"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
  id INTEGER PRIMARY KEY,
  time TEXT NOT NULL,
  request_id TEXT,
  principal TEXT NOT NULL,
  groups TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  jurisdiction TEXT NOT NULL,
  tokens_in INTEGER NOT NULL CHECK (tokens_in >= 0),
  tokens_out INTEGER NOT NULL CHECK (tokens_out >= 0),
  cost REAL NOT NULL,
  latency_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_time ON usage(time);
CREATE TABLE IF NOT EXISTS usage_group (
  usage_id INTEGER NOT NULL REFERENCES usage(id),
  name TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_group_usage ON usage_group(usage_id);
"""


@dataclass(frozen=True)
class UsageRow:
    key: str
    calls: int
    tokens_in: int
    tokens_out: int
    cost: float
    latency_ms_avg: float

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "calls": self.calls,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": round(self.cost, 6),
            "latency_ms_avg": round(self.latency_ms_avg, 1),
        }


def _time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("usage times must carry a timezone (use UTC)")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class UsageLedger:
    """Append-only usage records with grouped reports."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_sqlite(path, foreign_keys=True)
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_home(cls, home: Path) -> UsageLedger:
        return cls(home / "usage" / "usage.sqlite")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> UsageLedger:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, write_transaction(self._db) as db:
            yield db

    def record(
        self,
        principal: Principal,
        endpoint: EndpointConfig,
        *,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        request_id: str | None = None,
        time: datetime | None = None,
    ) -> float:
        """Record one call; returns its cost."""
        if tokens_in < 0 or tokens_out < 0:
            raise ValueError("token counts cannot be negative")
        cost = (tokens_in + tokens_out) / 1000 * endpoint.cost_per_1k_tokens
        when = _time(time or datetime.now(UTC))
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO usage (time, request_id, principal, groups, endpoint, jurisdiction,"
                " tokens_in, tokens_out, cost, latency_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    when,
                    request_id,
                    principal.id,
                    ",".join(sorted(principal.groups)),
                    endpoint.name,
                    endpoint.jurisdiction,
                    tokens_in,
                    tokens_out,
                    cost,
                    latency_ms,
                ),
            )
            db.executemany(
                "INSERT INTO usage_group (usage_id, name) VALUES (?, ?)",
                [(cursor.lastrowid, g) for g in sorted(principal.groups)],
            )
        return cost

    def report(self, by: GroupBy = "endpoint", since: datetime | None = None) -> list[UsageRow]:
        column = {"user": "u.principal", "endpoint": "u.endpoint", "group": "g.name"}[by]
        join = " JOIN usage_group g ON g.usage_id = u.id" if by == "group" else ""
        where, params = "", []
        if since is not None:
            where, params = " WHERE u.time >= ?", [_time(since)]
        sql = (
            f"SELECT {column}, COUNT(*), SUM(u.tokens_in), SUM(u.tokens_out), SUM(u.cost),"
            f" AVG(u.latency_ms) FROM usage u{join}{where} GROUP BY {column}"
            " ORDER BY SUM(u.cost) DESC, 1"
        )
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [UsageRow(str(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def erase_principal(self, principal_id: str) -> int:
        """Replace a user's id in every row (and rewrite the file, so the old bytes are gone
        from its free pages and WAL too); returns how many rows changed."""
        with self._lock, erasing(self._db) as db:
            cursor = db.execute(
                "UPDATE usage SET principal = ?, request_id = NULL WHERE principal = ?",
                (ERASED, principal_id),
            )
        return cursor.rowcount

    def totals(self) -> Sequence[int | float]:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(tokens_in + tokens_out), 0),"
                " COALESCE(SUM(cost), 0) FROM usage"
            ).fetchone()
        return tuple(row)
