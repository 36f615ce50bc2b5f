"""The web UI without JavaScript (plain HTTP form posts): sign in, ask, search, documents,
receipts, admin pages; CSRF on every form; strict CSP."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sovra.answer import readable
from sovra.server import ServerSettings, create_app
from sovra.workspace import Workspace
from tests.support.server import ISSUER_AUDIENCE, PEOPLE_PAGE, RUNBOOK, Issuer, password

QUESTION = "what should I do when etcd database quota is low?"


@pytest.fixture(scope="module")
def app_client(workspace: Workspace, issuer: Issuer) -> Iterator[TestClient]:
    settings = ServerSettings(
        oidc_issuer=issuer.url,
        oidc_audience=ISSUER_AUDIENCE,
        secure_cookies=False,
        rate_limit_per_minute=100_000,
        rate_limit_burst=10_000,
        login_attempts_per_minute=1000,
    )
    with TestClient(create_app(workspace.config, settings, workspace)) as c:
        yield c


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, name
    return match.group(1)


def sign_in(c: TestClient, user: str) -> str:
    c.cookies.clear()
    form = c.get("/login")
    resp = c.post(
        "/login",
        data={
            "username": user,
            "password": password(user),
            "csrf_token": hidden(form.text, "csrf_token"),
            "next": "/",
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    home = c.get("/")
    return hidden(home.text, "csrf_token")


def test_pages_need_a_login(app_client: TestClient) -> None:
    app_client.cookies.clear()
    resp = app_client.get("/search?q=x", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/login?next=/search"


def test_login_form_needs_its_csrf_token(app_client: TestClient) -> None:
    app_client.cookies.clear()
    app_client.get("/login")
    resp = app_client.post(
        "/login", data={"username": "alice", "password": password("alice"), "csrf_token": "x"}
    )
    assert resp.status_code == 403


def test_wrong_password_shows_the_form_again(app_client: TestClient) -> None:
    app_client.cookies.clear()
    form = app_client.get("/login")
    resp = app_client.post(
        "/login",
        data={
            "username": "alice",
            "password": "wrong-wrong",
            "csrf_token": hidden(form.text, "csrf_token"),
        },
    )
    assert resp.status_code == 401 and "Wrong user name or password" in resp.text


def test_open_redirect_refused(app_client: TestClient) -> None:
    app_client.cookies.clear()
    form = app_client.get("/login")
    resp = app_client.post(
        "/login",
        data={
            "username": "alice",
            "password": password("alice"),
            "csrf_token": hidden(form.text, "csrf_token"),
            "next": "//evil.example/",
        },
        follow_redirects=False,
    )
    assert resp.headers["location"] == "/"


def test_ask_without_javascript(app_client: TestClient) -> None:
    csrf = sign_in(app_client, "alice")
    denied = app_client.post("/ask", data={"question": QUESTION, "extractive": "true"})
    assert denied.status_code == 403
    resp = app_client.post(
        "/ask", data={"question": QUESTION, "extractive": "true", "csrf_token": csrf}
    )
    assert resp.status_code == 200
    assert "AI-generated" in resp.text and 'class="endpoint"' in resp.text
    assert f"/documents/{RUNBOOK}#p" in resp.text
    shown = re.search(r'<div id="answer-text" class="answer-text">(.*?)</div>', resp.text, re.S)
    assert shown and "etcd_mvcc_db_total_size" in shown.group(1)
    assert "\\" not in shown.group(1)  # the verifier's Markdown escapes are not shown
    index = re.search(r'href="/receipts/(\d+)"', resp.text)
    assert index
    receipt = app_client.get(f"/receipts/{index.group(1)}")
    assert receipt.status_code == 200 and "Verified: entry" in receipt.text
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp


def test_search_and_documents_respect_permissions(app_client: TestClient) -> None:
    sign_in(app_client, "carol")
    page = app_client.get("/search", params={"q": "etcd database quota low space"})
    assert page.status_code == 200 and "etcdDatabaseQuotaLowSpace" not in page.text
    forbidden = app_client.get(f"/documents/{RUNBOOK}")
    missing = app_client.get("/documents/runbooks:nope.md")
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.text == missing.text
    sign_in(app_client, "dana")
    doc = app_client.get(f"/documents/{PEOPLE_PAGE}")
    assert doc.status_code == 200 and "Background Check Policy" in doc.text
    partial = app_client.get(
        "/search", params={"q": "background check"}, headers={"HX-Request": "true"}
    )
    assert partial.text.lstrip().startswith('<section id="results"')


def test_admin_pages(app_client: TestClient) -> None:
    sign_in(app_client, "carol")
    assert app_client.get("/admin/audit").status_code == 403
    assert app_client.get("/admin/users").status_code == 403
    sign_in(app_client, "root")
    audit = app_client.get("/admin/audit?verify=true")
    assert audit.status_code == 200 and "Log verified" in audit.text
    users = app_client.get("/admin/users")
    assert users.status_code == 200 and "carol" in users.text


def test_receipt_of_someone_else_is_not_found(app_client: TestClient) -> None:
    csrf = sign_in(app_client, "alice")
    resp = app_client.post(
        "/ask", data={"question": QUESTION, "extractive": "true", "csrf_token": csrf}
    )
    index = re.search(r'href="/receipts/(\d+)"', resp.text)
    assert index
    sign_in(app_client, "carol")
    assert app_client.get(f"/receipts/{index.group(1)}").status_code == 404


def test_logout_needs_csrf_and_ends_the_session(app_client: TestClient) -> None:
    csrf = sign_in(app_client, "alice")
    assert app_client.post("/logout", data={}).status_code == 403
    resp = app_client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert resp.status_code == 303
    assert app_client.get("/", follow_redirects=False).status_code == 303


def test_static_assets_are_local(app_client: TestClient) -> None:
    htmx = app_client.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text
    app_client.cookies.clear()
    login = app_client.get("/login").text
    assert "http://" not in login and "https://" not in login


def test_answer_text_is_shown_without_markdown_escapes() -> None:
    assert readable(r"etcd\_mvcc \[1\] \*not bold\*") == "etcd_mvcc [1] *not bold*"
    assert readable("a\\\\b") == "a\\b"  # an escaped backslash is one backslash
    assert readable(r"C:\Users and \é") == r"C:\Users and \é"  # only escapes of punctuation
