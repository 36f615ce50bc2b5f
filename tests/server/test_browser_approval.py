"""Approve with an edit in Chromium: the approval page shows the cited draft and the labels by
name, an emptied reply is refused with a message, an edited reply is recorded (audit log:
who, original and edited digests) and is what the run stores.

`SOVRA_SCREENSHOTS=docs/screenshots` saves approval.png there (how the docs' image is made).
"""

from __future__ import annotations

import csv
import threading
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from sovra.flows.actions import TicketStore
from sovra.flows.classify import train_classifier
from sovra.server.accounts import AccountStore
from sovra.server.flows import _LOCK
from sovra.workspace import Workspace, open_audit_log
from tests.server.test_browser import browser, new_page, sign_in  # noqa: F401
from tests.server.test_browser_search import shoot
from tests.support.server import password

WORKFLOW = """\
name: reply
description: draft a cited reply, it-support approves (and may edit) it
inputs:
  title: {type: string}
  body: {type: text}
access: [group:staff]
actions: [ticket_store]
steps:
  - id: category
    kind: classify
    text: "${input.title}\\n${input.body}"
    classifier: ticket-category
    label_names: {"4": access and accounts, "5": purchasing and equipment,
                  "6": infrastructure and network, "7": access cards and building}
  - id: summary
    kind: summary
    headline: "${input.title}"
    text: "${input.body}"
  - id: related
    kind: retrieve
    query: "${steps.summary.text}"
    max_classification: internal
  - id: draft
    kind: draft
    question: "${steps.summary.text}"
    passages: "${steps.related.chunk_ids}"
    nothing_found: approval
    max_classification: internal
  - id: approval
    kind: approve
    group: it-support
    edits: draft
  - id: record
    kind: act
    adapter: ticket_store
    params:
      op: upsert
      ticket_id: "${run.id}"
      fields: {category: "${steps.category.display}", reply: "${steps.draft.text}"}
"""
EDITED = "Free space on the etcd members first; it-support checked this reply."


@pytest.fixture(scope="module")
def waiting_run(workspace: Workspace, shared_data: Path) -> dict[str, Any]:
    """alice (sre) starts a run over the etcd runbook; it waits for it-support (erin)."""
    home = workspace.config.home
    (home / "workflows").mkdir(exist_ok=True)
    (home / "workflows" / "reply.yaml").write_text(WORKFLOW, encoding="utf-8")
    accounts = AccountStore.in_home(home)
    try:
        accounts.set_password("erin", password("erin"))
    finally:
        accounts.close()
    with (shared_data / "company/tickets/it_tickets.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[::20]
    classifier = train_classifier(
        [f"{r['title']}\n{r['body']}" for r in rows], [r["category"] for r in rows]
    )
    inputs = {"title": "etcd database quota low space", "body": "the cluster warns; please help"}
    shown: dict[str, Any] = {}

    def start() -> None:
        with _LOCK, workspace.flows(classifiers={"ticket-category": classifier}) as flows:
            shown.update(flows.show(flows.start("reply", inputs, "alice").id))

    # Playwright's sync API keeps an event loop on this thread, and DBOS refuses to run its
    # synchronous calls there: start the run on a thread of its own, as the server would.
    worker = threading.Thread(target=start)
    worker.start()
    worker.join(timeout=300)
    assert shown, "the run did not start (see the log above)"
    return shown


def test_a_non_approver_sees_no_reply_box(
    browser: Browser,  # noqa: F811
    live_url: str,
    waiting_run: dict[str, Any],
) -> None:
    """alice started the run: she may read it (still waiting), never edit or approve it."""
    page, problems = new_page(browser)
    sign_in(page, live_url, "alice")
    page.goto(f"{live_url}/flows/runs/{waiting_run['id']}")
    expect(page.locator("#run-status")).to_have_text("waiting_approval")
    expect(page.get_by_label("Reply to send")).to_have_count(0)
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    assert problems == []


def test_approver_edits_the_draft_and_the_edit_is_what_is_stored(
    browser: Browser,  # noqa: F811
    live_url: str,
    workspace: Workspace,
    waiting_run: dict[str, Any],
) -> None:
    run = waiting_run
    assert run["status"] == "waiting_approval"
    steps = {s["id"]: s for s in run["steps"]}
    draft = steps["draft"]["output"]
    assert draft["text"] and draft["citations"], draft
    # A reply for mail and tickets: plain text, none of the verifier's Markdown escapes
    # (the etcd runbook's metric names are full of underscores).
    assert "etcd_" in draft["text"] and "\\" not in draft["text"], draft["text"]
    category = steps["category"]["output"]
    page, problems = new_page(browser)
    sign_in(page, live_url, "erin")
    page.goto(f"{live_url}/flows/runs/{run['id']}")
    label = page.locator("section[aria-label='Step category'] .label-name")
    expect(label).to_contain_text(category["display"])
    if category["label"] in category["names"] and category["name"] != f"code {category['label']}":
        expect(label).not_to_have_text(f"{category['label']} (confidence {category['confidence']})")
    expect(page.locator("#draft-draft")).to_contain_text(draft["citations"][0]["quote"][:40])
    reply = page.get_by_label("Reply to send")
    expect(reply).to_have_value(draft["text"])
    shoot(page, "approval.png")

    reply.fill("   ")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#flow-message")).to_contain_text("the edited reply is empty")
    expect(page.locator("#run-status")).to_have_text("waiting_approval")

    page.get_by_label("Reply to send").fill(EDITED)
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#flow-message")).to_have_text("Approved with your edit.")
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#draft-draft")).to_have_text(EDITED)
    expect(page.locator("section[aria-label='Step draft'] .edited")).to_contain_text("erin")
    assert problems == []

    store = TicketStore(workspace.config.home / "tickets.db")
    try:
        row = store.get(run["id"])
        assert row is not None and row.reply == EDITED and row.category == category["display"]
    finally:
        store.close()
    log = open_audit_log(workspace.config, read_only=True)
    try:
        edits = [
            ev.view
            for ev in log.events(action="flow.draft.edit")
            if ev.view["details"]["run_id"] == run["id"]
        ]
    finally:
        log.close()
    assert len(edits) == 1 and edits[0]["actor"] == "user:erin"
    assert edits[0]["details"]["original_sha256"] != edits[0]["details"]["edited_sha256"]
    assert edits[0]["details"]["had_draft"] is True
