"""Flows over HTTP: REST under /api/v1/flows and an approvals inbox at /flows.

Same `Flows` service and checks as the CLI: separation of duties holds here too. Approving,
rejecting and operating need a person signed in (a browser session or OIDC token); an API key
(a machine) may start and read runs (`flows` scope, not given by default) but never approve. The flows engine is
launched per request under one lock, so the CLI can still run flows while the server is idle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from sovra.directory import DirectoryError
from sovra.errors import NotFound, SovraError
from sovra.flows.base import FlowNotFound
from sovra.flows.service import Flows
from sovra.server.auth import ApiError, Identity, forbidden
from sovra.server.deps import AppState, Needs, app_state

api_router = APIRouter(prefix="/api/v1/flows", tags=["flows"])
ui_router = APIRouter(include_in_schema=False)

Ident = Annotated[Identity, Depends(Needs("flows"))]
PageIdent = Annotated[Identity, Depends(Needs("flows", page=True))]
State = Annotated[AppState, Depends(app_state)]
T = TypeVar("T")

_LOCK = threading.Lock()
HUMAN_METHODS = frozenset({"session", "oidc"})


class StartRequest(BaseModel):
    inputs: dict[str, Any] = Field(default_factory=dict)


class DecisionRequest(BaseModel):
    reason: str = Field(default="", max_length=2000)


class ApproveRequest(DecisionRequest):
    text: str | None = Field(default=None, max_length=20_000)
    """The approver's edit of the draft: it replaces the draft and is what the run sends."""


class OverrideRequest(BaseModel):
    step: str = Field(min_length=1, max_length=100)
    output: dict[str, Any]
    reason: str = Field(min_length=1, max_length=2000)


def with_flows(st: AppState, fn: Callable[[Flows], T]) -> T:
    """Run `fn` with a Flows on the server's workspace. Flow errors keep their kind, which the
    app's handler turns into the status (no run: 404, refused: 403, wrong state: 409)."""
    with _LOCK:
        flows = st.ws.flows()
        try:
            return fn(flows)
        except DirectoryError as exc:
            # The caller signed in, so a directory error means the account went away meanwhile.
            raise forbidden(str(exc)) from None
        finally:
            flows.close()


def _human(ident: Identity) -> None:
    if ident.method not in HUMAN_METHODS:
        raise forbidden("approvals and operator controls need a person signed in, not an API key")


def _may_see(flows: Flows, ident: Identity, run_id: str) -> dict[str, Any]:
    """The requester, the approval's groups and operators see a run; others get 404."""
    data = flows.show(run_id)
    p = ident.principal
    groups = set(data.get("approval", {}).get("groups", []))
    if (
        data["requester"] == p.id
        or groups & p.groups
        or set(flows.config.flows.operators) & p.groups
    ):
        return data
    raise FlowNotFound(f"no flow run {run_id!r}; list runs with `sovra flow runs`")


@api_router.get("")
async def list_workflows(ident: Ident, st: State) -> dict[str, Any]:
    """The workflows this server knows, with their inputs and steps."""

    def go(flows: Flows) -> dict[str, Any]:
        return {
            "workflows": [
                {
                    "name": wf.name,
                    "description": wf.description,
                    "trigger": wf.trigger.kind,
                    "inputs": {k: v.model_dump() for k, v in wf.inputs.items()},
                    "steps": [{"id": s.id, "kind": s.kind} for s in wf.steps],
                }
                for wf, _ in flows.workflows().values()
            ]
        }

    return await run_in_threadpool(with_flows, st, go)


@api_router.post("/{name}/runs", status_code=201)
async def start_run(name: str, body: StartRequest, ident: Ident, st: State) -> dict[str, Any]:
    """Start a run as the caller; returns it once it completes, fails, pauses or waits."""

    def go(flows: Flows) -> dict[str, Any]:
        run = flows.start(name, body.inputs, ident.principal.id)
        return flows.show(run.id)

    return await run_in_threadpool(with_flows, st, go)


@api_router.get("/runs")
async def list_runs(
    ident: Ident, st: State, status: str | None = None, workflow: str | None = None
) -> list[dict[str, Any]]:
    """Runs the caller requested, may decide, or (operators) all runs."""

    def go(flows: Flows) -> list[dict[str, Any]]:
        flows.tick()
        p = ident.principal
        operator = bool(set(flows.config.flows.operators) & p.groups)
        deciding = {i["run"]["id"] for i in flows.pending_approvals(p.id)}
        return [
            r.to_dict()
            for r in flows.runs(status=status, workflow=workflow, limit=200)
            if operator or r.requester == p.id or r.id in deciding
        ]

    return await run_in_threadpool(with_flows, st, go)


@api_router.get("/inbox")
async def inbox(ident: Ident, st: State) -> list[dict[str, Any]]:
    """Runs waiting for the caller's approval (never the caller's own)."""
    return await run_in_threadpool(
        with_flows, st, lambda f: f.pending_approvals(ident.principal.id)
    )


@api_router.get("/runs/{run_id}")
async def show_run(run_id: str, ident: Ident, st: State) -> dict[str, Any]:
    """A run: inputs, each step's output (draft, sources, model), approval and votes."""
    return await run_in_threadpool(with_flows, st, lambda f: _may_see(f, ident, run_id))


def _act(st: AppState, ident: Identity, run_id: str, fn: Callable[[Flows], Any]) -> dict[str, Any]:
    def go(flows: Flows) -> dict[str, Any]:
        fn(flows)
        return flows.show(run_id)

    return with_flows(st, go)


