"""MCP server: search, ask and fetch-document tools with the caller's permissions.

Two transports share one tool set:
- `sovra mcp --as <user>` on stdio for a local agent: like `sovra search --as`, the process
  already has the data directory, and the user is resolved in the directory on every call.
- streamable HTTP at `/mcp` under `sovra serve`: every HTTP request must carry
  `Authorization: Bearer <API key or OIDC token>`, authenticated by the same `Authenticator` as
  the REST API (session cookies are refused: a bearer cannot be ridden by a cross-site page).
  API-key scopes apply per tool (search → `search`, ask → `ask`, fetch_document → `documents`).

Every tool goes through the workspace's permission path: the same filter and audit events as the REST API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.routing import Route

from sovra.domain import Principal, QueryOptions
from sovra.search.grouping import grouped_dict
from sovra.server.auth import ApiError, Identity
from sovra.server.slots import ModelSlots
from sovra.server.text import clean_text

if TYPE_CHECKING:
    from sovra.server.app import Receive, Scope, Send
    from sovra.server.deps import AppState

NOT_FOUND = "no such document"
IDENTITY_KEY = "sovra_identity"
MCP_PATH = "/mcp"

PrincipalFor = Callable[[Context[Any, Any], str], Principal]
"""The principal behind one tool call, given the API-key scope the tool needs; raises
ToolError (an error result the client sees) when there is no such caller or the credential
lacks the scope."""


def fixed_user(resolve: Callable[[], Principal]) -> PrincipalFor:
    """stdio: the one user the process was started for (resolved again on every call)."""
    return lambda _ctx, _scope: resolve()


def http_caller(ctx: Context[Any, Any], scope: str) -> Principal:
    """streamable HTTP: the Identity `McpGate` authenticated for the HTTP request that carried
    this tool call."""
    request = ctx.request_context.request
    raw_scope = getattr(request, "scope", None)
    state = raw_scope.get("state") if isinstance(raw_scope, dict) else None
    ident = state.get(IDENTITY_KEY) if isinstance(state, dict) else None
    if not isinstance(ident, Identity):
        raise ToolError("no authenticated caller")
    if scope not in ident.scopes:
        raise ToolError(f"this credential lacks the {scope!r} scope")
    return ident.principal


def build_mcp(slots: ModelSlots, principal_for: PrincipalFor) -> MCPServer:
    ws = slots.ws
    server = MCPServer(
        name="sovra",
        instructions=(
            "Governed search and cited answers over the documents this user may read. "
            "Cite answers by their [n] markers; fetch_document returns a cited document."
        ),
    )

    @server.tool(
        description="Hybrid search over the documents the user may read. By default one entry"
        " per document (title, source, uri, date) with its best passages, as REST"
        ' `group_by=document`; `group_by="chunk"` lists single passages instead.'
    )
    def search(
        query: str, ctx: Context[Any, Any], k: int = 10, group_by: str = "document"
    ) -> dict[str, Any]:
        principal = principal_for(ctx, "search")
        _clean(query)
        if group_by not in ("document", "chunk"):
            raise ToolError("group_by must be 'document' or 'chunk'")
        options = QueryOptions(k=max(1, min(k, 50)))
        if group_by == "document":
            result, documents = slots.call(ws.search_documents, principal, query, options)
            # An agent reads the passages themselves, not only their snippets.
            return grouped_dict(result, documents, passage_text=True)
        found = slots.call(ws.search, principal, query, options)
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
                for h in found.hits
            ]
        }

    @server.tool(
        description="Answer a question from the user's documents, with numbered citations, "
        "the endpoint that answered, an AI-generated flag and an audit receipt."
    )
    def ask(question: str, ctx: Context[Any, Any], extractive: bool = False) -> dict[str, Any]:
        principal = principal_for(ctx, "ask")
        _clean(question)
        final: dict[str, Any] = {}
        options = QueryOptions(extractive=extractive)
        for event in slots.stream(ws.ask(principal, question[:4000], options)):
            if event.answer is not None:
                final = event.answer.to_dict()
        return final

    @server.tool(description="The readable passages of one document, by id.")
    def fetch_document(document_id: str, ctx: Context[Any, Any]) -> dict[str, Any]:
        principal = principal_for(ctx, "documents")
        _clean(document_id)
        view = ws.document(principal, document_id[:1000])
        if view is None:
            raise ToolError(NOT_FOUND)  # identical for a forbidden and a missing document
        return view.to_dict()

    return server


def _clean(value: str) -> None:
    try:
        clean_text(value)
    except ValueError as exc:
        raise ToolError(str(exc)) from None


def _transport_security(host: str, public_url: str) -> TransportSecuritySettings | None:
    """Host/Origin checks against DNS rebinding on a loopback bind (the SDK's default), widened
    to the configured public URL; None (no check) on other binds, where a proxy decides."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if public_url:
        parts = urlsplit(public_url)
        hosts.append(parts.netloc)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


class McpGate:
    """ASGI app at `/mcp`: authenticates the bearer and rate-limits like every REST request,
    then hands the request to the MCP streamable-HTTP transport (stateless: each POST carries
    its own credential, so no server-side MCP session can outlive a revoked key)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.transport: StreamableHTTPASGIApp | None = None
        # Starlette does not record a plain ASGI route in the scope; the Guard's metrics and
        # log lines name routes by `scope["route"].path`.
        self.route = Route(MCP_PATH, endpoint=self)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve MCP for one run of the app's lifespan (a session manager runs only once, and
        an app's lifespan may run again)."""
        st = self.state
        server = build_mcp(st.slots, http_caller)
        server.streamable_http_app(
            stateless_http=True,
            json_response=True,
            max_request_body_size=st.settings.max_request_bytes,
            transport_security=_transport_security(st.settings.host, st.settings.public_url),
            host=st.settings.host,
        )
        manager: StreamableHTTPSessionManager = server.session_manager
        async with manager.run():
            self.transport = StreamableHTTPASGIApp(manager)
            try:
                yield
            finally:
                self.transport = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        scope["route"] = self.route
        st = self.state
        request = Request(scope)
        try:
            ident = await run_in_threadpool(st.auth.identify, request)
        except ApiError as exc:
            st.metrics.denials.labels("authentication").inc()
            await _error(exc)(scope, receive, send)
            return
        if ident is None or ident.method == "session":
            st.metrics.denials.labels("authentication").inc()
            err = ApiError(
                401,
                "unauthorized",
                "MCP needs 'Authorization: Bearer <API key or OIDC token>'",
                {"WWW-Authenticate": "Bearer"},
            )
            await _error(err)(scope, receive, send)
            return
        wait = st.limiter.check("p:" + ident.principal.id)
        if wait:
            st.metrics.denials.labels("rate_limit").inc()
            err = ApiError(
                429, "rate_limited", "too many requests", {"Retry-After": str(int(wait) + 1)}
            )
            await _error(err)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[IDENTITY_KEY] = ident
        state["principal_id"] = ident.principal.id
        transport = self.transport
        if transport is None:
            await _error(ApiError(503, "unavailable", "MCP is not running"))(scope, receive, send)
            return
        await transport(scope, receive, send)


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        {"error": exc.code, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )
