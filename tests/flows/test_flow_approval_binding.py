"""An approval is bound to the digest of the outputs it approved (issue 14, §1.4).

Overriding a step after (or while) people approve sends the run back to approval, votes carry
the digest their voter saw, and neither the requester nor whoever overrode a step can count
towards the approval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sovra.flows.approvals import ApprovalRefused
from sovra.flows.service import Flows
from sovra.workspace import Workspace, open_flows
from tests.support.flows import TICKET, adapters, classifiers, config, effects, make_site

# erin and bob decide (it-support) and erin may also operate: the person who could both edit
# the draft and approve it.
OPERATORS = 'operators = ["admins", "it-support"]\n'


def _flows(site: Path, **kwargs: Any) -> Flows:
    kwargs.setdefault("adapters", adapters(site))
    kwargs.setdefault("classifiers", classifiers())
    kwargs.setdefault("sleep", lambda s: None)
    return open_flows(config(site), **kwargs)


def _events(site: Path, action: str) -> list[dict[str, Any]]:
    ws = Workspace.open(config(site))
    try:
        return [e.view for e in ws.audit.events() if e.view["action"] == action]
    finally:
        ws.close()


def _mails(site: Path) -> list[dict[str, Any]]:
    db = site / "effects.db"
    return [p for a, _, p in effects(db) if a == "mail"] if db.exists() else []


@pytest.fixture
def site(tmp_path: Path) -> Path:
    make_site(tmp_path, OPERATORS)
    return tmp_path


def test_override_after_approval_goes_back_to_approval(site: Path) -> None:
    with _flows(site) as flows:
        flows.kill_switch("ticket", True, "root", "incident")
        run = flows.start("ticket", TICKET, "carol")
        flows.kill_switch("ticket", False, "root")
        assert flows.run(run.id).status == "waiting_approval"
        flows.kill_switch("ticket", True, "root", "hold the action")
        assert flows.approve(run.id, "bob", "hardware, fine").status == "paused"
        # The operator changes what was approved, then lets the run go on.
        flows.override(run.id, "category", {"label": "access"}, "root", "actually access")
        after = flows.kill_switch("ticket", False, "root")
        assert [r.status for r in after] == ["waiting_approval"]
        assert _mails(site) == []  # nothing acted on content nobody approved
        assert flows.show(run.id)["approval"]["round"] == 2
        assert [i["run"]["id"] for i in flows.pending_approvals("bob")] == [run.id]
        assert flows.approve(run.id, "bob", "access is right").status == "completed"
    assert "Category access" in _mails(site)[0]["body"]
    reopened = [e for e in _events(site, "flow.approval.request") if e["outcome"] == "reopened"]
    assert len(reopened) == 1 and reopened[0]["details"]["why"] == "outputs_changed"


def test_failed_action_override_then_retry_needs_a_new_approval(site: Path) -> None:
    with _flows(site, adapters=adapters(site, fail=["fatal"])) as flows:
        run = flows.start("ticket", TICKET, "carol")
        assert flows.approve(run.id, "bob").status == "failed"  # the mail step failed
        flows.override(run.id, "category", {"label": "access"}, "root", "retag")
        assert flows.retry(run.id, "root", "smtp back").status == "waiting_approval"
        assert _mails(site) == []
        assert flows.approve(run.id, "bob").status == "completed"
    assert "Category access" in _mails(site)[0]["body"]


def test_votes_record_the_digest_they_approved(site: Path) -> None:
    with _flows(site) as flows:
        run = flows.start("ticket", TICKET, "carol")
        flows.approve(run.id, "bob", "ok")
        shown = flows.show(run.id)
    bound = shown["approval"]["outputs_sha256"]
    assert bound.startswith("hmac-sha256:")
    assert [v["outputs_sha256"] for v in shown["approval"]["votes"]] == [bound]
    (vote,) = _events(site, "flow.approval.vote")
    assert vote["details"]["outputs_sha256"] == bound


def test_override_while_waiting_discards_earlier_votes(site: Path) -> None:
    wf = site / "data" / "workflows" / "ticket.yaml"
    two = wf.read_text().replace("escalate_to: admins", "escalate_to: admins\n    required: 2")
    wf.write_text(two)
    with _flows(site) as flows:
        run = flows.start("ticket", TICKET, "carol")
        assert flows.approve(run.id, "bob").status == "waiting_approval"
        flows.override(run.id, "category", {"label": "access"}, "root", "retag")
        # bob's vote was for "hardware"; it no longer counts, so erin's is not enough …
        assert flows.approve(run.id, "erin").status == "waiting_approval"
        assert flows.show(run.id)["approval"]["round"] == 2
        assert _mails(site) == []
        # … and bob may vote again, on what is there now.
        assert flows.approve(run.id, "bob").status == "completed"
    assert "Category access" in _mails(site)[0]["body"]


def test_whoever_overrode_may_not_approve(site: Path) -> None:
    with _flows(site) as flows:
        run = flows.start("ticket", TICKET, "carol")
        flows.override(run.id, "category", {"label": "access"}, "erin", "retag")
        with pytest.raises(ApprovalRefused, match="separation of duties: erin overrode"):
            flows.approve(run.id, "erin")
        with pytest.raises(ApprovalRefused, match="separation of duties: erin overrode"):
            flows.reject(run.id, "erin", "no")
        assert flows.pending_approvals("erin") == []
        assert flows.approve(run.id, "bob").status == "completed"
    denied = [e for e in _events(site, "flow.approval.vote") if e["decision"] == "deny"]
    assert [e["details"]["why"] for e in denied] == ["separation_of_duties"] * 2


def test_a_store_from_before_rounds_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from sovra.flows.store import FlowStore

    path = tmp_path / "flows-state.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, workflow TEXT NOT NULL, definition TEXT"
            " NOT NULL, requester TEXT NOT NULL, inputs TEXT NOT NULL, status TEXT NOT NULL,"
            " step_index INTEGER NOT NULL DEFAULT 0, segment INTEGER NOT NULL DEFAULT 1, paused"
            " INTEGER NOT NULL DEFAULT 0, error TEXT, created REAL NOT NULL, updated REAL NOT"
            " NULL);"
            "CREATE TABLE approvals (run_id TEXT NOT NULL, step_id TEXT NOT NULL, grp TEXT NOT"
            " NULL, groups TEXT NOT NULL, required INTEGER NOT NULL, escalate_to TEXT,"
            " expiry_hours REAL NOT NULL, expires_at REAL NOT NULL, escalated INTEGER NOT NULL"
            " DEFAULT 0, status TEXT NOT NULL, PRIMARY KEY (run_id, step_id));"
            "CREATE TABLE votes (run_id TEXT NOT NULL, step_id TEXT NOT NULL, user_id TEXT NOT"
            " NULL, decision TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL,"
            " PRIMARY KEY (run_id, step_id, user_id));"
            "INSERT INTO runs VALUES ('r1', 'w', '{}', 'carol', '{}', 'waiting_approval', 2, 1,"
            " 0, NULL, 0, 0);"
            "INSERT INTO approvals VALUES ('r1', 'a', 'g', '[\"g\"]', 2, NULL, 1, 9e9, 0, 'open');"
            "INSERT INTO votes VALUES ('r1', 'a', 'bob', 'approve', 'ok', 1);"
        )
    store = FlowStore(path)
    try:
        approval = store.approval("r1")
        assert approval is not None and approval.round == 1 and approval.outputs_sha256 is None
        (vote,) = store.votes("r1", "a")
        assert vote["user_id"] == "bob" and vote["round"] == 1 and vote["outputs_sha256"] is None
        assert store.run("r1").labels == {}
    finally:
        store.close()
