"""The FastAPI application: the app state, security middleware and error rendering; the routes
live in their modules (api, openai_api, ui, flows, oidc_login, health, login, the MCP gate).

One app holds one Workspace (and its model slots) for the life of the process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from sovra.config import Config
from sovra.errors import Conflict, Forbidden, Invalid, NotFound, SovraError, Unavailable, kind_of
from sovra.server import api, health, login, oidc_login, openai_api, scim, ui
from sovra.server import flows as flows_http
from sovra.server import governance as governance_http
from sovra.server.accounts import AccountStore
from sovra.server.auth import (
    ApiError,
    Authenticator,
    RateLimiter,
)
from sovra.server.deps import AppState, LoginRequired
from sovra.server.mcp_server import McpGate
from sovra.server.metrics import Metrics
from sovra.server.oidc import OidcVerifier, PendingLogins
from sovra.server.settings import ServerSettings
from sovra.server.slots import ModelSlots, freeze_startup_heap
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


def create_app(
    config: Config,
    settings: ServerSettings | None = None,
    workspace: Workspace | None = None,
    *,
    freeze_heap: bool = False,
) -> FastAPI:
    """The app over `config`. `freeze_heap`: once warmed, freeze the start-up heap out of the
    garbage collector's full passes (`slots.freeze_startup_heap`); for the serving process."""
    settings = settings or ServerSettings.from_config(config)
    ws = workspace or Workspace.open(config, serving=True)
    slots = ModelSlots(ws, processes=settings.workers)
    accounts = AccountStore.for_config(config)
    metrics = Metrics()
    oidc = OidcVerifier(settings) if settings.oidc_enabled else None
    state = AppState(
        settings=settings,
        ws=ws,
        slots=slots,
        accounts=accounts,
        auth=Authenticator(
            accounts,
            ws.directory.active_user,
            oidc,
            session_recheck_s=settings.session_recheck_s,
        ),
        # Limits and sign-ins in progress live beside the credentials: global across replicas.
        limiter=RateLimiter(
            settings.rate_limit_per_minute, settings.rate_limit_burst, accounts.engine
        ),
        login_limiter=RateLimiter(
            settings.login_attempts_per_minute,
            settings.login_attempts_per_minute,
            accounts.engine,
            scope="login",
        ),
        metrics=metrics,
        oidc_pending=PendingLogins(accounts.engine),
    )
    mcp_gate = McpGate(state)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(slots.warm)
        if freeze_heap:
            freeze_startup_heap()
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
                "forbidden.html" if exc.status_code == 403 else "error.html",
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
    app.include_router(governance_http.router)
    app.include_router(scim.router)
    app.add_exception_handler(scim.ScimFail, scim.error_response)
    # MCP over streamable HTTP: an ASGI route (not a Mount) so `/mcp` itself matches.
    app.router.routes.append(mcp_gate.route)
    app.mount("/static", StaticFiles(directory=str(ui.HERE / "static")), name="static")

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/login?next=" + quote(exc.next_path, safe="/"), status_code=303)

    app.include_router(health.router)
    app.include_router(login.router)

    app.add_middleware(Guard, settings=settings, metrics=metrics)
    return app


WORKER_CONFIG_ENV = "SOVRA_WORKER_CONFIG"
"""Set by `sovra serve --workers N` for its worker processes: the config file they load."""


def worker_app() -> FastAPI:
    """The app of one worker process of `sovra serve --workers N` (a uvicorn factory).

    The supervisor passes what its command line decided through the environment: the config
    file in `SOVRA_WORKER_CONFIG`, host, port and workers as `SOVRA_SERVER_*`."""
    import os
    from pathlib import Path

    from sovra.config import load_config

    path = os.environ.get(WORKER_CONFIG_ENV)
    config = load_config(Path(path) if path else None)
    return create_app(config, ServerSettings.from_config(config), freeze_heap=True)


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