@api_router.post("/runs/{run_id}/approve")
async def approve(run_id: str, body: ApproveRequest, ident: Ident, st: State) -> dict[str, Any]:
    """Approve (never a run you started); with `text`, your edit replaces the draft first
    (recorded in the audit log). The run continues once enough approve."""
    _human(ident)
    user = ident.principal.id
    return await run_in_threadpool(
        _act, st, ident, run_id, lambda f: f.approve(run_id, user, body.reason, text=body.text)
    )


@api_router.post("/runs/{run_id}/reject")
async def reject(run_id: str, body: DecisionRequest, ident: Ident, st: State) -> dict[str, Any]:
    """Reject with a reason; the run ends without acting."""
    _human(ident)
    user = ident.principal.id
    return await run_in_threadpool(
        _act, st, ident, run_id, lambda f: f.reject(run_id, user, body.reason)
    )


@api_router.post("/runs/{run_id}/{control}")
async def control(
    run_id: str, control: str, body: DecisionRequest, ident: Ident, st: State
) -> dict[str, Any]:
    """Operators: `pause`, `resume` or `retry` a run."""
    _human(ident)
    user = ident.principal.id
    actions: dict[str, Callable[[Flows], Any]] = {
        "pause": lambda f: f.pause(run_id, user, body.reason),
        "resume": lambda f: f.resume(run_id, user, body.reason),
        "retry": lambda f: f.retry(run_id, user, body.reason),
    }
    if control not in actions:
        raise ApiError(404, "not_found", f"no control {control!r}; use pause, resume or retry")
    return await run_in_threadpool(_act, st, ident, run_id, actions[control])


@api_router.post("/runs/{run_id}/override")
async def override(run_id: str, body: OverrideRequest, ident: Ident, st: State) -> dict[str, Any]:
    """Operators: replace a step's outputs, with a reason."""
    _human(ident)
    user = ident.principal.id
    return await run_in_threadpool(
        _act,
        st,
        ident,
        run_id,
        lambda f: f.override(run_id, body.step, body.output, user, body.reason),
    )


# -- the approvals inbox (web UI) ---------------------------------------------------------------


def _sha(text: str) -> str:
    """Identifies the draft the reply box was filled with (not a secret, no key needed)."""
    import hashlib

    return hashlib.sha256(text.replace("\r\n", "\n").strip().encode("utf-8")).hexdigest()


@ui_router.get("/flows")
async def inbox_page(request: Request, st: State, who: PageIdent) -> Response:
    from sovra.server.ui import page

    def go(flows: Flows) -> dict[str, Any]:
        return {
            "pending": flows.pending_approvals(who.principal.id),
            "mine": [r.to_dict() for r in flows.runs(limit=200) if r.requester == who.principal.id],
        }

    data = await run_in_threadpool(with_flows, st, go)
    return page(request, "flows_inbox.html", who, **data)


@ui_router.get("/flows/runs/{run_id}")
async def run_page(
    request: Request, run_id: str, st: State, who: PageIdent, message: str = ""
) -> Response:
    from sovra.server.ui import page

    run = await run_in_threadpool(with_flows, st, lambda f: _may_see(f, who, run_id))
    may_decide = (
        run["status"] == "waiting_approval"
        and run["requester"] != who.principal.id
        and bool(set(run.get("approval", {}).get("groups", [])) & who.principal.groups)
        and who.principal.id not in {v["user_id"] for v in run["approval"]["votes"]}
    )
    editable = run.get("editable")
    draft_sha = _sha(editable["text"]) if editable and editable["text"] else ""
    return page(
        request,
        "flows_run.html",
        who,
        run=run,
        may_decide=may_decide,
        message=message[:300],
        draft_sha=draft_sha,
    )


@ui_router.post("/flows/runs/{run_id}/decide")
async def decide(
    request: Request,
    run_id: str,
    st: State,
    who: PageIdent,
    decision: Annotated[str, Form(max_length=10)],
    reason: Annotated[str, Form(max_length=2000)] = "",
    reply: Annotated[str | None, Form(max_length=20_000)] = None,
    draft_sha: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """The inbox's approve/reject form (CSRF-checked like every session POST)."""
    from urllib.parse import quote

    _human(who)
    user = who.principal.id
    if decision not in ("approve", "reject"):
        raise ApiError(400, "bad_request", "decision must be approve or reject")
    try:
        if decision == "approve":
            # The reply box starts as the draft: only a changed text is an edit.
            text = reply.replace("\r\n", "\n").strip() if reply is not None else None
            if text is not None and draft_sha and text and _sha(text) == draft_sha:
                text = None
            await run_in_threadpool(
                with_flows, st, lambda f: f.approve(run_id, user, reason, text=text)
            )
            message = "Approved with your edit." if text else "Approved."
        else:
            await run_in_threadpool(with_flows, st, lambda f: f.reject(run_id, user, reason))
            message = "Rejected."
    except (ApiError, SovraError) as exc:
        # A run the caller may not see stays a 404; any other refusal is shown on the page.
        if isinstance(exc, NotFound) or (isinstance(exc, ApiError) and exc.status_code == 404):
            raise
        message = str(exc.detail) if isinstance(exc, ApiError) else exc.message
    return RedirectResponse(
        f"/flows/runs/{quote(run_id)}?message={quote(message)}", status_code=303
    )
