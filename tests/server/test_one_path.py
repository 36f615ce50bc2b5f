"""Every server surface reaches the index through the workspace's one permission path
(`Workspace.search` / `Workspace.ask` with a Principal and a QueryOptions), and the same
principal with the same options gets the same hits whichever surface it asks through."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import mcp
import pytest
from fastapi.testclient import TestClient

from sovra.domain import Principal, QueryOptions
from sovra.server.mcp_server import build_mcp, fixed_user
from sovra.server.slots import ModelSlots
from sovra.workspace import Workspace
from tests.support.server import Site, bearer

QUERY = "etcd database quota low space"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, QueryOptions]]]:
    seen: list[tuple[str, str, QueryOptions]] = []
    search, ask = Workspace.search, Workspace.ask

    def spy_search(
        self: Workspace, principal: Principal, query: str, options: QueryOptions | None = None
    ) -> Any:
        seen.append(("search", principal.id, options or QueryOptions()))
        return search(self, principal, query, options)

    def spy_ask(
        self: Workspace, principal: Principal, question: str, options: QueryOptions | None = None
    ) -> Any:
        seen.append(("ask", principal.id, options or QueryOptions()))
        return ask(self, principal, question, options)

    monkeypatch.setattr(Workspace, "search", spy_search)
    monkeypatch.setattr(Workspace, "ask", spy_ask)
    yield seen


def rest_search(client: TestClient, site: Site, body: dict[str, Any]) -> list[str]:
    resp = client.post("/api/v1/search", json=body, headers=bearer(site.keys["alice"]))
    assert resp.status_code == 200, resp.text
    return [h["chunk_id"] for h in resp.json()["hits"]]


def mcp_call(workspace: Workspace, arguments: dict[str, Any]) -> dict[str, Any]:
    server = build_mcp(ModelSlots(workspace), fixed_user(lambda: workspace.principal("alice")))

    async def run() -> Any:
        async with mcp.Client(server) as client:
            return await client.call_tool("search", arguments)

    result = asyncio.run(run())
    data: dict[str, Any] = result.structured_content or json.loads(result.content[0].text)
    return data


def mcp_search(workspace: Workspace, query: str, k: int) -> list[str]:
    data = mcp_call(workspace, {"query": query, "k": k, "group_by": "chunk"})
    return [h["chunk_id"] for h in data["hits"]]


def passages_of(documents: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(d["document_id"], [p["chunk_id"] for p in d["passages"]]) for d in documents]


def test_rest_mcp_and_the_core_group_by_document_alike(
    workspace: Workspace, client: TestClient, site: Site
) -> None:
    _, core = workspace.search_documents(workspace.principal("alice"), QUERY, QueryOptions(k=5))
    expected = [(d.document_id, [p.hit.chunk.id for p in d.passages]) for d in core]
    assert expected and len({doc for doc, _ in expected}) == len(expected)
    resp = client.post(
        "/api/v1/search",
        json={"query": QUERY, "k": 5, "group_by": "document"},
        headers=bearer(site.keys["alice"]),
    )
    assert resp.status_code == 200, resp.text
    assert passages_of(resp.json()["documents"]) == expected
    mcp_documents = mcp_call(workspace, {"query": QUERY, "k": 5})["documents"]
    assert passages_of(mcp_documents) == expected
    first = mcp_documents[0]["passages"][0]
    assert first["text"] and first["highlights"] and first["snippet"]


def test_rest_mcp_and_the_core_give_the_same_hits_through_one_path(
    workspace: Workspace, client: TestClient, site: Site, calls: list[Any]
) -> None:
    direct = workspace.search(workspace.principal("alice"), QUERY, QueryOptions(k=5))
    expected = [h.chunk.id for h in direct.hits]
    assert expected, "the fixture site must have hits for the query"
    assert rest_search(client, site, {"query": QUERY, "k": 5}) == expected
    assert mcp_search(workspace, QUERY, 5) == expected
    assert [(kind, who) for kind, who, _ in calls] == [("search", "alice")] * 3
    assert {opts.k for _, _, opts in calls} == {5}


def test_narrowing_options_reach_the_core_unchanged(
    workspace: Workspace, client: TestClient, site: Site, calls: list[Any]
) -> None:
    body = {
        "query": QUERY,
        "k": 7,
        "mode": "text",
        "sources": ["handbook"],
        "max_classification": "public",
        "modified_after": "2000-01-01T00:00:00Z",
    }
    hits = rest_search(client, site, body)
    (kind, who, options), *_ = calls
    assert (kind, who) == ("search", "alice")
    assert options.k == 7 and options.mode == "text" and options.sources == ("handbook",)
    assert options.max_classification == "public" and options.modified_after is not None
    # The narrowing is applied inside the index: no runbook, nothing above public.
    for chunk_id in hits:
        chunk = next(c for c in workspace.index.chunks_of(chunk_id.rpartition("#")[0]))
        assert chunk.source == "handbook" and chunk.classification == "public"


def test_an_unknown_classification_is_refused_not_ignored(
    client: TestClient, site: Site, calls: list[Any]
) -> None:
    resp = client.post(
        "/api/v1/search",
        json={"query": QUERY, "max_classification": "secret-ish"},
        headers=bearer(site.keys["alice"]),
    )
    assert resp.status_code == 400
    assert "max_classification" in resp.json()["detail"]


def test_answers_from_rest_and_openai_go_through_workspace_ask(
    client: TestClient, site: Site, calls: list[Any]
) -> None:
    resp = client.post(
        "/api/v1/ask",
        json={"question": "what should I do when etcd database quota is low?", "extractive": True},
        headers=bearer(site.keys["alice"]),
    )
    assert resp.status_code == 200, resp.text
    chat = {
        "model": "sovra-extractive",
        "messages": [{"role": "user", "content": "what should I do when etcd quota is low?"}],
    }
    resp = client.post("/v1/chat/completions", json=chat, headers=bearer(site.keys["alice"]))
    assert resp.status_code == 200, resp.text
    assert [(kind, who) for kind, who, _ in calls] == [("ask", "alice")] * 2
    assert all(opts.extractive for _, _, opts in calls)
