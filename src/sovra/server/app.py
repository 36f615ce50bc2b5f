"""The FastAPI application: wiring, security middleware, errors, health, metrics and login.

One app holds one Workspace (and its model slots) for the life of the process.
"""

from __future__ import annotations

import hmac
import html
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sovra.config import Config
from sovra.errors import Conflict, Forbidden, Invalid, NotFound, SovraError, Unavailable, kind_of
from sovra.server import api, oidc_login, openai_api, ui
from sovra.server import flows as flows_http
from sovra.server.accounts import AccountStore
from sovra.server.auth import (
    SESSION_COOKIE,
    ApiError,
    Authenticator,
    RateLimiter,
    set_session_cookie,
    unauthorized,
)
from sovra.server.deps import AppState, app_state, client_address, identity
from sovra.server.mcp_server import McpGate
from sovra.server.metrics import Metrics
from sovra.server.oidc import OidcVerifier
from sovra.server.settings import ServerSettings
from sovra.server.slots import ModelSlots
from sovra.workspace import Workspace

log = logging.getLogger("sovra.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
    b"cross-origin-opener-policy": b"same-origin",
    b"permissions-policy": b"camera=(), microphone=(), geolocation=()",
}


STATUS_FOR_KIND: dict[type[SovraError], tuple[int, str]] = {
    Invalid: (400, "bad_request"),
    NotFound: (404, "not_found"),
    Forbidden: (403, "forbidden"),
    Conflict: (409, "conflict"),
    Unavailable: (503, "unavailable"),
    SovraError: (500, "internal"),  # every raised error has a kind; a bare one is a bug
}


def api_error_for(exc: SovraError) -> ApiError:
    """The HTTP error for a SovraError, by its kind. A 5xx says only what failed in general:
    its message may name hosts, files or URLs of the deployment."""
    status, code = STATUS_FOR_KIND[kind_of(exc)]
    if status >= 500:
        detail = "a service sovra depends on is unavailable" if status == 503 else "internal error"
        return ApiError(status, code, detail)
    return ApiError(status, code, exc.message)


def error_body(path: str, status: int, code: str, detail: Any) -> dict[str, Any]:
    """Our JSON error shape; OpenAI-style under /v1 so OpenAI clients read it natively."""
    if path.startswith("/v1/"):
        return {"error": {"message": str(detail), "type": code, "code": status}}
    return {"error": code, "detail": detail}


