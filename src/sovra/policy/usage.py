"""Usage accounting: every routed model call's endpoint, tokens, cost and latency.

Rows live in `<home>/usage/usage.sqlite` (WAL, one transaction per call) or, with
`[workspace] database_url`, in the `sovra_usage` schema of the shared PostgreSQL database. Cost is computed
at record time from the endpoint's `cost_per_1k_tokens`, so a later price change does not
rewrite history. The principal id is personal data: `erase_principal` replaces it (group
and endpoint totals stay correct) and is meant to run with `sovra erase --subject`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import (
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from sovra.config import EndpointConfig
from sovra.domain import Principal
from sovra.storage import erasing_rows, store_engine

GroupBy = Literal["user", "group", "endpoint"]
ERASED = "erased"

SCHEMA = "sovra_usage"
metadata = MetaData()
usage_t = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Text, nullable=False),
    Column("request_id", Text),
    Column("principal", Text, nullable=False),
    Column("groups", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("jurisdiction", Text, nullable=False),
    Column("tokens_in", Integer, nullable=False),
    Column("tokens_out", Integer, nullable=False),
    Column("cost", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Index("usage_time", "time"),
)
usage_group_t = Table(
    "usage_group",
    metadata,
    Column("usage_id", Integer, ForeignKey("usage.id"), nullable=False),
    Column("name", Text, nullable=False),
    Index("usage_group_usage", "usage_id"),
)


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

    def __init__(self, target: Path | str | Engine) -> None:
        self.path = target if isinstance(target, Path) else None
        self._lock = threading.Lock()
        self.engine = store_engine(target, SCHEMA, metadata)

    @classmethod
    def in_home(cls, home: Path, engine: Engine | str | None = None) -> UsageLedger:
        return cls(engine if engine is not None else home / "usage" / "usage.sqlite")

    def close(self) -> None:
        return None  # no connection is held between calls

    def __enter__(self) -> UsageLedger:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

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
        groups = sorted(principal.groups)
        with self.engine.begin() as conn:
            usage_id = conn.execute(
                insert(usage_t)
                .values(
                    time=when,
                    request_id=request_id,
                    principal=principal.id,
                    groups=",".join(groups),
                    endpoint=endpoint.name,
                    jurisdiction=endpoint.jurisdiction,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    cost=cost,
                    latency_ms=latency_ms,
                )
                .returning(usage_t.c.id)
            ).scalar_one()
            if groups:
                conn.execute(
                    insert(usage_group_t), [{"usage_id": usage_id, "name": g} for g in groups]
                )
        return cost

    def report(self, by: GroupBy = "endpoint", since: datetime | None = None) -> list[UsageRow]:
        u, g = usage_t, usage_group_t
        column = {"user": u.c.principal, "endpoint": u.c.endpoint, "group": g.c.name}[by]
        cost = func.sum(u.c.cost)
        query = select(
            column,
            func.count(),
            func.sum(u.c.tokens_in),
            func.sum(u.c.tokens_out),
            cost,
            func.avg(u.c.latency_ms),
        ).select_from(u.join(g, g.c.usage_id == u.c.id) if by == "group" else u)
        if since is not None:
            query = query.where(u.c.time >= _time(since))
        query = query.group_by(column).order_by(cost.desc(), column)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            UsageRow(str(r[0]), r[1], int(r[2]), int(r[3]), float(r[4]), float(r[5])) for r in rows
        ]

    def erase_principal(self, principal_id: str) -> int:
        """Replace a user's id in every row (and rewrite the file, so the old bytes are gone
        from its free pages and WAL too; on PostgreSQL the table is vacuumed); returns how
        many rows changed."""
        with erasing_rows(self.engine, "usage") as conn:
            return conn.execute(
                update(usage_t)
                .where(usage_t.c.principal == principal_id)
                .values(principal=ERASED, request_id=None)
            ).rowcount

    def totals(self) -> Sequence[int | float]:
        u = usage_t
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(u.c.tokens_in + u.c.tokens_out), 0),
                    func.coalesce(func.sum(u.c.cost), 0),
                )
            ).one()
        return tuple(row)
