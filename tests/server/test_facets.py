"""Search facets (source, language, classification, modified date) count only documents the
caller may read: a forbidden document that matches the query never changes a count."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sovra.domain import Chunk, Principal, QueryOptions
from sovra.search.facets import facets_of
from sovra.workspace import Workspace
from tests.support.server import Site, bearer

QUERY = "background check policy for new hires"
SECRET_ID = "handbook:vault/background-checks-2027.md"
SECRET_TEXT = (
    "Background check policy for new hires, 2027 revision: background checks for every new"
    " hire, the policy on checks and what the background check covers."
)


def facets(client: TestClient, site: Site, user: str, **extra: Any) -> dict[str, Any]:
    resp = client.post(
        "/api/v1/search",
        json={"query": QUERY, "k": 10, "group_by": "document", "facets": True, **extra},
        headers=bearer(site.keys[user]),
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def plant(workspace: Workspace) -> None:
    """Index a document no demo user may read (its own group, confidential) that matches the
    query better than anything else; its language is one no readable document has, so a leak
    would show as a new facet value as well as a changed count."""
    [vector] = workspace.embedder.embed([SECRET_TEXT])
    chunk = Chunk(
        id=SECRET_ID + "#0",
        document_id=SECRET_ID,
        source="handbook",
        position=0,
        text=SECRET_TEXT,
        title="Background checks 2027",
        uri="vault/background-checks-2027.md",
        heading_path=(),
        language="de",
        access=("group:vault",),
        classification="confidential",
        residency="eu",
        modified_at=datetime.now(UTC),
        embedding=vector.tolist(),
    )
    workspace.index.replace_documents({SECRET_ID: [chunk]})


@pytest.fixture
def forbidden_match(workspace: Workspace) -> Iterator[str]:
    try:
        yield SECRET_ID
    finally:
        workspace.index.delete_documents([SECRET_ID])


def test_rest_facets_count_documents_per_value(client: TestClient, site: Site) -> None:
    body = facets(client, site, "dana")
    f = body["facets"]
    assert set(f) == {"source", "language", "classification", "modified"}
    documents = {d["document_id"] for d in body["documents"]}
    # Each facet counts every matching document once (the candidates can outnumber k).
    assert sum(v["count"] for v in f["source"]) >= len(documents) > 0
    assert sum(v["count"] for v in f["source"]) == sum(v["count"] for v in f["classification"])
    assert all(v["count"] > 0 for vs in f.values() for v in vs)


def test_a_forbidden_document_never_changes_a_facet_count(
    workspace: Workspace, client: TestClient, site: Site, forbidden_match: str
) -> None:
    plant(workspace)
    # The planted document does match: a principal in its group finds it first.
    insider = Principal("vault-keeper", frozenset({"vault"}))
    _, found = workspace.search_documents(insider, QUERY, QueryOptions(k=10))
    assert found[0].document_id == forbidden_match
    for user in ("carol", "dana", "alice"):
        workspace.index.delete_documents([forbidden_match])
        before = facets(client, site, user)["facets"]
        plant(workspace)
        after = facets(client, site, user)["facets"]
        assert after == before, user
        assert "de" not in {v["value"] for v in after["language"]}


def test_facets_of_counts_one_per_document_and_buckets_dates(workspace: Workspace) -> None:
    result = workspace.search(workspace.principal("dana"), QUERY, QueryOptions(k=30))
    f = facets_of(result)
    assert sum(v.count for v in f.source) == len({h.chunk.document_id for h in result.hits})
    recent = [v for v in f.modified if v.modified_after is not None]
    counts = [v.count for v in recent]
    assert counts == sorted(counts)  # cumulative: past week ≤ past month ≤ past year
