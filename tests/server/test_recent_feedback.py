"""Recent questions are the asker's own (another user never sees them); feedback buttons on
every answer work as a plain form post without JavaScript and reach `sovra report usage`."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from sovra.answer.feedback import FeedbackStore
from tests.server.test_ui import app_client, hidden, sign_in  # noqa: F401

ALICE_QUESTION = "what should I do when etcd database quota is low? (alice only)"


def ask(c: TestClient, csrf: str, question: str) -> str:
    resp = c.post("/ask", data={"question": question, "extractive": "true", "csrf_token": csrf})
    assert resp.status_code == 200, resp.text
    return resp.text


def test_recent_questions_are_the_askers_own(app_client: TestClient) -> None:  # noqa: F811
    csrf = sign_in(app_client, "alice")
    page = ask(app_client, csrf, ALICE_QUESTION)
    recent = page.split('id="recent"', 1)[1]
    assert "Your recent questions" in recent and "(alice only)" in recent
    assert "(alice only)" not in page.split("</title>", 1)[0]
    assert "(alice only)" in app_client.get("/").text
    sign_in(app_client, "carol")
    home = app_client.get("/").text
    assert "(alice only)" not in home


def test_feedback_form_posts_without_javascript(app_client: TestClient) -> None:  # noqa: F811
    csrf = sign_in(app_client, "alice")
    page = ask(app_client, csrf, "how do I defragment etcd?")
    assert 'class="feedback"' in page
    index = int(hidden(page, "answer_index"))
    resp = app_client.post(
        "/feedback",
        data={
            "answer_index": index,
            "rating": "down",
            "comment": "missed a step",
            "csrf_token": hidden(page, "csrf_token"),
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/?feedback=down"
    assert "marked not helpful" in app_client.get("/?feedback=down").text
    # Rating another user's answer is refused like a missing one.
    csrf = sign_in(app_client, "carol")
    other = app_client.post(
        "/feedback", data={"answer_index": index, "rating": "up", "csrf_token": csrf}
    )
    assert other.status_code == 404
    # Without the CSRF token the post is refused.
    assert (
        app_client.post("/feedback", data={"answer_index": index, "rating": "up"}).status_code
        == 403
    )


def test_usage_report_counts_feedback(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    store.add("alice", 3, "up", "")
    store.add("alice", 4, "down", "wrong page")
    store.add("bob", 5, "up", "")
    assert store.summary() == [{"key": "all", "up": 2, "down": 1, "comments": 1}]
    assert [r["key"] for r in store.summary(by_user=True)] == ["alice", "bob"]
    store.close()
