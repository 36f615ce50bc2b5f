"""Web UI: server-rendered Jinja2 pages (readable without JavaScript) enhanced with htmx and
one small script that streams answers. Strict CSP (scripts and styles from 'self' only),
CSRF tokens on every form, the same identities and permission path as the API."""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from sovra.answer import Answer, readable
from sovra.audit import ReceiptError, verify_receipt
from sovra.config import ConfigError
from sovra.domain import QueryOptions
from sovra.search.grouping import DocumentHit
from sovra.server.api import AskRequest, ask_once, source_rows
from sovra.server.auth import SESSION_COOKIE, ApiError, Identity, set_session_cookie
from sovra.server.deps import (
    AppState,
    MaybeSignedIn,
    Needs,
    Public,
    app_state,
    client_address,
)
from sovra.server.policy_check import (
    ACTIONS,
    PolicyCheckError,
    PolicyCheckRequest,
    active_policies,
    check_policy,
)
from sovra.server.text import is_clean, safe_next_path

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
LOGIN_CSRF_COOKIE = "sovra_login_csrf"

router = APIRouter(include_in_schema=False)
State = Annotated[AppState, Depends(app_state)]
# One rule per page (see `sovra.server.deps.Needs`); anonymous browsers are sent to sign in.
Asker = Annotated[Identity, Depends(Needs("ask", page=True))]
Searcher = Annotated[Identity, Depends(Needs("search", page=True))]
Reader = Annotated[Identity, Depends(Needs("documents", page=True))]
Auditor = Annotated[Identity, Depends(Needs("audit", page=True))]
AuditAdmin = Annotated[Identity, Depends(Needs("audit", admin=True, page=True))]
Admin = Annotated[Identity, Depends(Needs("admin", admin=True, page=True))]
SigningIn = Annotated[None, Depends(Public("the sign-in form; its POST has a double-submit token"))]
MaybeIdent = Annotated[
    Identity | None, Depends(MaybeSignedIn("signing out ends the caller's session, if any"))
]


def page(
    request: Request,
    name: str,
    ident: Identity | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        name,
        {
            "user": ident.principal if ident else None,
            "csrf": ident.csrf if ident else "",
            **context,
        },
        status_code=status,
    )
    response.headers["Content-Security-Policy"] = UI_CSP
    return response


def fragment(chunk_id: str) -> str:
    return "p" + chunk_id.rpartition("#")[2]


templates.env.filters["fragment"] = fragment
templates.env.filters["readable"] = readable
templates.env.filters["urlpath"] = lambda s: quote(str(s), safe="/:")


FeedbackGiver = Annotated[Identity, Depends(Needs("feedback", page=True))]
FEEDBACK_SAID = {"up": "Thanks: marked helpful.", "down": "Thanks: marked not helpful."}


def recent_for(st: AppState, ident: Identity) -> list[str]:
    """The caller's own recent questions (the workspace reads by the principal's id)."""
    return st.ws.recent_questions(ident.principal)


