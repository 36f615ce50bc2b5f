"""Grouped search and ask progress in Chromium: one entry per document with the query terms
marked, no raw markdown; asking shows progress and the passages found, Ctrl+Enter submits.

`SOVRA_SCREENSHOTS=docs/screenshots` saves search.png and ask.png there (how the docs' images
are made)."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.server.test_browser import QUESTION, browser, new_page, sign_in  # noqa: F401
from tests.support.server import RUNBOOK


def shoot(page: Page, name: str) -> None:
    folder = os.environ.get("SOVRA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_search_shows_one_entry_per_document_highlighted(
    browser: Browser,  # noqa: F811
    live_url: str,
) -> None:
    page, problems = new_page(browser)
    sign_in(page, live_url, "alice")
    page.goto(live_url + "/search?q=etcd+database+quota+low+space")
    entries = page.locator("li.document-hit")
    expect(entries.first).to_be_visible()
    hrefs = [
        a.get_attribute("href").split("#")[0]  # type: ignore[union-attr]
        for a in page.locator("li.document-hit > a.title").all()
    ]
    assert hrefs and len(hrefs) == len(set(hrefs)), hrefs
    assert hrefs[0] == "/documents/" + RUNBOOK
    marks = {m.lower() for m in entries.first.locator("mark").all_inner_texts()}
    assert {"etcd", "quota"} <= marks, marks
    body = page.locator("#results").inner_text()
    assert "![" not in body and "](http" not in body and "\n#" not in body
    shoot(page, "search.png")
    assert problems == []


def test_ask_shows_progress_and_passages(browser: Browser, live_url: str) -> None:  # noqa: F811
    page, problems = new_page(browser)
    sign_in(page, live_url, "alice")
    page.get_by_label("Quote the sources only").check()
    question = page.get_by_label("Question", exact=True)
    question.fill(QUESTION)
    # The answer is asked for once, after the passages were searched.
    asked: list[bool] = []

    def seen(route):  # type: ignore[no-untyped-def]
        asked.append(True)
        route.continue_()

    page.route("**/api/v1/ask", seen)
    question.press("Control+Enter")
    expect(page.locator("#passages")).to_contain_text("Passages found")
    expect(page.locator("#passages mark").first).to_be_visible()
    expect(page.locator("#provenance")).to_contain_text("AI-generated")
    expect(page.locator("#ask-status")).to_have_text("")
    expect(page.locator("#ask-cancel")).to_be_hidden()
    assert asked == [True]
    shoot(page, "ask.png")
    assert problems == []


def test_ask_cancel_stops_and_says_so(browser: Browser, live_url: str) -> None:  # noqa: F811
    page, problems = new_page(browser)
    sign_in(page, live_url, "alice")
    page.get_by_label("Question", exact=True).fill(QUESTION)
    # The answer request never gets a reply here, so the question is still in flight.
    page.route("**/api/v1/ask", lambda route: None)
    page.get_by_role("button", name="Ask").click()
    expect(page.locator("#ask-status")).to_have_text("composing…")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#ask-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Ask")).to_be_enabled()
    assert all("abort" in p.lower() for p in problems), problems
