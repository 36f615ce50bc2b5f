"""Date filter on search (REST and UI): bounds on the documents' modified time, applied in the
index alongside the access filter. The demo files all carry the time they were copied, so the
bounds are placed around the runbook's own modified time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from sovra.workspace import Workspace
from tests.support.server import RUNBOOK, Site, bearer, password

QUERY = "etcd database quota low space"


def runbook_time(workspace: Workspace) -> datetime:
    stamp = workspace.index.chunks_of(RUNBOOK)[0].modified_at
    assert stamp is not None
    return stamp.astimezone(UTC)


def doc_ids(client: TestClient, key: str, **bounds: str) -> tuple[int, list[str], dict[str, Any]]:
    resp = client.post(
        "/api/v1/search", json={"query": QUERY, "k": 10, **bounds}, headers=bearer(key)
    )
    body = resp.json()
    ids = [h["document_id"] for h in body.get("hits", [])] if resp.status_code == 200 else []
    return resp.status_code, ids, body


def test_rest_search_by_modified_time(client: TestClient, site: Site, workspace: Workspace) -> None:
    t = runbook_time(workspace)
    key = site.keys["alice"]
    status, ids, body = doc_ids(client, key)
    assert status == 200 and RUNBOOK in ids
    hit = next(h for h in body["hits"] if h["document_id"] == RUNBOOK)
    assert datetime.fromisoformat(hit["modified_at"]) == t

    inside = {
        "modified_after": (t - timedelta(seconds=1)).isoformat(),
        "modified_before": (t + timedelta(seconds=1)).isoformat(),
    }
    assert RUNBOOK in doc_ids(client, key, **inside)[1]
    later = doc_ids(client, key, modified_after=(t + timedelta(days=1)).isoformat())
    assert later[0] == 200 and later[1] == []
    earlier = doc_ids(client, key, modified_before=(t - timedelta(days=1)).isoformat())
    assert earlier[0] == 200 and earlier[1] == []
    # Naive times are UTC.
    naive = (t + timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    assert RUNBOOK in doc_ids(client, key, modified_before=naive)[1]
    # The date filter narrows; it never widens what carol may read.
    assert RUNBOOK not in doc_ids(client, site.keys["carol"], **inside)[1]


def test_rest_rejects_bad_bounds(client: TestClient, site: Site) -> None:
    key = site.keys["alice"]
    status, _, body = doc_ids(
        client, key, modified_after="2025-02-01T00:00:00Z", modified_before="2025-01-01T00:00:00Z"
    )
    assert status == 422 and "later than" in str(body["detail"])
    status, _, body = doc_ids(client, key, modified_after="last tuesday")
    assert status == 422 and body["detail"][0]["loc"][-1] == "modified_after"


def sign_in(c: TestClient, user: str) -> None:
    c.cookies.clear()
    form = c.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]*)"', form.text)
    assert token
    resp = c.post(
        "/login",
        data={"username": user, "password": password(user), "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert resp.status_code == 303


def test_search_page_date_fields(client: TestClient, workspace: Workspace) -> None:
    day = runbook_time(workspace).date()
    sign_in(client, "alice")
    try:
        page = client.get("/search", params={"q": QUERY})
        assert 'type="date"' in page.text and 'id="modified_from"' in page.text
        assert f'<time datetime="{runbook_time(workspace).isoformat()}"' in page.text
        same_day = client.get(
            "/search", params={"q": QUERY, "modified_from": str(day), "modified_to": str(day)}
        )
        assert "etcdDatabaseQuotaLowSpace" in same_day.text
        next_day = str(day + timedelta(days=1))
        after = client.get("/search", params={"q": QUERY, "modified_from": next_day})
        assert "etcdDatabaseQuotaLowSpace" not in after.text
        assert "No results you can access." in after.text
        wrong = client.get("/search", params={"q": QUERY, "modified_from": "31/05/2024"})
        assert "Dates must look like" in wrong.text
        backwards = client.get(
            "/search", params={"q": QUERY, "modified_from": next_day, "modified_to": str(day)}
        )
        assert "after the" in backwards.text
    finally:
        client.cookies.clear()
