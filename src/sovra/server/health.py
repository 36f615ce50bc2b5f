"""Health, readiness, Prometheus metrics and the self-contained API index (`/docs`)."""

from __future__ import annotations

import hmac
import html
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sovra.server.auth import unauthorized
from sovra.server.deps import AppState, Public, app_state

router = APIRouter()
State = Annotated[AppState, Depends(app_state)]
Probe = Annotated[None, Depends(Public("liveness/readiness: no data, for load balancers"))]
Scrape = Annotated[None, Depends(Public("with metrics_token set, the handler requires it"))]
Index = Annotated[None, Depends(Public("the static API index"))]


@router.get("/healthz", tags=["health"])
async def healthz(_rule: Probe) -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], response_model=None)
async def readyz(st: State, _rule: Probe) -> JSONResponse:
    """Stores open and the embedding model loaded."""
    checks: dict[str, str] = {}
    ws = st.ws

    def probe() -> None:
        for name, fn in (
            ("index", lambda: ws.index.document_ids()),
            ("state", lambda: ws.state.sources()),
            ("audit", lambda: ws.audit.size),
            ("embedding", lambda: ws.embedder.dimension),
            ("accounts", lambda: st.accounts.has_password("")),
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


@router.get("/metrics", tags=["health"], include_in_schema=False)
async def prometheus(request: Request, st: State, _rule: Scrape) -> Response:
    """Prometheus metrics; with `metrics_token` set, only for `Bearer <metrics_token>`."""
    token = st.settings.metrics_token
    if token:
        sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), token.encode()):
            raise unauthorized("metrics need the metrics token")
    metrics = st.metrics
    for src in st.ws.config.sources:
        counts = st.ws.state.counts(src.name)
        for status in ("ok", "failed", "skipped"):
            metrics.source_documents.labels(src.name, status).set(counts.get(status, 0))
        report = st.ws.state.last_report(src.name)
        finished = (report or {}).get("finished_at")
        if isinstance(finished, str):
            try:
                stamp = datetime.fromisoformat(finished).timestamp()
                metrics.source_last_sync.labels(src.name).set(stamp)
            except ValueError:
                pass
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/docs", include_in_schema=False)
async def docs(request: Request, _rule: Index) -> HTMLResponse:
    """A self-contained API index (no CDN scripts): every route, with /openapi.json."""
    rows = []
    for path, ops in sorted(request.app.openapi().get("paths", {}).items()):
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
