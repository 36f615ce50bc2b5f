"""Recent questions, facets and feedback in Chromium: the Ask page lists the asker's own
questions, never another user's; a facet link narrows the results, and counts hold only readable
documents; the rating buttons under an answer store the rating and comment, with the script
(through the API, in place) and without it (a plain form post)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from sovra.workspace import Workspace
from tests.server.test_browser import QUESTION, browser, new_page, sign_in  # noqa: F401

# Other tests ask QUESTION as carol on the same live server: this one must be alice's alone.
ALICE_ONLY = QUESTION + " (asked in the browser by alice)"


def test_recent_questions_are_shown_to_the_asker_only(
    browser: Browser,  # noqa: F811
    live_url: str,
) -> None:
    page, problems = new_page(browser)
    sign_in(page, live_url, "alice")
    page.get_by_label("Quote the sources only").check()
    page.get_by_label("Question", exact=True).fill(ALICE_ONLY)
    page.get_by_role("button", name="Ask").click()
    expect(page.locator("#provenance")).to_contain_text("AI-generated")
    page.goto(live_url + "/")
    expect(page.locator("#recent")).to_contain_text(ALICE_ONLY)
    assert problems == []

    other, other_problems = new_page(browser)
    sign_in(other, live_url, "carol")
    other.goto(live_url + "/")
    expect(other.get_by_label("Question", exact=True)).to_be_visible()
    assert ALICE_ONLY not in other.content()
    assert other_problems == []


def test_a_facet_narrows_and_counts_only_readable_documents(
    browser: Browser,  # noqa: F811
    live_url: str,
) -> None:
    page, problems = new_page(browser)
    sign_in(page, live_url, "alice")
    page.goto(live_url + "/search?q=etcd+database+quota+low+space")
    sources = page.locator('.facet[data-facet="source"] li')
    expect(sources.first).to_be_visible()
    names = [li.locator("a").inner_text() for li in sources.all()]
    assert "runbooks" in names and len(names) > 1, names  # something left to narrow away
    sources.filter(has_text="runbooks").locator("a").click()
    expect(page.locator('.facet[data-facet="source"] a[aria-current="true"]')).to_have_text(
        "runbooks"
    )
    metas = page.locator("li.document-hit > span.meta").all_inner_texts()
    assert metas and all(m.startswith("runbooks") for m in metas), metas
    assert problems == []

    # carol may not read the runbooks: they are in neither her results nor her counts.
    other, other_problems = new_page(browser)
    sign_in(other, live_url, "carol")
    other.goto(live_url + "/search?q=etcd+database+quota+low+space")
    expect(other.locator("#results")).to_be_visible()
    names = other.locator('.facet[data-facet="source"] li').all_inner_texts()
    assert not any(n.startswith("runbooks") for n in names), names
    assert other_problems == []


@pytest.mark.parametrize("javascript", [True, False], ids=["script", "no-script"])
def test_rating_an_answer_stores_it_with_the_comment(
    browser: Browser,  # noqa: F811
    live_url: str,
    workspace: Workspace,
    javascript: bool,
) -> None:
    page, problems = new_page(browser, javascript=javascript)
    sign_in(page, live_url, "alice")
    page.get_by_label("Quote the sources only").check()
    page.get_by_label("Question", exact=True).fill("how do I defragment etcd?")
    page.get_by_role("button", name="Ask").click()
    receipt = page.locator("#provenance a.receipt")
    expect(receipt).to_be_visible()
    index = int(receipt.inner_text().removeprefix("receipt #"))
    comment = f"missed the compaction step ({'script' if javascript else 'no script'})"
    form = page.get_by_role("form", name="Rate this answer")
    form.get_by_label("Comment (optional)").fill(comment)
    form.get_by_role("button", name="Not helpful").click()
    if javascript:
        # Rated in place through the API: the answer stays on the page, the buttons lock.
        expect(form.get_by_role("status")).to_have_text("Thanks: marked not helpful.")
        expect(form.get_by_role("button", name="✓ Helpful", exact=True)).to_be_disabled()
        expect(page.locator("#answer-text")).to_be_visible()
    else:
        expect(page).to_have_url(re.compile(r"/\?feedback=down$"))
        expect(page.get_by_text("marked not helpful")).to_be_visible()
    stored = workspace.feedback_store.for_answer(index)
    assert [(f["user_id"], f["rating"], f["comment"]) for f in stored] == [
        ("alice", "down", comment)
    ], stored
    assert problems == []
