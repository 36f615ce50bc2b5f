"""Test doubles for flows: a counting action adapter (state in SQLite, so it survives kill -9),
a keyword classifier, and a small data dir with the demo users and a test workflow."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sovra.config import Config, load_config
from sovra.directory import Directory
from sovra.domain import Chunk
from sovra.flows.base import ActionError, ActionResult, Prediction

WORKFLOW = """\
name: ticket
description: test triage
trigger: manual
inputs:
  title: {type: string}
  body: {type: text}
  impact: {type: integer}
  requester_email: {type: email}
access: [group:staff]
actions: [store, mail]
steps:
  - id: category
    kind: classify
    text: "${input.title} ${input.body}"
    labels: [hardware, access]
  - id: needs_approval
    kind: branch
    conditions:
      - {value: "${input.impact}", below: 4}
    else: update
  - id: approval
    kind: approve
    group: it-support
    escalate_to: admins
    expiry_hours: 1
  - id: update
    kind: act
    adapter: store
    params: {ticket: "${run.id}", category: "${steps.category.label}"}
  - id: notify
    kind: act
    adapter: mail
    params:
      to: ["${input.requester_email}"]
      subject: "Your ticket: ${input.title}"
      body: "Category ${steps.category.label}"
"""

USERS = {
    "bob": ["staff", "it-support"],
    "erin": ["staff", "it-support"],
    "carol": ["staff"],
    "root": ["staff", "admins"],
}


def make_site(tmp: Path, extra_flows: str = "") -> Path:
    """A config + data dir with the demo users and the `ticket` workflow; returns sovra.toml."""
    cfg = tmp / "sovra.toml"
    cfg.write_text(
        '[workspace]\nhome = "data"\n\n[flows]\naction_backoff_seconds = 0.01\n'
        "action_max_attempts = 3\n" + extra_flows,
        encoding="utf-8",
    )
    home = tmp / "data"
    (home / "workflows").mkdir(parents=True, exist_ok=True)
    (home / "workflows" / "ticket.yaml").write_text(WORKFLOW, encoding="utf-8")
    directory = Directory.in_home(home)
    for user, groups in USERS.items():
        directory.add_user(user, groups)
    return cfg


def config(tmp: Path) -> Config:
    return load_config(tmp / "sovra.toml")


class CountingAdapter:
    """Idempotent per key like the real adapters; counts real effects in SQLite.

    `crash` (env SOVRA_TEST_CRASH=<adapter>:<before|after>) SIGKILLs this process once, just
    before or just after the effect, to test recovery at exactly that point.
    """

    def __init__(self, name: str, db: Path, changes: str, fail: Sequence[str] = ()) -> None:
        self.name = name
        self.changes = frozenset({changes})
        self._db = db
        self._fail = list(fail)  # "retry" / "fatal" per call, then succeed
        with self._conn() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS effects (adapter TEXT, key TEXT, params TEXT,"
                " PRIMARY KEY (adapter, key))"
            )
            c.execute("CREATE TABLE IF NOT EXISTS calls (adapter TEXT, key TEXT)")
            c.execute("CREATE TABLE IF NOT EXISTS crashes (point TEXT PRIMARY KEY)")

    def _conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self._db, timeout=30, isolation_level=None)

    def _maybe_crash(self, point: str) -> None:
        wanted = os.environ.get("SOVRA_TEST_CRASH", "")
        if wanted != f"{self.name}:{point}":
            return
        with self._conn() as c:
            if c.execute("SELECT 1 FROM crashes WHERE point = ?", (wanted,)).fetchone():
                return
            c.execute("INSERT INTO crashes VALUES (?)", (wanted,))
        os.kill(os.getpid(), signal.SIGKILL)

    def execute(self, params: Mapping[str, Any], *, idempotency_key: str) -> ActionResult:
        with self._conn() as c:
            c.execute("INSERT INTO calls VALUES (?, ?)", (self.name, idempotency_key))
        if os.environ.get("SOVRA_TEST_SLOW") == self.name:
            time.sleep(60)  # the test SIGKILLs this process from outside meanwhile
        if self._fail:
            kind = self._fail.pop(0)
            raise ActionError(f"{self.name} is down ({kind})", retryable=kind == "retry")
        with self._conn() as c:
            row = c.execute(
                "SELECT params FROM effects WHERE adapter = ? AND key = ?",
                (self.name, idempotency_key),
            ).fetchone()
        if row is not None:
            return ActionResult(self.name, idempotency_key, json.loads(row[0]), replayed=True)
        self._maybe_crash("before")
        with self._conn() as c:
            c.execute(
                "INSERT INTO effects VALUES (?, ?, ?)",
                (self.name, idempotency_key, json.dumps(dict(params))),
            )
        self._maybe_crash("after")
        return ActionResult(self.name, idempotency_key, dict(params))


def calls(db: Path, adapter: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        try:
            row = c.execute("SELECT COUNT(*) FROM calls WHERE adapter = ?", (adapter,)).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


def effects(db: Path, adapter: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT adapter, key, params FROM effects ORDER BY rowid").fetchall()
    return [(a, k, json.loads(p)) for a, k, p in rows if adapter in (None, a)]


class KeywordClassifier:
    """Deterministic stand-in for the trained classifier: 'hardware' if the text says so."""

    def __init__(self, labels: Sequence[str] = ("hardware", "access")) -> None:
        self.labels = tuple(labels)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        out = []
        for text in texts:
            label = "hardware" if "laptop" in text.lower() else "access"
            out.append(Prediction(label, 0.9, {label: 0.9}))
        return out


def adapters(tmp: Path, fail: Sequence[str] = ()) -> dict[str, Any]:
    db = tmp / "effects.db"
    return {
        "store": CountingAdapter("store", db, "ticket.update"),
        "mail": CountingAdapter("mail", db, "email.send", fail=fail),
    }


def classifiers() -> dict[str, Any]:
    return {"labels:hardware|access": KeywordClassifier()}


TICKET = {
    "title": "laptop broken",
    "body": "my laptop does not start",
    "impact": 3,
    "requester_email": "carol@example.org",
}


def doc_chunk(
    doc: str,
    text: str = "body",
    access: str = "group:it-support",
    classification: str = "internal",
    *,
    title: str | None = None,
) -> Chunk:
    """A one-chunk document of source `<doc prefix>` (readable by it-support by default)."""
    return Chunk(
        id=f"{doc}#0",
        document_id=doc,
        source=doc.partition(":")[0],
        position=0,
        text=text,
        title=title if title is not None else doc,
        uri=f"file:///{doc}",
        heading_path=(),
        language="en",
        access=(access,),
        classification=classification,
        residency="eu",
    )


class FakeIndex:
    """Just enough index for triggers: document ids and their chunks."""

    def __init__(self) -> None:
        self.docs: dict[str, Chunk] = {}

    def close(self) -> None:
        pass

    def document_ids(self) -> list[str]:
        return list(self.docs)

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        return [self.docs[doc_id]] if doc_id in self.docs else []


ACCESS_WORKFLOW = """\
name: access
description: grant access after an approval
inputs:
  title: {type: string}
access: [group:staff]
actions: [ticket_store]
steps:
  - id: approval
    kind: approve
    group: it-support
  - id: record
    kind: act
    adapter: ticket_store
    params: {op: upsert, ticket_id: "${run.id}", fields: {title: "${input.title}", status: granted}}
"""
"""One approval by it-support, then a ticket-store upsert: the smallest workflow that acts."""
