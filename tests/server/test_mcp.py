"""MCP tools with the `mcp` client library: in memory against the session workspace, over
stdio against `sovra mcp` in a child process, and over streamable HTTP against the server on a
real loopback port (bearer API keys and OIDC tokens)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import mcp
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from sovra.server.mcp_server import build_mcp, fixed_user
from sovra.server.slots import ModelSlots
from sovra.workspace import Workspace
from tests.support.server import PEOPLE_PAGE, RUNBOOK, Issuer, Site, bearer

QUESTION = "what should I do when etcd database quota is low?"


def payload(result: Any) -> dict[str, Any]:
    assert not result.is_error, result
    data: dict[str, Any] = result.structured_content or json.loads(result.content[0].text)
    return data


async def calls(server: Any, user_calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    async with mcp.Client(server) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"search", "ask", "fetch_document"} <= tools
        return [await client.call_tool(name, args) for name, args in user_calls]


def as_user(workspace: Workspace, user: str) -> Any:
    return build_mcp(ModelSlots(workspace), fixed_user(lambda: workspace.principal(user)))


def test_tools_respect_the_users_permissions(workspace: Workspace) -> None:
    todo = [
        ("search", {"query": "etcd database quota low space", "k": 5}),
        ("ask", {"question": QUESTION, "extractive": True}),
        ("fetch_document", {"document_id": RUNBOOK}),
        ("fetch_document", {"document_id": "runbooks:nope.md"}),
    ]
    alice = asyncio.run(calls(as_user(workspace, "alice"), todo))
    assert payload(alice[0])["documents"][0]["document_id"] == RUNBOOK
    answer = payload(alice[1])
    assert answer["citations"][0]["document_id"] == RUNBOOK and answer["receipt"]
    assert payload(alice[2])["id"] == RUNBOOK
    assert alice[3].is_error
    carol = asyncio.run(calls(as_user(workspace, "carol"), todo))
    assert all(d["source"] != "runbooks" for d in payload(carol[0])["documents"])
    assert payload(carol[1])["citations"] == []
    assert carol[2].is_error and carol[3].is_error
    forbidden, missing = carol[2].content[0].text, carol[3].content[0].text
    assert forbidden == missing and "etcd" not in forbidden


@pytest.mark.slow
def test_sovra_mcp_over_stdio(site: Site, tmp_path: Path) -> None:
    # The embedded index is single-process: the child gets its own copy of the site.
    copy = tmp_path / "site"
    shutil.copytree(site.root, copy, ignore=shutil.ignore_patterns("*.lock"))
    code = (
        "import typer, sys\n"
        "from sovra.cli import app\n"
        "from sovra.cli import serve as s\n"
        "app.command('mcp')(s.mcp_command)\n"
        "app()\n"
    )
    params = mcp.StdioServerParameters(
        command=sys.executable,
        args=["-c", code, "--config", str(copy / "sovra.toml"), "mcp", "--as", "dana"],
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    results = asyncio.run(calls(params, [("fetch_document", {"document_id": PEOPLE_PAGE})]))
    assert payload(results[0])["id"] == PEOPLE_PAGE


# ---------------------------------------------------------------------- streamable HTTP
def over_http(live_url: str, token: str) -> Any:
    client = create_mcp_http_client(headers=bearer(token))
    return streamable_http_client(live_url + "/mcp", http_client=client)


HTTP_TODO = [
    ("search", {"query": "etcd database quota low space", "k": 5}),
    ("fetch_document", {"document_id": RUNBOOK}),
    ("fetch_document", {"document_id": "runbooks:nope.md"}),
    ("ask", {"question": QUESTION, "extractive": True}),
]


def test_streamable_http_uses_the_callers_permissions(live_url: str, site: Site) -> None:
    alice = asyncio.run(calls(over_http(live_url, site.keys["alice"]), HTTP_TODO))
    assert payload(alice[0])["documents"][0]["document_id"] == RUNBOOK
    assert payload(alice[1])["id"] == RUNBOOK
    assert alice[2].is_error
    answer = payload(alice[3])
    assert answer["citations"][0]["document_id"] == RUNBOOK and answer["receipt"]
    carol = asyncio.run(calls(over_http(live_url, site.keys["carol"]), HTTP_TODO))
    assert all(d["source"] != "runbooks" for d in payload(carol[0])["documents"])
    assert carol[1].is_error and carol[2].is_error
    assert carol[1].content[0].text == carol[2].content[0].text
    assert "etcd" not in carol[1].content[0].text
    assert payload(carol[3])["citations"] == []


def test_streamable_http_oidc_token_and_scopes(live_url: str, site: Site, issuer: Issuer) -> None:
    sre = issuer.token("olivia", ("staff", "sre"))
    olivia = asyncio.run(calls(over_http(live_url, sre), HTTP_TODO[1:2]))
    assert payload(olivia[0])["id"] == RUNBOOK
    # A search-only API key may search but not fetch documents.
    limited = asyncio.run(calls(over_http(live_url, site.keys["alice-search"]), HTTP_TODO[:2]))
    assert payload(limited[0])["documents"]
    assert limited[1].is_error and "documents" in limited[1].content[0].text


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("sovra_abcdefabcdef_" + "x" * 43),
        {"Authorization": "Basic YWxpY2U6eA=="},
    ],
    ids=["no-token", "unknown-key", "not-bearer"],
)
def test_streamable_http_refuses_without_a_valid_bearer(
    live_url: str, headers: dict[str, str]
) -> None:
    resp = httpx.post(live_url + "/mcp", json=INIT, headers={**ACCEPT, **headers}, timeout=30)
    assert resp.status_code == 401
    assert resp.json()["error"] == "unauthorized"
    assert resp.headers["www-authenticate"] == "Bearer"


def test_streamable_http_refuses_a_session_cookie(live_url: str) -> None:
    with httpx.Client(base_url=live_url, timeout=30) as http:
        login = http.post("/auth/login", json={"username": "alice", "password": "alice-password-1"})
        assert login.status_code == 200
        resp = http.post(
            "/mcp", json=INIT, headers={**ACCEPT, "X-CSRF-Token": login.json()["csrf_token"]}
        )
    assert resp.status_code == 401


def test_streamable_http_tool_call_without_a_client(live_url: str, site: Site) -> None:
    # Stateless transport: a bare tools/call POST works on its own, with the caller's rights.
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "fetch_document", "arguments": {"document_id": RUNBOOK}},
    }
    headers = {**ACCEPT, "MCP-Protocol-Version": "2025-06-18"}
    for user, visible in (("alice", True), ("carol", False)):
        resp = httpx.post(
            live_url + "/mcp",
            json=call,
            headers={**headers, **bearer(site.keys[user])},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        result = resp.json()["result"]
        assert bool(result.get("isError")) is not visible
        assert ("total existing DB size" in resp.text) is visible
    # Requests to /mcp are measured under their route like every other route.
    metrics = httpx.get(live_url + "/metrics", timeout=30).text
    assert 'route="/mcp",status="200"' in metrics, [
        line for line in metrics.splitlines() if "mcp" in line or "unmatched" in line
    ][:5]