@router.get("/")
async def home(
    request: Request,
    st: State,
    ident: Asker,
    q: Annotated[str, Query(max_length=4000)] = "",
    feedback: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    recent = await run_in_threadpool(recent_for, st, ident)
    return page(
        request,
        "ask.html",
        ident,
        answer=None,
        question=q if is_clean(q) else "",
        extractive=False,
        recent=recent,
        notice=FEEDBACK_SAID.get(feedback, ""),
    )


@router.post("/feedback")
async def feedback_submit(
    st: State,
    who: FeedbackGiver,
    answer_index: Annotated[int, Form(ge=0)],
    rating: Annotated[Literal["up", "down"], Form()],
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """The no-JavaScript path of the feedback buttons (the script posts to the API instead)."""
    if not is_clean(comment):
        raise ApiError(422, "invalid_request", "the comment is not valid text")
    stored = await run_in_threadpool(st.ws.feedback, who.principal, answer_index, rating, comment)
    if stored is None:
        raise ApiError(404, "not_found", "no such answer")
    return RedirectResponse(f"/?feedback={rating}", status_code=303)


@router.get("/login")
async def login_page(request: Request, _rule: SigningIn, next: str = "/") -> Response:
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", None, login_csrf=token, next=safe_next_path(next))
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=app_state(request).settings.secure_cookies,
        path="/login",
    )
    return response


@router.post("/login")
async def login_submit(
    request: Request,
    st: State,
    _rule: SigningIn,
    username: Annotated[str, Form(max_length=128)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        st.metrics.denials.labels("csrf").inc()
        raise ApiError(403, "csrf", "login form expired; reload the page")
    if st.login_limiter.check("login:" + client_address(request)):
        st.metrics.denials.labels("rate_limit").inc()
        raise ApiError(429, "rate_limited", "too many login attempts", {"Retry-After": "60"})
    ok = await run_in_threadpool(st.accounts.check_password, username, password)
    if not ok or st.auth.local_principal(username) is None:
        st.metrics.denials.labels("login").inc()
        token = secrets.token_urlsafe(24)
        response = page(
            request,
            "login.html",
            None,
            status=401,
            error="Wrong user name or password.",
            login_csrf=token,
            next=safe_next_path(next),
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=st.settings.secure_cookies,
            path="/login",
        )
        return response
    token, _ = st.accounts.create_session(username, st.settings.session_ttl_s)
    redirect = RedirectResponse(safe_next_path(next), status_code=303)
    set_session_cookie(
        redirect, token, max_age=st.settings.session_ttl_s, secure=st.settings.secure_cookies
    )
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return redirect


@router.post("/logout")
async def logout_submit(request: Request, st: State, ident: MaybeIdent) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if ident is not None and token:
        st.accounts.end_session(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/ask")
async def ask_submit(
    request: Request,
    st: State,
    who: Asker,
    question: Annotated[str, Form(min_length=1, max_length=4000)],
    extractive: Annotated[bool, Form()] = False,
) -> Response:
    """The no-JavaScript path: the whole answer rendered server-side."""
    if not is_clean(question):
        raise ApiError(422, "invalid_request", "the question is not valid text")
    body = AskRequest(question=question, extractive=extractive)
    answer: Answer = await run_in_threadpool(ask_once, st, who, body)
    recent = await run_in_threadpool(recent_for, st, who)
    return page(
        request,
        "ask.html",
        who,
        answer=answer,
        question=question,
        extractive=extractive,
        recent=recent,
    )


@router.get("/search")
async def search_page(
    request: Request,
    st: State,
    who: Searcher,
    q: Annotated[str, Query(max_length=2000)] = "",
    source: Annotated[str, Query(max_length=100)] = "",
    language: Annotated[str, Query(max_length=8)] = "",
    modified_from: Annotated[str, Query(max_length=10)] = "",
    modified_to: Annotated[str, Query(max_length=10)] = "",
    max_classification: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    result = None
    documents: list[DocumentHit] = []
    error = ""
    if not all(is_clean(v) for v in (q, source, language, max_classification)):
        raise ApiError(422, "invalid_request", "the query is not valid text")
    try:
        after, before = day_range(modified_from, modified_to)
    except ValueError as exc:
        after = before = None
        error = str(exc)
    if q.strip() and not error:
        try:
            result, documents = await run_in_threadpool(
                lambda: st.slots.call(
                    st.ws.search_documents,
                    who.principal,
                    q,
                    QueryOptions(
                        k=20,
                        sources=(source,) if source else None,
                        language=language or None,
                        modified_after=after,
                        modified_before=before,
                        max_classification=max_classification or None,
                    ),
                )
            )
        except ConfigError as exc:
            error = str(exc)
    params = {
        "q": q,
        "source": source,
        "language": language,
        "modified_from": modified_from,
        "modified_to": modified_to,
        "max_classification": max_classification,
    }
    sources = [s.name for s in st.ws.config.sources]
    template = "search_results.html" if request.headers.get("hx-request") else "search.html"
    return page(
        request,
        template,
        who,
        q=q,
        source=source,
        language=language,
        modified_from=modified_from,
        modified_to=modified_to,
        max_classification=max_classification,
        sources=sources,
        result=result,
        documents=documents,
        facets=facet_links(result, params) if result is not None and documents else {},
        error=error,
    )


FACET_FILTER = {"source": "source", "language": "language", "classification": "max_classification"}
"""The search form's field each facet narrows (classification: "up to this level")."""


def facet_links(result: Any, params: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Each facet value with its count and the search link that narrows to it (None when no
    filter expresses it); the counts come from the principal's own filtered search."""
    from urllib.parse import urlencode

    from sovra.search.facets import facets_of

    def link(field: str, value: str) -> str:
        narrowed = {**params, field: value}
        return "/search?" + urlencode({k: v for k, v in narrowed.items() if v})

    facets = facets_of(result)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, field in FACET_FILTER.items():
        out[name] = [
            {
                "value": v.value,
                "count": v.count,
                "href": link(field, v.value),
                "active": params[field] == v.value,
            }
            for v in getattr(facets, name)
        ]
    out["modified"] = [
        {
            "value": v.value,
            "count": v.count,
            "href": link("modified_from", v.modified_after.date().isoformat())
            if v.modified_after
            else None,
            "active": bool(v.modified_after)
            and params["modified_from"] == v.modified_after.date().isoformat(),  # type: ignore[union-attr]
        }
        for v in facets.modified
    ]
    return out


def day_range(first: str, last: str) -> tuple[datetime | None, datetime | None]:
    """The search form's dates (YYYY-MM-DD, both inclusive) as UTC bounds."""
    try:
        after = datetime.combine(date.fromisoformat(first), time.min, UTC) if first else None
        before = datetime.combine(date.fromisoformat(last), time.max, UTC) if last else None
    except ValueError:
        raise ValueError("Dates must look like 2024-05-31.") from None
    if after and before and after > before:
        raise ValueError("The 'modified from' date is after the 'to' date.")
    return after, before


@router.get("/documents/{document_id:path}")
async def document_page(document_id: str, request: Request, st: State, who: Reader) -> Response:
    view = None
    if len(document_id) <= 1000:
        view = await run_in_threadpool(st.ws.document, who.principal, document_id)
    if view is None:
        return page(request, "not_found.html", who, status=404)
    return page(request, "document.html", who, doc=view)


@router.get("/receipts/{index}")
async def receipt_page(index: int, request: Request, st: State, who: Auditor) -> Response:
    """Proves the caller's own entry against the latest checkpoint and verifies the receipt
    with the log's public key (the same check anyone can run offline)."""
    from sovra.server.api import own_event

    event = None if index < 0 else await run_in_threadpool(own_event, st, who, index)
    if event is None:
        return page(request, "not_found.html", who, status=404)
    audit = st.ws.audit
    receipt = await run_in_threadpool(audit.prove, index)
    try:
        verified = verify_receipt(receipt.to_json(), audit.public_key)
        verification: dict[str, Any] = {
            "valid": True,
            "tree_size": verified.tree_size,
            "signed_by": verified.signed_by,
        }
    except ReceiptError as exc:
        verification = {"valid": False, "reason": str(exc)}
    return page(
        request,
        "receipt.html",
        who,
        index=index,
        event=event,
        receipt_json=receipt.to_json(),
        verification=verification,
    )


@router.get("/sources")
async def sources_page(request: Request, st: State, who: Searcher) -> Response:
    return page(request, "sources.html", who, sources=source_rows(st, who))


@router.get("/admin/audit")
async def audit_page(
    request: Request, st: State, who: AuditAdmin, verify: bool = False
) -> Response:
    audit = st.ws.audit

    def read() -> tuple[list[dict[str, Any]], Any]:
        start = max(0, audit.size - 50)
        rows = [{"index": e.index, **e.view} for e in audit.events(start=start)]
        return list(reversed(rows)), audit.verify() if verify else None

    events, report = await run_in_threadpool(read)
    return page(request, "audit.html", who, events=events, report=report, size=audit.size)


@router.get("/admin/users")
async def users_page(request: Request, st: State, who: Admin) -> Response:
    directory = st.ws.directory
    return page(
        request,
        "users.html",
        who,
        users=directory.users(),
        groups=directory.groups(),
        endpoints=st.ws.config.endpoints,
    )


@router.get("/admin/policies")
async def policies_page(request: Request, st: State, who: Admin) -> Response:
    return await _policies(request, st, who, None, None)


@router.post("/admin/policies")
async def policies_check(
    request: Request,
    st: State,
    who: Admin,
    user: Annotated[str, Form(max_length=200)],
    action: Annotated[str, Form(max_length=40)],
    resource: Annotated[str, Form(max_length=1000)] = "workspace",
    groups: Annotated[str, Form(max_length=2000)] = "",
    classification: Annotated[str, Form(max_length=200)] = "internal",
    pii: Annotated[bool, Form()] = False,
) -> Response:
    """The `policy check` form (CSRF-checked like every session POST)."""
    group_list = groups.replace(",", " ").split()
    form: dict[str, Any] = {
        "user": user,
        "action": action,
        "resource": resource,
        "groups": " ".join(group_list),
        "classification": classification,
        "pii": pii,
    }
    try:
        body = PolicyCheckRequest.model_validate({**form, "groups": group_list or None})
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e.get("loc")}))
        return await _policies(request, st, who, form, {"error": f"check the fields: {fields}"})
    return await _policies(request, st, who, form, body)


async def _policies(
    request: Request,
    st: State,
    who: Identity,
    form: dict[str, Any] | None,
    body: PolicyCheckRequest | dict[str, str] | None,
) -> Response:
    config = st.ws.config
    error = ""
    result = None
    try:
        version, policies = await run_in_threadpool(active_policies, config)
    except PolicyCheckError as exc:
        version, policies, error = "", [], str(exc)
    if isinstance(body, dict):
        error = body["error"]
    elif body is not None:
        try:
            result = await run_in_threadpool(check_policy, config, body)
        except PolicyCheckError as exc:
            error = str(exc)
    status = 422 if error and form is not None else 200
    return page(
        request,
        "policies.html",
        who,
        status=status,
        version=version,
        policies=policies,
        actions=ACTIONS,
        form=form or {"user": "", "action": "search", "resource": "workspace", "groups": ""},
        result=result,
        error=error,
    )
