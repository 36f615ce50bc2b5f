"""Recent questions in Chromium: the Ask page lists the asker's own questions, never another
user's."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.server.test_browser import QUESTION, browser, new_page, sign_in  # noqa: F401


def test_recent_questions_are_shown_to_the_asker_only(
    browser: Browser,  # noqa: F811
    live_url: str,
) -> None:
    page, problems = new_page(browser)
    sign_in(page, live_url, "alice")
    page.get_by_label("Quote the sources only").check()
    page.get_by_label("Question").fill(QUESTION)
    page.get_by_role("button", name="Ask").click()
    expect(page.locator("#provenance")).to_contain_text("AI-generated")
    page.goto(live_url + "/")
    expect(page.locator("#recent")).to_contain_text(QUESTION)
    assert problems == []

    other, other_problems = new_page(browser)
    sign_in(other, live_url, "carol")
    other.goto(live_url + "/")
    expect(other.get_by_label("Question")).to_be_visible()
    assert QUESTION not in other.content()
    assert other_problems == []
