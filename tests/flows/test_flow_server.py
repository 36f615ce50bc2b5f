"""Flows over HTTP: REST start/show/approve with separation of duties (API and browser), API keys
may not approve, and the approvals inbox page. The app runs without its model warm-up (no
lifespan): these routes need no model."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sovra.config import load_config
from sovra.flows.actions import TicketStore
from sovra.server import ServerSettings, create_app
from sovra.server.accounts import AccountStore
from sovra.workspace import Workspace
from tests.support.flows import ACCESS_WORKFLOW as WORKFLOW
from tests.support.flows import make_site


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    make_site(tmp_path)
    (tmp_path / "data" / "workflows" / "access.yaml").write_text(WORKFLOW, encoding="utf-8")
    config = load_config(tmp_path / "sovra.toml")
    accounts = AccountStore.in_home(config.home)
    keys = {}
    try:
        for user in ("bob", "erin"):
            accounts.set_password(user, f"pw-{user}-long-enough-1")
            keys[user] = accounts.create_key(user, "tests", ("search", "ask", "flows"))[0]
        keys["bob-default"] = accounts.create_key("bob", "default scopes")[0]
    finally:
        accounts.close()
    ws = Workspace.open(config)
    settings = ServerSettings(
        secure_cookies=False, rate_limit_per_minute=100_000, rate_limit_burst=10_000
    )
    c = TestClient(create_app(config, settings, ws), raise_server_exceptions=False)
    c.keys = keys  # type: ignore[attr-defined]
    c.home = config.home  # type: ignore[attr-defined]
    yield c
    ws.close()


def sign_in(c: TestClient, user: str) -> str:
    c.cookies.clear()
    form = c.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]*)"', form.text)
    assert token
    resp = c.post(
        "/login",
        data={
            "username": user,
            "password": f"pw-{user}-long-enough-1",
            "csrf_token": token.group(1),
            "next": "/flows",
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    page = c.get("/flows")
    found = re.search(r'name="csrf_token" value="([^"]*)"', page.text) or re.search(
        r'name="csrf-token" content="([^"]*)"', page.text
    )
    assert found, page.text
    return found.group(1)


def test_rest_start_sod_and_approve(client: TestClient) -> None:
    bob = {"Authorization": f"Bearer {client.keys['bob']}"}  # type: ignore[attr-defined]
    erin_key = {"Authorization": f"Bearer {client.keys['erin']}"}  # type: ignore[attr-defined]
    resp = client.post("/api/v1/flows/access/runs", json={"inputs": {"title": "vpn"}}, headers=bob)
    assert resp.status_code == 201, resp.text
    run = resp.json()
    assert run["status"] == "waiting_approval" and run["requester"] == "bob"
    run_id = run["id"]

    # Workflows are not in an API key's default scopes.
    plain = {"Authorization": f"Bearer {client.keys['bob-default']}"}  # type: ignore[attr-defined]
    resp = client.post("/api/v1/flows/access/runs", json={"inputs": {"title": "x"}}, headers=plain)
    assert resp.status_code == 403 and "flows" in resp.json()["detail"]
    assert client.get(f"/api/v1/flows/runs/{run_id}", headers=plain).status_code == 403

    # An API key (a machine) never approves.
    resp = client.post(f"/api/v1/flows/runs/{run_id}/approve", json={}, headers=erin_key)
    assert resp.status_code == 403 and "API key" in resp.json()["detail"]

    # Bob, signed in, cannot approve his own run: separation of duties, via the API too.
    csrf = sign_in(client, "bob")
    resp = client.post(
        f"/api/v1/flows/runs/{run_id}/approve", json={}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status_code == 403, resp.text
    assert "separation of duties" in resp.json()["detail"]

    csrf = sign_in(client, "erin")
    inbox = client.get("/api/v1/flows/inbox").json()
    assert [i["run"]["id"] for i in inbox] == [run_id]
    page = client.get(f"/flows/runs/{run_id}")
    assert page.status_code == 200 and 'value="approve"' in page.text
    resp = client.post(
        f"/flows/runs/{run_id}/decide",
        data={"decision": "approve", "reason": "ok", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert resp.status_code == 303
    assert client.get(f"/api/v1/flows/runs/{run_id}").json()["status"] == "completed"
    store = TicketStore(client.home / "tickets.db")  # type: ignore[attr-defined]
    try:
        ticket = store.get(run_id)
        assert ticket is not None and ticket.status == "granted"
    finally:
        store.close()


def test_inbox_hides_own_runs_and_others_cannot_see(client: TestClient) -> None:
    bob = {"Authorization": f"Bearer {client.keys['bob']}"}  # type: ignore[attr-defined]
    run_id = client.post(
        "/api/v1/flows/access/runs", json={"inputs": {"title": "x"}}, headers=bob
    ).json()["id"]
    sign_in(client, "bob")
    page = client.get("/flows")
    assert "nothing-pending" in page.text and run_id in page.text
    assert 'value="approve"' not in client.get(f"/flows/runs/{run_id}").text
    client.cookies.clear()
    assert client.get(f"/api/v1/flows/runs/{run_id}").status_code == 401
    resp = client.post("/api/v1/flows/nope/runs", json={"inputs": {}}, headers=bob)
    assert resp.status_code == 404


def test_flow_errors_become_statuses_by_kind(client: TestClient) -> None:
    """Typed flow errors, not their messages, pick the status: FlowNotFound → 404,
    FlowConflict → 409, a bad request (FlowError, Invalid) → 400."""
    bob = {"Authorization": f"Bearer {client.keys['bob']}"}  # type: ignore[attr-defined]
    erin = {"Authorization": f"Bearer {client.keys['erin']}"}  # type: ignore[attr-defined]
    missing = client.post("/api/v1/flows/nope/runs", json={"inputs": {}}, headers=bob)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert "no workflow 'nope'" in missing.json()["detail"]

    no_input = client.post("/api/v1/flows/access/runs", json={"inputs": {}}, headers=bob)
    assert no_input.status_code == 400 and no_input.json()["error"] == "bad_request"
    assert "title" in no_input.json()["detail"]

    run_id = client.post(
        "/api/v1/flows/access/runs", json={"inputs": {"title": "vpn"}}, headers=bob
    ).json()["id"]
    absent = client.get("/api/v1/flows/runs/run-does-not-exist", headers=erin)
    assert absent.status_code == 404 and absent.json()["error"] == "not_found"
    assert absent.json()["detail"].startswith("no flow run 'run-does-not-exist'")

    csrf = sign_in(client, "erin")
    ok = client.post(
        f"/api/v1/flows/runs/{run_id}/approve", json={}, headers={"X-CSRF-Token": csrf}
    )
    assert ok.status_code == 200, ok.text
    again = client.post(
        f"/api/v1/flows/runs/{run_id}/approve", json={}, headers={"X-CSRF-Token": csrf}
    )
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    assert "not waiting for an approval" in again.json()["detail"]
