"""Run state beside DBOS: runs, step outputs, approvals, votes and kill switches
(`<home>/flows-state.db`, or the `sovra_flows` schema of the shared PostgreSQL database with
`[workspace] database_url`, so every replica sees one run, approval and vote).

DBOS checkpoints each step inside a run segment; this store is what people and later segments
read: the run's status, every step's output (with overrides), the open approval and its votes.
A run is continued in a new DBOS workflow (`<run id>/<segment>`) after an approval, a resume,
an override or a retry, so nothing has to stay in memory while a run waits for a person.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    RowMapping,
    Table,
    Text,
    func,
    insert,
    inspect,
    literal_column,
    select,
    text,
)
from sqlalchemy import case as sql_case
from sqlalchemy import delete as sql_delete
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError

from sovra.flows.base import FlowConflict, FlowNotFound
from sovra.storage import (
    erasing_rows,
    is_sqlite,
    missing_columns,
    store_engine,
    store_schema,
    upsert,
    write_lock,
)

SCHEMA = "sovra_flows"
FILE = "flows-state.db"

# The votes table of stores made before approvals were bound to a digest is rebuilt with this
# (SQLite only: a PostgreSQL store is always made with the current layout).
VOTES = """
CREATE TABLE IF NOT EXISTS votes (
    run_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    round INTEGER NOT NULL DEFAULT 1,
    user_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    outputs_sha256 TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (run_id, step_id, round, user_id)
);
"""

metadata = MetaData()
runs_t = Table(
    "runs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("workflow", Text, nullable=False),
    Column("definition", Text, nullable=False),
    Column("requester", Text, nullable=False),
    Column("inputs", Text, nullable=False),
    Column("labels", Text, nullable=False, server_default="{}"),
    Column("status", Text, nullable=False),
    Column("step_index", Integer, nullable=False, server_default="0"),
    Column("segment", Integer, nullable=False, server_default="1"),
    Column("paused", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Index("runs_status", "status"),
)
steps_t = Table(
    "steps",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("step_id", Text, primary_key=True),
    Column("status", Text, nullable=False),
    Column("output", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("override_by", Text),
    Column("override_reason", Text),
    Column("updated", Float, nullable=False),
)
approvals_t = Table(
    "approvals",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("step_id", Text, primary_key=True),
    Column("grp", Text, nullable=False),
    Column("groups", Text, nullable=False),
    Column("required", Integer, nullable=False),
    Column("escalate_to", Text),
    Column("expiry_hours", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("escalated", Integer, nullable=False, server_default="0"),
    Column("status", Text, nullable=False),
    Column("round", Integer, nullable=False, server_default="1"),
    Column("outputs_sha256", Text),
    # When it was opened: which approval is a run's latest on PostgreSQL, which has no rowid.
    Column("opened", Float),
)
votes_t = Table(
    "votes",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("step_id", Text, primary_key=True),
    Column("round", Integer, primary_key=True, server_default="1"),
    Column("user_id", Text, primary_key=True),
    Column("decision", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("outputs_sha256", Text),
    Column("at", Float, nullable=False),
)
overrides_t = Table(
    "overrides",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("at", Float, nullable=False),
    Index("overrides_run", "run_id"),
)
trigger_state_t = Table(
    "trigger_state",
    metadata,
    Column("workflow", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
switches_t = Table(
    "switches",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("set_by", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", Float, nullable=False),
)
TABLES = ("runs", "steps", "approvals", "votes", "overrides", "trigger_state", "switches")

# Terminal statuses: nothing continues these runs (a failed run may be retried).
FINAL = frozenset({"completed", "rejected", "expired", "cancelled"})
GLOBAL = "*"


@dataclass(frozen=True)
class Run:
    id: str
    workflow: str
    definition: str
    requester: str
    inputs: dict[str, Any]
    status: str
    step_index: int
    segment: int
    paused: bool
    error: str | None
    created: float
    updated: float
    labels: dict[str, Any] = field(default_factory=dict)
    """Governance labels of what the inputs carry (a trigger's documents: id, classification)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow": self.workflow,
            "requester": self.requester,
            "inputs": self.inputs,
            "labels": self.labels,
            "status": self.status,
            "step_index": self.step_index,
            "paused": self.paused,
            "error": self.error,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass(frozen=True)
class StepRecord:
    step_id: str
    status: str
    output: Any
    attempts: int
    error: str | None
    override_by: str | None
    override_reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "status": self.status,
            "output": self.output,
            "attempts": self.attempts,
            "error": self.error,
            "override_by": self.override_by,
            "override_reason": self.override_reason,
        }


