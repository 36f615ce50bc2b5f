"""The governance page: the compliance report's sections and downloads, for admins and auditors.

`/governance` shows the same sections as `sovra report compliance` (rendered from the same
evidence bundle), with the alerts of the last `sovra monitor check` as a banner; `/governance/report.{html,pdf,json}`
downloads the report for a period. Administrators and members of the `auditors` group only;
everyone else gets the 403 page (downloads: 403 JSON). The report is computed in a worker
thread: it verifies the whole audit log first.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from markupsafe import Markup

from sovra.governance.monitor import latest_state
from sovra.governance.report import build_report, bundle_json, render_html, render_pdf
from sovra.server.auth import Identity, forbidden
from sovra.server.deps import AppState, Needs, app_state
from sovra.server.ui import page

router = APIRouter(include_in_schema=False)
State = Annotated[AppState, Depends(app_state)]
# The `audit` scope for API keys; who may govern (admins, auditors) is checked in the route.
GovernPage = Annotated[Identity, Depends(Needs("audit", page=True))]
GovernDownload = Annotated[Identity, Depends(Needs("audit"))]
DateArg = Annotated[date | None, Query(description="A day, YYYY-MM-DD (UTC).")]
MEDIA = {"html": "text/html; charset=utf-8", "pdf": "application/pdf", "json": "application/json"}


def may_govern(ident: Identity) -> bool:
    return ident.principal.is_admin or ident.principal.is_auditor


def _bounds(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """Days as UTC midnights; `until` is inclusive for people, so the period ends the day after."""
    start = datetime.combine(since, time(), UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), time(), UTC) if until else None
    return start, end


def monitor_alerts(st: AppState) -> list[str]:
    """The alerts of the last recorded `sovra monitor check`, as lines for the banner."""
    try:
        state = latest_state(st.ws)
    except (OSError, ValueError, KeyError, TypeError):
        return ["the monitoring state could not be read; run `sovra monitor check` again"]
    return [] if state is None else [a.message for a in state.alerts]


@router.get("/governance")
async def governance_page(
    request: Request, st: State, who: GovernPage, since: DateArg = None, until: DateArg = None
) -> Response:
    if not may_govern(who):
        return page(request, "forbidden.html", who, status=403)
    start, end = _bounds(since, until)
    bundle = await run_in_threadpool(build_report, st.ws, start, end)
    alerts = await run_in_threadpool(monitor_alerts, st)
    query = "&".join(
        f"{k}={v.isoformat()}" for k, v in (("since", since), ("until", until)) if v is not None
    )
    return page(
        request,
        "governance.html",
        who,
        status=200,
        bundle=bundle,
        sections=Markup(render_html(bundle, standalone=False)),
        alerts=alerts,
        since=since.isoformat() if since else "",
        until=until.isoformat() if until else "",
        query=("?" + query) if query else "",
    )


@router.get("/governance/report.{fmt}")
async def governance_download(
    request: Request,
    fmt: str,
    st: State,
    who: GovernDownload,
    since: DateArg = None,
    until: DateArg = None,
) -> Response:
    if not may_govern(who):
        raise forbidden("administrators and auditors only")
    if fmt not in MEDIA:
        return page(request, "not_found.html", who, status=404)
    start, end = _bounds(since, until)

    def make() -> bytes:
        bundle = build_report(st.ws, start, end)
        if fmt == "pdf":
            return render_pdf(bundle)
        text = render_html(bundle) if fmt == "html" else bundle_json(bundle)
        return text.encode("utf-8")

    data = await run_in_threadpool(make)
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    return Response(
        data,
        media_type=MEDIA[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="compliance-report-{stamp}.{fmt}"',
            # The downloaded HTML carries its own inline styles and is never run as a page here.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        },
    )
