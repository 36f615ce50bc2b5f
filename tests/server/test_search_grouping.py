"""Grouped search on the real demo index, through REST (`group_by=document`) and the web UI:
one entry per document, plain-text snippets with the query terms marked, permissions intact."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.server.test_api import post
from tests.server.test_ui import app_client, sign_in  # noqa: F401  (the UI client fixture)
from tests.support.server import RUNBOOK, Site

QUERY = "etcd database quota low space"


def test_rest_groups_by_document(client: TestClient, site: Site) -> None:
    body = {"query": QUERY, "k": 5, "group_by": "document"}
    grouped = post(client, site, "alice", "/api/v1/search", body).json()
    docs = grouped["documents"]
    ids = [d["document_id"] for d in docs]
    assert ids[0] == RUNBOOK and len(ids) == len(set(ids)) and len(ids) <= 5
    first = docs[0]
    assert 1 <= len(first["passages"]) <= 3 and first["more_passages"] >= 0
    assert first["title"] and first["source"] == "runbooks" and first["modified_at"]
    marked = {s["text"].lower() for p in first["passages"] for s in p["highlights"] if s["marked"]}
    assert {"etcd", "quota"} <= marked, marked
    for p in first["passages"]:
        assert "](" not in p["snippet"] and not p["snippet"].startswith("#")
    # Per chunk (the default) is unchanged: several hits may come from one document.
    chunks = post(client, site, "alice", "/api/v1/search", {"query": QUERY, "k": 20}).json()
    assert len({h["document_id"] for h in chunks["hits"]}) < len(chunks["hits"])
    carol = post(client, site, "carol", "/api/v1/search", body).json()
    assert all(d["source"] != "runbooks" for d in carol["documents"])


def test_rest_rejects_an_unknown_grouping(client: TestClient, site: Site) -> None:
    resp = post(client, site, "alice", "/api/v1/search", {"query": "x", "group_by": "page"})
    assert resp.status_code == 422


def test_ui_shows_one_entry_per_document_with_marks(app_client: TestClient) -> None:  # noqa: F811
    sign_in(app_client, "alice")
    page = app_client.get("/search", params={"q": QUERY}).text
    entries = re.findall(r'<li class="document-hit">\s*<a class="title" href="([^"#]+)', page)
    assert entries and len(entries) == len(set(entries)), entries
    assert "<mark>etcd</mark>" in page.lower()
    assert "![" not in page
