"""MCP tools with the `mcp` client library: in memory against the session workspace, and over
stdio against `sovra mcp` in a child process."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import mcp
import pytest
from server_helpers import PEOPLE_PAGE, RUNBOOK, Site

from sovra.server.governed import Governed
from sovra.server.mcp_server import build_mcp
from sovra.workspace import Workspace

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
    return build_mcp(Governed(workspace), lambda: workspace.principal(user))


def test_tools_respect_the_users_permissions(workspace: Workspace) -> None:
    todo = [
        ("search", {"query": "etcd database quota low space", "k": 5}),
        ("ask", {"question": QUESTION, "extractive": True}),
        ("fetch_document", {"document_id": RUNBOOK}),
        ("fetch_document", {"document_id": "runbooks:nope.md"}),
    ]
    alice = asyncio.run(calls(as_user(workspace, "alice"), todo))
    assert payload(alice[0])["hits"][0]["document_id"] == RUNBOOK
    answer = payload(alice[1])
    assert answer["citations"][0]["document_id"] == RUNBOOK and answer["receipt"]
    assert payload(alice[2])["id"] == RUNBOOK
    assert alice[3].is_error
    carol = asyncio.run(calls(as_user(workspace, "carol"), todo))
    assert all(h["source"] != "runbooks" for h in payload(carol[0])["hits"])
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
        "from sovra.server import cli as s\n"
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
