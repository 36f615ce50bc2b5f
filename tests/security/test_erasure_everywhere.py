"""`sovra erase --subject` reaches every store in the data directory (issue 14, §1.5).

A subject searches, asks (the routing decision is logged too), rates an answer with a comment,
starts a workflow run with their e-mail in its inputs, votes on a colleague's run with a
reason, has credentials and used a model. After `sovra erase`, every file under the data dir
— SQLite databases with their WAL and journals, JSON, tiles, keys — is read as bytes and none
holds the subject's id, name, e-mail or query text in readable form; the audit log verifies.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from sovra.cli import app
from sovra.config import EndpointConfig, load_config
from sovra.domain import QueryOptions
from sovra.policy.usage import UsageLedger
from sovra.server.accounts import AccountStore
from sovra.workspace import Workspace
from tests.support.answer import DISK_PRESSURE, make_site

SUBJECT = "zelda.k"
NAME = "Zelda Kowalczyk"
EMAIL = "zelda.kowalczyk@example.org"
QUERY = "How does Zelda free disk space when a node has disk pressure quickly?"
QUESTION = "What should Kowalczyk do first about disk pressure on node 7?"
COMMENT = "Kowalczyk thinks this missed the crictl step"
REASON = "checked by Zelda with the night shift"
TITLE = "zk printer ticket Kowalczyk"
LEGACY_COMMENT = "old comment by Zelda from the server days"

ENDPOINT = """
[answer]
endpoint = "guarded"

[[endpoints]]
name = "guarded"
kind = "embedded"
model = "tiny"
jurisdiction = "eu-de"
hosting = "on_prem"
max_classification = "public"
"""

WORKFLOW = """\
name: help
trigger: manual
inputs:
  title: {type: string}
  requester_email: {type: email}
access: [group:sre]
steps:
  - id: related
    kind: retrieve
    query: "${input.title}"
  - id: reply
    kind: draft
    question: "${input.title}"
    nothing_found: approval  # nothing here matches the title: a person writes the reply
  - id: approval
    kind: approve
    group: sre
"""

NEEDLES = (SUBJECT, NAME, EMAIL, QUERY, QUESTION, COMMENT, REASON, TITLE, LEGACY_COMMENT)


def _run(cfg: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--config", str(cfg), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _found(home: Path) -> dict[str, list[str]]:
    """Needle → files that still hold it (UTF-8, any case, or UTF-16 as SQLite may store)."""
    hits: dict[str, list[str]] = {}
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        low = data.lower()
        for needle in NEEDLES:
            forms = (needle.lower().encode(), needle.encode("utf-16-le"))
            if any(f in low or f in data for f in forms):
                hits.setdefault(needle, []).append(str(path.relative_to(home)))
    return hits


def _legacy_feedback(home: Path) -> None:
    """A feedback row as servers before `feedback.sqlite` kept it in the account store."""
    (home / "server").mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(home / "server" / "accounts.sqlite") as db:
        db.execute(
            "CREATE TABLE feedback (id INTEGER PRIMARY KEY, user_id TEXT, answer_index INTEGER,"
            " rating TEXT, comment TEXT, created_at REAL)"
        )
        db.execute("INSERT INTO feedback VALUES (1, ?, 0, 'down', ?, 0)", (SUBJECT, LEGACY_COMMENT))


def test_erase_leaves_nothing_readable_in_any_file(tmp_path: Path) -> None:
    cfg = make_site(tmp_path, {"runbooks/disk.md": DISK_PRESSURE}, ENDPOINT)
    home = tmp_path / "data"
    (home / "workflows").mkdir(exist_ok=True)
    (home / "workflows" / "help.yaml").write_text(WORKFLOW, encoding="utf-8")
    _run(cfg, "user", "add", SUBJECT, "--group", "sre", "--group", "staff", "--name", NAME)
    _legacy_feedback(home)
    config = load_config(cfg)

    ws = Workspace.open(config)
    try:
        zelda = ws.principal(SUBJECT)
        assert ws.search(zelda, QUERY).hits
        answer = None
        for event in ws.ask(zelda, QUESTION, QueryOptions()):  # routed, refused, extractive
            answer = event.answer or answer
        assert answer is not None and answer.receipt is not None
        assert ws.feedback(zelda, answer.receipt["index"], "down", COMMENT) is not None
        UsageLedger.in_home(home).record(
            zelda,
            EndpointConfig(name="guarded", kind="embedded", model="tiny"),
            tokens_in=10,
            tokens_out=5,
            latency_ms=3.0,
            request_id="r1",
        )
        with ws.flows() as flows:
            own = flows.start("help", {"title": TITLE, "requester_email": EMAIL}, SUBJECT)
            assert own.status == "waiting_approval"
            theirs = flows.start("help", {"title": "disk", "requester_email": "a@x.org"}, "alice")
            flows.approve(theirs.id, SUBJECT, REASON)
        assert ws.audit.verify().ok
    finally:
        ws.close()
    accounts = AccountStore.in_home(home)
    accounts.set_password(SUBJECT, "correct horse battery staple")
    accounts.create_key(SUBJECT, "zelda's laptop", ("search",))
    accounts.create_session(SUBJECT, 3600, display_name=NAME)
    accounts.close()

    before = _found(home)
    # Each was stored somewhere in clear (search queries only ever sealed in the audit log;
    # the question also in the asker's recent questions, shown back to them on the Ask page).
    assert set(before) == set(NEEDLES) - {QUERY}, before
    assert before[QUESTION] == ["recent-questions.sqlite"], before

    out = _run(cfg, "erase", "--subject", SUBJECT, "--json")
    assert '"erased": true' in out

    assert _found(home) == {}
    _run(cfg, "audit", "verify")
    # What is not personal stays: the colleague's approved run, usage totals, the rating.
    ws = Workspace.open(config)
    try:
        with ws.flows() as flows:
            assert flows.run(theirs.id).status == "completed"
            assert flows.run(own.id).status == "cancelled"
        assert ws.feedback_store.for_answer(answer.receipt["index"])[0]["rating"] == "down"
    finally:
        ws.close()
    with UsageLedger.in_home(home) as ledger:
        assert ledger.totals()[0] == 1