@dataclass(frozen=True)
class Approval:
    run_id: str
    step_id: str
    group: str
    groups: tuple[str, ...]
    required: int
    escalate_to: str | None
    expiry_hours: float
    expires_at: float
    escalated: bool
    status: str
    round: int = 1
    outputs_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "round": self.round,
            "outputs_sha256": self.outputs_sha256,
            "group": self.group,
            "groups": list(self.groups),
            "required": self.required,
            "escalate_to": self.escalate_to,
            "expires_at": self.expires_at,
            "escalated": self.escalated,
            "status": self.status,
        }


class FlowStore:
    """Thread-safe: each thread's `transaction` has its own connection; the methods called
    inside it (on that thread) use it, every other call is a short transaction of its own."""

    def __init__(self, target: Path | str | Engine) -> None:
        self.path = target if isinstance(target, Path) else None
        self.engine = store_engine(target, SCHEMA, metadata)
        # Every replica's writers of this store's database take the same advisory lock.
        self._lock_name = f"{store_schema(self.engine) or SCHEMA}.flows"
        self._local = threading.local()
        self._migrate()

    @classmethod
    def in_home(cls, home: Path, url: str | None = None) -> FlowStore:
        """The home's run store, or the shared database's with `[workspace] database_url`."""
        return cls(url if url else home / FILE)

    def _migrate(self) -> None:
        """Stores made before run labels, or before approvals were bound to a digest: add the
        columns (old votes are round 1, bound to nothing, so they count for no new round)."""
        with self.transaction() as conn:
            missing_columns(conn, "runs", {"labels": "TEXT NOT NULL DEFAULT '{}'"})
            missing_columns(conn, "approvals", {"opened": "REAL"})
            if not is_sqlite(self.engine):
                return
            cols = {c["name"] for c in inspect(conn).get_columns("votes")}
            if "round" in cols:
                return
            conn.exec_driver_sql(
                "ALTER TABLE approvals ADD COLUMN round INTEGER NOT NULL DEFAULT 1"
            )
            conn.exec_driver_sql("ALTER TABLE approvals ADD COLUMN outputs_sha256 TEXT")
            conn.exec_driver_sql("ALTER TABLE votes RENAME TO votes_v1")
            conn.exec_driver_sql(VOTES)
            conn.exec_driver_sql(
                "INSERT INTO votes (run_id, step_id, round, user_id, decision, reason, at)"
                " SELECT run_id, step_id, 1, user_id, decision, reason, at FROM votes_v1"
            )
            conn.exec_driver_sql("DROP TABLE votes_v1")

    def close(self) -> None:
        return None  # no connection is held between calls

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One writer at a time across processes and replicas (`storage.write_lock`: BEGIN
        IMMEDIATE on SQLite, an advisory lock on PostgreSQL), so two approvers racing cannot
        both complete a quorum. Nested calls join the outermost, which commits."""
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with write_lock(self.engine, self._lock_name) as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """The thread's open transaction, or a connection of its own for one read."""
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            yield conn

    # -- runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        workflow: str,
        definition: str,
        requester: str,
        inputs: dict[str, Any],
        labels: dict[str, Any] | None = None,
    ) -> None:
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                insert(runs_t).values(
                    id=run_id,
                    workflow=workflow,
                    definition=definition,
                    requester=requester,
                    inputs=json.dumps(inputs),
                    labels=json.dumps(labels or {}),
                    status="running",
                    created=now,
                    updated=now,
                )
            )

    def run(self, run_id: str) -> Run:
        with self._reading() as conn:
            row = conn.execute(select(runs_t).where(runs_t.c.id == run_id)).mappings().first()
        if row is None:
            raise FlowNotFound(f"no flow run {run_id!r}; list runs with `sovra flow runs`")
        return _run(row)

    def runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[Run]:
        stmt = select(runs_t)
        if workflow:
            stmt = stmt.where(runs_t.c.workflow == workflow)
        if status:
            stmt = stmt.where(runs_t.c.status == status)
        stmt = stmt.order_by(runs_t.c.created.desc()).limit(limit)
        with self._reading() as conn:
            return [_run(r) for r in conn.execute(stmt).mappings()]

    def update_run(self, run_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        with self.transaction() as conn:
            conn.execute(sql_update(runs_t).where(runs_t.c.id == run_id).values(**fields))

    def next_segment(self, run_id: str, start: int) -> int:
        """Mark the run running from step `start` in a new segment; returns the segment number."""
        with self.transaction() as conn:
            current = conn.execute(
                select(runs_t.c.segment).where(runs_t.c.id == run_id)
            ).scalar_one()
            segment = int(current) + 1
            conn.execute(
                sql_update(runs_t)
                .where(runs_t.c.id == run_id)
                .values(
                    segment=segment,
                    step_index=start,
                    status="running",
                    error=None,
                    updated=time.time(),
                )
            )
        return segment

    # -- steps --------------------------------------------------------------------------------

    def set_step(
        self,
        run_id: str,
        step_id: str,
        status: str,
        output: Any = None,
        *,
        error: str | None = None,
        attempts: int | None = None,
        override_by: str | None = None,
        override_reason: str | None = None,
    ) -> None:
        with self.transaction() as conn:
            stmt = upsert(conn, steps_t, ["run_id", "step_id"]).insert_values(
                run_id=run_id,
                step_id=step_id,
                status=status,
                output=json.dumps(output),
                attempts=attempts or 0,
                error=error,
                override_by=override_by,
                override_reason=override_reason,
                updated=time.time(),
            )
            changed = {
                k: stmt.excluded[k]
                for k in ("status", "output", "error", "override_by", "override_reason", "updated")
            }
            if attempts is not None:  # None keeps the attempts counted so far
                changed["attempts"] = stmt.excluded.attempts
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["run_id", "step_id"], set_=changed)
            )

    def steps(self, run_id: str) -> dict[str, StepRecord]:
        with self._reading() as conn:
            rows = (
                conn.execute(
                    select(steps_t).where(steps_t.c.run_id == run_id).order_by(steps_t.c.updated)
                )
                .mappings()
                .all()
            )
        return {
            r["step_id"]: StepRecord(
                step_id=r["step_id"],
                status=r["status"],
                output=json.loads(r["output"]) if r["output"] else None,
                attempts=r["attempts"],
                error=r["error"],
                override_by=r["override_by"],
                override_reason=r["override_reason"],
            )
            for r in rows
        }

    # -- approvals ----------------------------------------------------------------------------

    def open_approval(
        self,
        run_id: str,
        step_id: str,
        group: str,
        required: int,
        escalate_to: str | None,
        expiry_hours: float,
        expires_at: float,
        outputs_sha256: str,
    ) -> None:
        """Open (or keep, on a replay) the approval for this run's step, bound to the digest
        of what its approvers are shown."""
        with self.transaction() as conn:
            stmt = upsert(conn, approvals_t, ["run_id", "step_id"]).insert_values(
                run_id=run_id,
                step_id=step_id,
                grp=group,
                groups=json.dumps([group]),
                required=required,
                escalate_to=escalate_to,
                expiry_hours=expiry_hours,
                expires_at=expires_at,
                status="open",
                outputs_sha256=outputs_sha256,
                opened=time.time(),
            )
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["run_id", "step_id"]))

    def approval(self, run_id: str, step_id: str | None = None) -> Approval | None:
        """The run's open approval (or, with none open, its latest one); or one step's."""
        a = approvals_t.c
        stmt = select(approvals_t).where(a.run_id == run_id)
        if step_id is None:
            latest = [a.opened.desc().nulls_last()]
            if is_sqlite(self.engine):  # stores from before `opened`: insertion order
                latest.append(literal_column("rowid").desc())
            stmt = stmt.order_by(sql_case((a.status == "open", 1), else_=0).desc(), *latest)
            stmt = stmt.limit(1)
        else:
            stmt = stmt.where(a.step_id == step_id)
        with self._reading() as conn:
            row = conn.execute(stmt).mappings().first()
        return _approval(row) if row else None

    def open_approvals(self) -> list[Approval]:
        with self._reading() as conn:
            rows = (
                conn.execute(select(approvals_t).where(approvals_t.c.status == "open"))
                .mappings()
                .all()
            )
        return [_approval(r) for r in rows]

    def update_approval(self, run_id: str, step_id: str, **fields: Any) -> None:
        if "groups" in fields:
            fields["groups"] = json.dumps(list(fields["groups"]))
        if "group" in fields:
            fields["grp"] = fields.pop("group")
        a = approvals_t.c
        with self.transaction() as conn:
            conn.execute(
                sql_update(approvals_t)
                .where(a.run_id == run_id, a.step_id == step_id)
                .values(**fields)
            )

    def add_vote(
        self, approval: Approval, user_id: str, decision: str, reason: str, at: float
    ) -> None:
        """One vote in the approval's current round, bound to the digest its voter saw."""
        try:
            with self.transaction() as conn:
                conn.execute(
                    insert(votes_t).values(
                        run_id=approval.run_id,
                        step_id=approval.step_id,
                        round=approval.round,
                        user_id=user_id,
                        decision=decision,
                        reason=reason,
                        outputs_sha256=approval.outputs_sha256,
                        at=at,
                    )
                )
        except IntegrityError:
            raise FlowConflict(f"{user_id} has already decided on run {approval.run_id}") from None

    def votes(self, run_id: str, step_id: str, round_: int | None = None) -> list[dict[str, Any]]:
        """The votes on a run's approval step (of one round, or of every round)."""
        v = votes_t.c
        stmt = select(v.round, v.user_id, v.decision, v.reason, v.outputs_sha256, v.at).where(
            v.run_id == run_id, v.step_id == step_id
        )
        if round_ is not None:
            stmt = stmt.where(v.round == round_)
        with self._reading() as conn:
            return [dict(r) for r in conn.execute(stmt.order_by(v.at)).mappings()]

    # -- overrides ----------------------------------------------------------------------------

    def add_override(self, run_id: str, step_id: str, user_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                insert(overrides_t).values(
                    run_id=run_id, step_id=step_id, user_id=user_id, at=time.time()
                )
            )

    def overriders(self, run_id: str) -> frozenset[str]:
        """Everyone who ever replaced a step's outputs in this run (separation of duties)."""
        o = overrides_t.c
        with self._reading() as conn:
            rows = conn.execute(select(o.user_id).where(o.run_id == run_id)).scalars().all()
        return frozenset(str(r) for r in rows)

    # -- kill switches ------------------------------------------------------------------------

    def set_switch(self, scope: str, on: bool, by: str, reason: str) -> None:
        with self.transaction() as conn:
            if on:
                conn.execute(
                    upsert(conn, switches_t, ["scope"]).values(
                        scope=scope, set_by=by, reason=reason, at=time.time()
                    )
                )
            else:
                conn.execute(sql_delete(switches_t).where(switches_t.c.scope == scope))

    def switch(self, workflow: str) -> dict[str, Any] | None:
        """The kill switch that stops `workflow` (global first), or None."""
        with self._reading() as conn:
            for scope in (GLOBAL, workflow):
                row = (
                    conn.execute(select(switches_t).where(switches_t.c.scope == scope))
                    .mappings()
                    .first()
                )
                if row:
                    return dict(row)
        return None

    def switches(self) -> list[dict[str, Any]]:
        with self._reading() as conn:
            rows = conn.execute(select(switches_t).order_by(switches_t.c.scope)).mappings()
            return [dict(r) for r in rows]

    # -- erasure ------------------------------------------------------------------------------

    def erase_subject(self, user_id: str, pseudonym: str) -> dict[str, Any]:
        """Erasure of one person: the runs they requested lose their inputs and step outputs
        (an unfinished one is cancelled) and name `pseudonym` instead; their votes, overrides
        and kill switches keep their effect under `pseudonym`, without the reasons they typed.
        Returns what changed: counts and the ids of the runs they requested."""
        r, s, a, v = runs_t.c, steps_t.c, approvals_t.c, votes_t.c
        with erasing_rows(self.engine, *TABLES) as conn:
            if not is_sqlite(self.engine):  # one writer, as for every change to runs
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                    {"name": self._lock_name},
                )
            own = [
                str(x) for x in conn.execute(select(r.id).where(r.requester == user_id)).scalars()
            ]
            conn.execute(
                sql_update(runs_t)
                .where(r.id.in_(own))
                .values(
                    status=sql_case(
                        (r.status.in_(("completed", "rejected", "expired")), r.status),
                        else_="cancelled",
                    ),
                    error="requester erased",
                    requester=pseudonym,
                    inputs="{}",
                    paused=0,
                )
            )
            conn.execute(
                sql_update(steps_t)
                .where(s.run_id.in_(own))
                .values(output=None, error=None, override_reason=None)
            )
            conn.execute(
                sql_update(approvals_t)
                .where(a.status == "open", a.run_id.in_(own))
                .values(status="cancelled")
            )
            votes = conn.execute(
                sql_update(votes_t).where(v.user_id == user_id).values(user_id=pseudonym, reason="")
            ).rowcount
            overrides = conn.execute(
                sql_update(steps_t)
                .where(s.override_by == user_id)
                .values(override_by=pseudonym, override_reason="")
            ).rowcount
            conn.execute(
                sql_update(overrides_t)
                .where(overrides_t.c.user_id == user_id)
                .values(user_id=pseudonym)
            )
            conn.execute(
                sql_update(switches_t)
                .where(switches_t.c.set_by == user_id)
                .values(set_by=pseudonym, reason="")
            )
            # Other runs name them as a value (an approval's `approvers`, an input), and
            # errors name who rejected or could not read ("rejected by …").
            quoted, masked = json.dumps(user_id), json.dumps(pseudonym)
            for table, column, old, new in (
                (steps_t, "output", quoted, masked),
                (runs_t, "inputs", quoted, masked),
                (runs_t, "error", user_id, pseudonym),
                (steps_t, "error", user_id, pseudonym),
            ):
                col = table.c[column]
                conn.execute(
                    sql_update(table)
                    .where(col.contains(old, autoescape=True))
                    .values({column: func.replace(col, old, new)})
                )
        return {"runs": own, "votes": votes, "overrides": overrides}

    # -- trigger bookkeeping ------------------------------------------------------------------

    def trigger_get(self, workflow: str, key: str) -> str | None:
        t = trigger_state_t.c
        with self._reading() as conn:
            value = conn.execute(
                select(t.value).where(t.workflow == workflow, t.key == key)
            ).scalar_one_or_none()
        return None if value is None else str(value)

    def trigger_set(self, workflow: str, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                upsert(conn, trigger_state_t, ["workflow", "key"]).values(
                    workflow=workflow, key=key, value=value
                )
            )


def _run(row: RowMapping) -> Run:
    return Run(
        id=row["id"],
        workflow=row["workflow"],
        definition=row["definition"],
        requester=row["requester"],
        inputs=json.loads(row["inputs"]),
        status=row["status"],
        step_index=row["step_index"],
        segment=row["segment"],
        paused=bool(row["paused"]),
        error=row["error"],
        created=row["created"],
        updated=row["updated"],
        labels=json.loads(row["labels"]),
    )


def _approval(row: RowMapping) -> Approval:
    return Approval(
        run_id=row["run_id"],
        step_id=row["step_id"],
        group=row["grp"],
        groups=tuple(json.loads(row["groups"])),
        required=row["required"],
        escalate_to=row["escalate_to"],
        expiry_hours=row["expiry_hours"],
        expires_at=row["expires_at"],
        escalated=bool(row["escalated"]),
        status=row["status"],
        round=row["round"],
        outputs_sha256=row["outputs_sha256"],
    )
