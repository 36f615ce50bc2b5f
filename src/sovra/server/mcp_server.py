"""MCP server: search, ask and fetch-document tools with the caller's permissions.

`sovra mcp --as <user>` serves it on stdio for a local agent: like `sovra search --as`, the
process already has the data directory, and the user is resolved in the directory on every
call (a revoked membership applies at once). Every tool goes through `Governed`, the same
permission path and audit events as the REST API. (Streamable HTTP under `sovra serve` is not
done yet.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer

from sovra.domain import Principal
from sovra.server.governed import Governed
from sovra.server.text import clean_text

NOT_FOUND = "no such document"


def build_mcp(governed: Governed, principal: Callable[[], Principal]) -> MCPServer:
    server = MCPServer(
        name="sovra",
        instructions=(
            "Governed search and cited answers over the documents this user may read. "
            "Cite answers by their [n] markers; fetch_document returns a cited document."
        ),
    )

    @server.tool(description="Hybrid search over the documents the user may read.")
    def search(query: str, k: int = 10) -> dict[str, Any]:
        clean_text(query)
        result = governed.search(principal(), query, k=max(1, min(k, 50)))
        return {
            "hits": [
                {
                    "rank": h.rank,
                    "document_id": h.chunk.document_id,
                    "chunk_id": h.chunk.id,
                    "title": h.chunk.title,
                    "source": h.chunk.source,
                    "uri": h.chunk.uri,
                    "text": h.chunk.text,
                }
                for h in result.hits
            ]
        }

    @server.tool(
        description="Answer a question from the user's documents, with numbered citations, "
        "the endpoint that answered, an AI-generated flag and an audit receipt."
    )
    def ask(question: str, extractive: bool = False) -> dict[str, Any]:
        clean_text(question)
        final: dict[str, Any] = {}
        for event in governed.ask(principal(), question[:4000], extractive=extractive):
            if event.answer is not None:
                final = event.answer.to_dict()
        return final

    @server.tool(description="The readable passages of one document, by id.")
    def fetch_document(document_id: str) -> dict[str, Any]:
        clean_text(document_id)
        view = governed.document(principal(), document_id[:1000])
        if view is None:
            raise ValueError(NOT_FOUND)  # identical for a forbidden and a missing document
        return view.to_dict()

    return server
