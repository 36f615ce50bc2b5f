"""REST /api/v1 as the demo users: permissions, documents (404 for forbidden = missing),
answers with receipts that verify, SSE streaming, audit, feedback, health and metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sovra.workspace import Workspace
from tests.support.server import PEOPLE_PAGE, PUBLIC_PAGE, RUNBOOK, Site, bearer

QUESTION = "what should I do when etcd database quota is low?"


def post(client: TestClient, site: Site, user: str, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers=bearer(site.keys[user]))


def get(client: TestClient, site: Site, user: str, path: str) -> Any:
    return client.get(path, headers=bearer(site.keys[user]))


def test_search_respects_permissions(client: TestClient, site: Site) -> None:
    body = {"query": "etcd database quota low space", "k": 5}
    alice = post(client, site, "alice", "/api/v1/search", body).json()
    assert alice["hits"][0]["document_id"] == RUNBOOK
    carol = post(client, site, "carol", "/api/v1/search", body).json()
    assert all(h["source"] != "runbooks" for h in carol["hits"])
    only = post(client, site, "alice", "/api/v1/search", {**body, "sources": ["handbook"]})
    assert all(h["source"] == "handbook" for h in only.json()["hits"])


def test_search_unknown_source_is_400(client: TestClient, site: Site) -> None:
    resp = post(client, site, "alice", "/api/v1/search", {"query": "x", "sources": ["nope"]})
    assert resp.status_code == 400 and "unknown source" in resp.json()["detail"]


def test_document_forbidden_is_identical_to_missing(client: TestClient, site: Site) -> None:
    ok = get(client, site, "alice", f"/api/v1/documents/{RUNBOOK}")
    assert ok.status_code == 200
    doc = ok.json()
    assert doc["id"] == RUNBOOK and doc["chunks"] and "etcd" in doc["chunks"][0]["text"]
    forbidden = get(client, site, "carol", f"/api/v1/documents/{RUNBOOK}")
    missing = get(client, site, "carol", "/api/v1/documents/runbooks:alerts/nope.md")
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.content == missing.content
    assert "etcd" not in forbidden.text
    assert get(client, site, "dana", f"/api/v1/documents/{PEOPLE_PAGE}").status_code == 200
    assert get(client, site, "carol", f"/api/v1/documents/{PEOPLE_PAGE}").status_code == 404
    assert get(client, site, "carol", f"/api/v1/documents/{PUBLIC_PAGE}").status_code == 200


def test_admin_group_is_no_bypass_of_group_access(client: TestClient, site: Site) -> None:
    assert get(client, site, "root", f"/api/v1/documents/{PEOPLE_PAGE}").status_code == 404
    # root is in admins and staff only: admins see admin-only documents, not every group's.


def test_ask_cites_and_receipt_verifies(client: TestClient, site: Site) -> None:
    resp = post(client, site, "alice", "/api/v1/ask", {"question": QUESTION, "extractive": True})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["found"] and answer["ai_generated"]
    assert answer["citations"][0]["document_id"] == RUNBOOK
    assert answer["endpoint"] and answer["jurisdiction"] and answer["hosting"]
    receipt = answer["receipt"]
    check = post(client, site, "carol", "/api/v1/audit/verify-receipt", {"receipt": receipt})
    assert check.json()["valid"] is True and check.json()["index"] == receipt["index"]
    tampered = dict(receipt, index=receipt["index"] + 1)
    bad = post(client, site, "carol", "/api/v1/audit/verify-receipt", {"receipt": tampered})
    assert bad.json()["valid"] is False
    # The user can fetch a fresh proof of their own entry; another user cannot.
    fresh = get(client, site, "alice", f"/api/v1/audit/entries/{receipt['index']}/receipt")
    assert fresh.status_code == 200
    again = post(client, site, "bob", "/api/v1/audit/verify-receipt", fresh.json())
    assert again.json()["valid"] is True
    other = get(client, site, "carol", f"/api/v1/audit/entries/{receipt['index']}/receipt")
    assert other.status_code == 404
    assert get(client, site, "root", f"/api/v1/audit/entries/{receipt['index']}/receipt").is_success


def test_ask_for_carol_reveals_nothing(client: TestClient, site: Site) -> None:
    carol = post(client, site, "carol", "/api/v1/ask", {"question": QUESTION, "extractive": True})
    nothing = post(
        client, site, "carol", "/api/v1/ask", {"question": "zyxwvut qwerty", "extractive": True}
    )
    assert not carol.json()["found"] and carol.json()["citations"] == []
    assert carol.json()["text"] == nothing.json()["text"]


def read_sse(resp: httpx.Response) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    name = ""
    for line in resp.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


def test_ask_streams_server_sent_events(live_url: str, site: Site) -> None:
    with httpx.stream(
        "POST",
        live_url + "/api/v1/ask",
        json={"question": QUESTION, "extractive": True, "stream": True},
        headers=bearer(site.keys["alice"]),
        timeout=120,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = read_sse(resp)
    kinds = [k for k, _ in events]
    assert kinds[-1] == "answer" and "delta" in kinds
    final = events[-1][1]
    streamed = "".join(d["text"] for k, d in events if k == "delta")
    assert streamed.strip() == final["text"].strip()
    assert final["citations"][0]["document_id"] == RUNBOOK
    assert final["receipt"]["index"] >= 0 and final["ai_generated"] is True


def test_sources_counts_for_admins_only(client: TestClient, site: Site) -> None:
    admin = get(client, site, "root", "/api/v1/sources").json()["sources"]
    user = get(client, site, "carol", "/api/v1/sources").json()["sources"]
    assert {s["name"] for s in admin} == {s["name"] for s in user} == {"handbook", "runbooks"}
    assert all(s["counts"]["ok"] > 0 for s in admin)
    assert all("counts" not in s and "last_sync" not in s for s in user)


def test_endpoints_listed_without_secrets(client: TestClient, site: Site) -> None:
    resp = get(client, site, "carol", "/api/v1/endpoints")
    assert resp.status_code == 200 and isinstance(resp.json()["endpoints"], list)


def test_audit_events_admin_only(client: TestClient, site: Site) -> None:
    assert get(client, site, "alice", "/api/v1/audit/events").status_code == 403
    resp = get(client, site, "root", "/api/v1/audit/events?action=search&limit=5")
    events = resp.json()["events"]
    assert resp.status_code == 200 and 0 < len(events) <= 5
    assert all(e["action"] == "search" for e in events)
    key = get(client, site, "carol", "/api/v1/audit/public-key").json()["public_key"]
    assert key


def test_feedback_on_own_answer_only(client: TestClient, site: Site) -> None:
    answer = post(
        client, site, "alice", "/api/v1/ask", {"question": QUESTION, "extractive": True}
    ).json()
    index = answer["receipt"]["index"]
    body = {"answer_index": index, "rating": "up", "comment": "helpful"}
    ok = post(client, site, "alice", "/api/v1/feedback", body)
    assert ok.status_code == 201 and ok.json()["receipt"]["index"] > index
    assert post(client, site, "bob", "/api/v1/feedback", body).status_code == 404
    bad = post(client, site, "alice", "/api/v1/feedback", {**body, "rating": "meh"})
    assert bad.status_code == 422
    events = get(client, site, "root", f"/api/v1/audit/events?action=feedback&start={index}")
    logged = events.json()["events"]
    assert logged and logged[-1]["details"]["rating"] == "up"


def test_health_ready_metrics(client: TestClient, site: Site) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    post(client, site, "alice", "/api/v1/ask", {"question": QUESTION, "extractive": True})
    client.post("/api/v1/search", json={"query": "x"})  # a denial
    text = client.get("/metrics").text
    assert "sovra_http_request_duration_seconds_bucket" in text
    assert 'route="/api/v1/search"' in text
    assert "sovra_answers_total{" in text
    assert 'sovra_denials_total{reason="authentication"}' in text
    assert 'sovra_source_documents{source="runbooks",status="ok"} 3.0' in text


def test_errors_are_json_without_echo(client: TestClient, site: Site) -> None:
    secret_prompt = "my very secret prompt text"
    resp = post(client, site, "alice", "/api/v1/search", {"query": secret_prompt, "k": 999})
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid_request"
    assert secret_prompt not in resp.text
    assert client.get("/api/v1/nothing-here").json()["error"] == "not_found"
    broken = client.post(
        "/api/v1/search",
        content=b"{not json",
        headers={**bearer(site.keys["alice"]), "Content-Type": "application/json"},
    )
    assert broken.status_code == 422 and "Traceback" not in broken.text


def test_security_headers(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["cache-control"] == "no-store"


def test_openapi_and_docs_served_locally(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/api/v1/search" in schema["paths"] and "/v1/chat/completions" in schema["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/api/v1/search" in docs.text
    assert "cdn" not in docs.text.lower() and "<script" not in docs.text


def test_ask_unknown_endpoint_is_400(client: TestClient, site: Site) -> None:
    body = {"question": QUESTION, "endpoint": "no-such-endpoint"}
    assert post(client, site, "alice", "/api/v1/ask", body).status_code == 400
    streamed = post(client, site, "alice", "/api/v1/ask", {**body, "stream": True})
    assert streamed.status_code == 400


def test_invalid_unicode_is_422_not_500(client: TestClient, site: Site) -> None:
    for body in ({"query": "\ud800"}, {"query": "a\u0000b"}, {"query": "x", "language": "\ud800"}):
        raw = json.dumps(body).encode()  # JSON can carry a lone surrogate as an escape
        resp = client.post(
            "/api/v1/search",
            content=raw,
            headers={**bearer(site.keys["alice"]), "Content-Type": "application/json"},
        )
        assert resp.status_code == 422, (body, resp.text)
    chat = {"model": "sovra", "messages": [{"role": "user", "content": "\ud800"}]}
    resp = client.post(
        "/v1/chat/completions",
        content=json.dumps(chat).encode(),
        headers={**bearer(site.keys["alice"]), "Content-Type": "application/json"},
    )
    assert resp.status_code == 422


def test_model_slot_released_when_a_stream_is_abandoned(workspace: Workspace) -> None:
    from sovra.domain import QueryOptions
    from sovra.server.slots import ModelSlots

    slots = ModelSlots(workspace, model_slots=1)
    options = QueryOptions(extractive=True)
    stream = slots.stream(workspace.ask(workspace.principal("alice"), QUESTION, options))
    next(stream)  # the client reads one event, then disconnects
    stream.close()
    assert slots._slots.acquire(blocking=False)  # the slot came back
    slots._slots.release()


def test_ask_hands_the_principal_to_the_router(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answerer gets the asking Principal (the router decides and logs per principal, as
    for `sovra ask`); an OIDC principal's token groups reach it unchanged."""
    from sovra.domain import Principal, QueryOptions

    real = workspace.answerer
    seen: dict[str, object] = {}

    def spying(*args: Any, **kwargs: Any) -> object:
        answerer = real(*args, **kwargs)
        stream = answerer.stream

        def spy(question: str, flt: object, **kwargs: object) -> object:
            seen.update(kwargs)
            return stream(question, flt, **kwargs)  # type: ignore[arg-type]

        answerer.stream = spy  # type: ignore[method-assign]
        return answerer

    monkeypatch.setattr(workspace, "answerer", spying)
    olivia = Principal("olivia", frozenset({"staff", "sre"}))
    events = list(workspace.ask(olivia, QUESTION, QueryOptions(extractive=True)))
    assert seen["principal"] == olivia
    assert events[-1].answer is not None and events[-1].answer.receipt
