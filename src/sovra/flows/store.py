"""Run state beside DBOS: runs, step outputs, approvals, votes and kill switches (SQLite, WAL).

DBOS checkpoints each step inside a run segment; this store is what people and later segments
read: the run's status, every step's output (with overrides), the open approval and its votes.
A run is continued in a new DBOS workflow (`<run id>/<segment>`) after an approval, a resume,
an override or a retry, so nothing has to stay in memory while a run waits for a person.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovra.flows.base import FlowConflict, FlowNotFound
from sovra.storage import erasing, open_sqlite, write_transaction

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

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    definition TEXT NOT NULL,
    requester TEXT NOT NULL,
    inputs TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    step_index INTEGER NOT NULL DEFAULT 0,
    segment INTEGER NOT NULL DEFAULT 1,
    paused INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    override_by TEXT,
    override_reason TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (run_id, step_id)
);
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    groups TEXT NOT NULL,
    required INTEGER NOT NULL,
    escalate_to TEXT,
    expiry_hours REAL NOT NULL,
    expires_at REAL NOT NULL,
    escalated INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    round INTEGER NOT NULL DEFAULT 1,
    outputs_sha256 TEXT,
    PRIMARY KEY (run_id, step_id)
);
"""
    + VOTES
    + """CREATE TABLE IF NOT EXISTS overrides (
    run_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS overrides_run ON overrides(run_id);
CREATE TABLE IF NOT EXISTS trigger_state (
    workflow TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (workflow, key)
);
CREATE TABLE IF NOT EXISTS switches (
    scope TEXT PRIMARY KEY,
    set_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""
)

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
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_sqlite(path, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._migrate()
        self._db.executescript(SCHEMA)
        self._depth = 0

    def _migrate(self) -> None:
        """Stores made before approvals were bound to a digest: add the round and digest
        columns (old votes are round 1, bound to nothing, so they count for no new round)."""
        run_cols = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
        if run_cols and "labels" not in run_cols:
            self._db.execute("ALTER TABLE runs ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'")
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(votes)")}
        if not cols or "round" in cols:
            return
        with write_transaction(self._db) as db:
            db.execute("ALTER TABLE approvals ADD COLUMN round INTEGER NOT NULL DEFAULT 1")
            db.execute("ALTER TABLE approvals ADD COLUMN outputs_sha256 TEXT")
            db.execute("ALTER TABLE votes RENAME TO votes_v1")
            db.execute(VOTES)
            db.execute(
                "INSERT INTO votes (run_id, step_id, round, user_id, decision, reason, at)"
                " SELECT run_id, step_id, 1, user_id, decision, reason, at FROM votes_v1"
            )
            db.execute("DROP TABLE votes_v1")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One writer at a time across processes (BEGIN IMMEDIATE), so two approvers racing
        cannot both complete a quorum."""
        if self._depth:  # already inside: one transaction, committed by the outermost
            self._depth += 1
            try:
                yield self._db
            finally:
                self._depth -= 1
            return
        with write_transaction(self._db) as db:
            self._depth = 1
            try:
                yield db
            finally:
                self._depth = 0

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
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (id, workflow, definition, requester, inputs, labels, status,"
                " created, updated) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    run_id,
                    workflow,
                    definition,
                    requester,
                    json.dumps(inputs),
                    json.dumps(labels or {}),
                    now,
                    now,
                ),
            )

    def run(self, run_id: str) -> Run:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise FlowNotFound(f"no flow run {run_id!r}; list runs with `sovra flow runs`")
        return _run(row)

    def runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[Run]:
        sql, args = "SELECT * FROM runs WHERE 1=1", list[Any]()
        if workflow:
            sql, args = sql + " AND workflow = ?", [*args, workflow]
        if status:
            sql, args = sql + " AND status = ?", [*args, status]
        sql += " ORDER BY created DESC LIMIT ?"
        return [_run(r) for r in self._db.execute(sql, (*args, limit))]

    def update_run(self, run_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def next_segment(self, run_id: str, start: int) -> int:
        """Mark the run running from step `start` in a new segment; returns the segment number."""
        with self.transaction() as db:
            row = db.execute("SELECT segment FROM runs WHERE id = ?", (run_id,)).fetchone()
            segment = int(row["segment"]) + 1
            db.execute(
                "UPDATE runs SET segment = ?, step_index = ?, status = 'running', error = NULL,"
                " updated = ? WHERE id = ?",
                (segment, start, time.time(), run_id),
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
        self._db.execute(
            "INSERT INTO steps (run_id, step_id, status, output, attempts, error, override_by,"
            " override_reason, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status,"
            " output = excluded.output, error = excluded.error,"
            " attempts = CASE WHEN ? IS NULL THEN steps.attempts ELSE excluded.attempts END,"
            " override_by = excluded.override_by, override_reason = excluded.override_reason,"
            " updated = excluded.updated",
            (
                run_id,
                step_id,
                status,
                json.dumps(output),
                attempts or 0,
                error,
                override_by,
                override_reason,
                time.time(),
                attempts,
            ),
        )

    def steps(self, run_id: str) -> dict[str, StepRecord]:
        rows = self._db.execute(
            "SELECT * FROM steps WHERE run_id = ? ORDER BY updated", (run_id,)
        ).fetchall()
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
        self._db.execute(
            "INSERT INTO approvals (run_id, step_id, grp, groups, required, escalate_to,"
            " expiry_hours, expires_at, status, outputs_sha256)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)"
            " ON CONFLICT (run_id, step_id) DO NOTHING",
            (
                run_id,
                step_id,
                group,
                json.dumps([group]),
                required,
                escalate_to,
                expiry_hours,
                expires_at,
                outputs_sha256,
            ),
        )

    def approval(self, run_id: str, step_id: str | None = None) -> Approval | None:
        """The run's open approval (or, with none open, its latest one); or one step's."""
        sql = "SELECT * FROM approvals WHERE run_id = ?"
        args: tuple[Any, ...] = (run_id,)
        if step_id is None:
            sql += " ORDER BY status = 'open' DESC, rowid DESC LIMIT 1"
        else:
            sql, args = sql + " AND step_id = ?", (run_id, step_id)
        row = self._db.execute(sql, args).fetchone()
        return _approval(row) if row else None

    def open_approvals(self) -> list[Approval]:
        rows = self._db.execute("SELECT * FROM approvals WHERE status = 'open'").fetchall()
        return [_approval(r) for r in rows]

    def update_approval(self, run_id: str, step_id: str, **fields: Any) -> None:
        if "groups" in fields:
            fields["groups"] = json.dumps(list(fields["groups"]))
        if "group" in fields:
            fields["grp"] = fields.pop("group")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(
            f"UPDATE approvals SET {cols} WHERE run_id = ? AND step_id = ?",
            (*fields.values(), run_id, step_id),
        )

    def add_vote(
        self, approval: Approval, user_id: str, decision: str, reason: str, at: float
    ) -> None:
        """One vote in the approval's current round, bound to the digest its voter saw."""
        try:
            self._db.execute(
                "INSERT INTO votes (run_id, step_id, round, user_id, decision, reason,"
                " outputs_sha256, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    approval.run_id,
                    approval.step_id,
                    approval.round,
                    user_id,
                    decision,
                    reason,
                    approval.outputs_sha256,
                    at,
                ),
            )
        except sqlite3.IntegrityError:
            raise FlowConflict(f"{user_id} has already decided on run {approval.run_id}") from None

    def votes(self, run_id: str, step_id: str, round_: int | None = None) -> list[dict[str, Any]]:
        """The votes on a run's approval step (of one round, or of every round)."""
        sql = (
            "SELECT round, user_id, decision, reason, outputs_sha256, at FROM votes"
            " WHERE run_id = ? AND step_id = ?"
        )
        args: tuple[Any, ...] = (run_id, step_id)
        if round_ is not None:
            sql, args = sql + " AND round = ?", (*args, round_)
        rows = self._db.execute(sql + " ORDER BY at", args).fetchall()
        return [dict(r) for r in rows]

    # -- overrides ----------------------------------------------------------------------------

    def add_override(self, run_id: str, step_id: str, user_id: str) -> None:
        self._db.execute(
            "INSERT INTO overrides (run_id, step_id, user_id, at) VALUES (?, ?, ?, ?)",
            (run_id, step_id, user_id, time.time()),
        )

    def overriders(self, run_id: str) -> frozenset[str]:
        """Everyone who ever replaced a step's outputs in this run (separation of duties)."""
        rows = self._db.execute("SELECT user_id FROM overrides WHERE run_id = ?", (run_id,))
        return frozenset(str(r[0]) for r in rows)

    # -- kill switches ------------------------------------------------------------------------

    def set_switch(self, scope: str, on: bool, by: str, reason: str) -> None:
        if on:
            self._db.execute(
                "INSERT OR REPLACE INTO switches (scope, set_by, reason, at) VALUES (?, ?, ?, ?)",
                (scope, by, reason, time.time()),
            )
        else:
            self._db.execute("DELETE FROM switches WHERE scope = ?", (scope,))

    def switch(self, workflow: str) -> dict[str, Any] | None:
        """The kill switch that stops `workflow` (global first), or None."""
        for scope in (GLOBAL, workflow):
            row = self._db.execute("SELECT * FROM switches WHERE scope = ?", (scope,)).fetchone()
            if row:
                return dict(row)
        return None

    def switches(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute("SELECT * FROM switches ORDER BY scope")]

    # -- erasure ------------------------------------------------------------------------------

    def erase_subject(self, user_id: str, pseudonym: str) -> dict[str, Any]:
        """Erasure of one person: the runs they requested lose their inputs and step outputs
        (an unfinished one is cancelled) and name `pseudonym` instead; their votes, overrides
        and kill switches keep their effect under `pseudonym`, without the reasons they typed.
        Returns what changed: counts and the ids of the runs they requested."""
        with erasing(self._db) as db:
            own = [
                str(r[0]) for r in db.execute("SELECT id FROM runs WHERE requester = ?", (user_id,))
            ]
            marks = ",".join("?" * len(own))
            db.execute(
                "UPDATE runs SET status = CASE WHEN status IN ('completed', 'rejected',"
                " 'expired') THEN status ELSE 'cancelled' END, error = 'requester erased',"
                f" requester = ?, inputs = '{{}}', paused = 0 WHERE id IN ({marks})",
                (pseudonym, *own),
            )
            db.execute(
                "UPDATE steps SET output = NULL, error = NULL, override_reason = NULL"
                f" WHERE run_id IN ({marks})",
                own,
            )
            db.execute(
                "UPDATE approvals SET status = 'cancelled' WHERE status = 'open'"
                f" AND run_id IN ({marks})",
                own,
            )
            votes = db.execute(
                "UPDATE votes SET user_id = ?, reason = '' WHERE user_id = ?", (pseudonym, user_id)
            ).rowcount
            overrides = db.execute(
                "UPDATE steps SET override_by = ?, override_reason = '' WHERE override_by = ?",
                (pseudonym, user_id),
            ).rowcount
            db.execute("UPDATE overrides SET user_id = ? WHERE user_id = ?", (pseudonym, user_id))
            db.execute(
                "UPDATE switches SET set_by = ?, reason = '' WHERE set_by = ?",
                (pseudonym, user_id),
            )
            # Other runs name them as a value (an approval's `approvers`, an input), and
            # errors name who rejected or could not read ("rejected by …").
            quoted, masked = json.dumps(user_id), json.dumps(pseudonym)
            for table, column, old, new in (
                ("steps", "output", quoted, masked),
                ("runs", "inputs", quoted, masked),
                ("runs", "error", user_id, pseudonym),
                ("steps", "error", user_id, pseudonym),
            ):
                db.execute(
                    f"UPDATE {table} SET {column} = replace({column}, ?, ?)"
                    f" WHERE instr({column}, ?) > 0",
                    (old, new, old),
                )
        return {"runs": own, "votes": votes, "overrides": overrides}

    # -- trigger bookkeeping ------------------------------------------------------------------

    def trigger_get(self, workflow: str, key: str) -> str | None:
        row = self._db.execute(
            "SELECT value FROM trigger_state WHERE workflow = ? AND key = ?", (workflow, key)
        ).fetchone()
        return None if row is None else str(row["value"])

    def trigger_set(self, workflow: str, key: str, value: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO trigger_state (workflow, key, value) VALUES (?, ?, ?)",
            (workflow, key, value),
        )


def _run(row: sqlite3.Row) -> Run:
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


def _approval(row: sqlite3.Row) -> Approval:
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