class Guard:
    """Pure ASGI (streaming-safe): request size limit, security headers, latency metrics,
    and a log line per request with the route template, status and principal id only —
    never a query string, body, prompt or document text."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = settings.max_request_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = {"status": 500}
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = False
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = True
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, "too_large", "request body too large")
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = int(message["status"])
                raw = list(message.get("headers", []))
                present = {k.lower() for k, _ in raw}
                for key, value in SECURITY_HEADERS.items():
                    if key not in present:
                        raw.append((key, value))
                if b"content-security-policy" not in present:
                    raw.append((b"content-security-policy", API_CSP.encode()))
                if b"cache-control" not in present:
                    raw.append((b"cache-control", b"no-store"))
                message["headers"] = raw
            await send(message)

        try:
            if too_big:
                body = error_body(scope.get("path", ""), 413, "too_large", "request body too large")
                await JSONResponse(body, status_code=413)(scope, receive, send_with_headers)
            else:
                await self.app(scope, limited_receive, send_with_headers)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            status = status_holder["status"]
            self.metrics.requests.labels(scope.get("method", ""), template, str(status)).observe(
                elapsed
            )
            state = scope.get("state") or {}
            log.info(
                "%s %s %s %.1fms principal=%s",
                scope.get("method"),
                template,
                status,
                elapsed * 1000,
                state.get("principal_id", "-"),
            )


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


def create_app(
    config: Config, settings: ServerSettings | None = None, workspace: Workspace | None = None
) -> FastAPI:
    settings = settings or ServerSettings.from_config(config)
    ws = workspace or Workspace.open(config)
    slots = ModelSlots(ws)
    accounts = AccountStore.in_home(config.home)
    metrics = Metrics()
    oidc = OidcVerifier(settings) if settings.oidc_enabled else None
    state = AppState(
        settings=settings,
        ws=ws,
        slots=slots,
        accounts=accounts,
        auth=Authenticator(accounts, ws.principal, oidc),
        limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
        login_limiter=RateLimiter(
            settings.login_attempts_per_minute, settings.login_attempts_per_minute
        ),
        metrics=metrics,
    )
    mcp_gate = McpGate(state)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(slots.warm)
        try:
            async with mcp_gate.running():
                yield
        finally:
            accounts.close()
            if workspace is None:
                ws.close()

    app = FastAPI(
        title="sovra",
        version="0.1.0",
        summary="Governed search and answers over your own data",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.sovra = state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = exc.code if isinstance(exc, ApiError) else _code_for(exc.status_code)
        if wants_html(request):
            response = ui.templates.TemplateResponse(
                request,
                "error.html",
                {"user": None, "csrf": "", "status": exc.status_code, "message": exc.detail},
                status_code=exc.status_code,
                headers=exc.headers,
            )
            response.headers["Content-Security-Policy"] = ui.UI_CSP
            return response
        return JSONResponse(
            error_body(request.url.path, exc.status_code, code, exc.detail),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(SovraError)
    async def sovra_error(request: Request, exc: SovraError) -> Response:
        error = api_error_for(exc)
        if error.status_code >= 500:
            log.warning("%s on %s", type(exc).__name__, request.url.path)
        return await http_error(request, error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field locations and messages only: never echo the input (it may be a prompt).
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(
            error_body(request.url.path, 422, "invalid_request", detail), status_code=422
        )

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
        return JSONResponse(
            error_body(request.url.path, 500, "internal", "internal error"), status_code=500
        )

    app.include_router(api.router)
    app.include_router(openai_api.router)
    app.include_router(ui.router)
    app.include_router(oidc_login.router)
    app.include_router(flows_http.api_router)
    app.include_router(flows_http.ui_router)
    # MCP over streamable HTTP: an ASGI route (not a Mount) so `/mcp` itself matches.
    app.router.routes.append(mcp_gate.route)
    app.mount("/static", StaticFiles(directory=str(ui.HERE / "static")), name="static")

    @app.exception_handler(ui.LoginRequired)
    async def to_login(request: Request, exc: ui.LoginRequired) -> Response:
        return RedirectResponse("/login?next=" + quote(exc.next_path, safe="/"), status_code=303)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=None)
    async def readyz() -> JSONResponse:
        """Stores open and the embedding model loaded."""
        checks: dict[str, str] = {}

        def probe() -> None:
            for name, fn in (
                ("index", lambda: ws.index.document_ids()),
                ("state", lambda: ws.state.sources()),
                ("audit", lambda: ws.audit.size),
                ("embedding", lambda: ws.embedder.dimension),
                ("accounts", lambda: accounts.has_password("")),
            ):
                try:
                    fn()
                    checks[name] = "ok"
                except Exception as exc:
                    checks[name] = f"error: {type(exc).__name__}"

        await run_in_threadpool(probe)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics; with `metrics_token` set, only for `Bearer <metrics_token>`."""
        if settings.metrics_token:
            sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(sent.encode(), settings.metrics_token.encode()):
                raise unauthorized("metrics need the metrics token")
        for src in ws.config.sources:
            counts = ws.state.counts(src.name)
            for status in ("ok", "failed"):
                metrics.source_documents.labels(src.name, status).set(counts.get(status, 0))
            report = ws.state.last_report(src.name)
            finished = (report or {}).get("finished_at")
            if isinstance(finished, str):
                from datetime import datetime

                try:
                    stamp = datetime.fromisoformat(finished).timestamp()
                    metrics.source_last_sync.labels(src.name).set(stamp)
                except ValueError:
                    pass
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/auth/login", tags=["auth"])
    async def login(body: LoginRequest, request: Request) -> JSONResponse:
        """Local user login: sets an HttpOnly, SameSite=Strict session cookie and returns the
        CSRF token to send as `X-CSRF-Token` on state-changing requests."""
        return await _login(request, body.username, body.password)

    @app.post("/auth/login-form", tags=["auth"], include_in_schema=False)
    async def login_form(
        request: Request,
        username: Annotated[str, Form(max_length=128)],
        password: Annotated[str, Form(max_length=1024)],
    ) -> JSONResponse:
        return await _login(request, username, password)

    async def _login(request: Request, username: str, password: str) -> JSONResponse:
        wait = state.login_limiter.check("login:" + client_address(request))
        if wait:
            metrics.denials.labels("rate_limit").inc()
            raise ApiError(429, "rate_limited", "too many login attempts", {"Retry-After": "60"})
        ok = await run_in_threadpool(accounts.check_password, username, password)
        if not ok or state.auth.local_principal(username) is None:
            metrics.denials.labels("login").inc()
            raise ApiError(401, "unauthorized", "wrong user name or password")
        token, session = accounts.create_session(username, settings.session_ttl_s)
        resp = JSONResponse({"user": username, "csrf_token": session.csrf})
        set_session_cookie(
            resp, token, max_age=settings.session_ttl_s, secure=settings.secure_cookies
        )
        return resp

    @app.post("/auth/logout", tags=["auth"])
    async def logout(request: Request, st: Annotated[AppState, Depends(app_state)]) -> Response:
        await identity(request)  # CSRF-checked like any state-changing request
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            st.accounts.end_session(token)
        resp = Response(status_code=204)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """A self-contained API index (no CDN scripts): every route, with /openapi.json."""
        rows = []
        for path, ops in sorted(app.openapi().get("paths", {}).items()):
            for method, op in ops.items():
                summary = html.escape(str(op.get("summary", "")))
                rows.append(
                    f"<tr><td>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
                    f"<td>{summary}</td></tr>"
                )
        page = (
            "<!doctype html><html lang=en><meta charset=utf-8><title>sovra API</title>"
            "<h1>sovra API</h1><p>Machine-readable schema: "
            "<a href='/openapi.json'>/openapi.json</a></p>"
            "<table><tr><th>method</th><th>path</th><th>summary</th></tr>"
            + "".join(rows)
            + "</table></html>"
        )
        return HTMLResponse(page)

    app.add_middleware(Guard, settings=settings, metrics=metrics)
    return app


def wants_html(request: Request) -> bool:
    """Browsers navigating the UI get an HTML error page; API clients always get JSON."""
    path = request.url.path
    if path.startswith(("/api/", "/v1/", "/auth/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def _code_for(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
        429: "rate_limited",
    }.get(status, "error")
