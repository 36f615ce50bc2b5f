"""REST API under /api/v1: search, ask (JSON or Server-Sent Events), documents, sources,
endpoints, audit and feedback. Every route needs an identity and reads through the
workspace's permission path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, model_validator

from sovra.answer import Answer
from sovra.audit import ReceiptError, verify_receipt
from sovra.config import ConfigError
from sovra.domain import QueryOptions, as_utc
from sovra.search import SearchResult
from sovra.search.facets import facets_of
from sovra.search.grouping import DocumentHit, grouped_dict
from sovra.server.auth import ApiError, Identity
from sovra.server.deps import AppState, Needs, app_state
from sovra.server.policy_check import PolicyCheckError, PolicyCheckRequest, check_policy
from sovra.server.text import Text

router = APIRouter(prefix="/api/v1")

NOT_FOUND = {"error": "not_found", "detail": "no such document"}

State = Annotated[AppState, Depends(app_state)]
# One rule per route (see `sovra.server.deps.Needs`): the scope an API key must hold.
AnyCaller = Annotated[Identity, Depends(Needs(None))]
Searcher = Annotated[Identity, Depends(Needs("search"))]
Asker = Annotated[Identity, Depends(Needs("ask"))]
Reader = Annotated[Identity, Depends(Needs("documents"))]
Auditor = Annotated[Identity, Depends(Needs("audit"))]
AuditAdmin = Annotated[Identity, Depends(Needs("audit", admin=True))]
FeedbackGiver = Annotated[Identity, Depends(Needs("feedback"))]
Admin = Annotated[Identity, Depends(Needs("admin", admin=True))]


class Narrowing(BaseModel):
    """What search and ask both accept to read less than the caller may (never more)."""

    sources: list[Annotated[Text, Field(max_length=100)]] | None = Field(
        default=None, max_length=20
    )
    max_classification: Text | None = Field(
        default=None, max_length=64, description="Only documents up to this classification."
    )
    modified_after: datetime | None = Field(
        default=None, description="Only passages of documents modified at or after this time."
    )
    modified_before: datetime | None = Field(
        default=None, description="Only passages of documents modified at or before this time."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        after, before = self.modified_after, self.modified_before
        if after is not None and before is not None and as_utc(after) > as_utc(before):
            raise ValueError("modified_after is later than modified_before")
        return self


class SearchRequest(Narrowing):
    query: Text = Field(min_length=1, max_length=2000)
    k: int = Field(default=10, ge=1, le=50)
    mode: Literal["hybrid", "text", "vector"] = "hybrid"
    language: Text | None = Field(default=None, max_length=8)
    group_by: Literal["chunk", "document"] = Field(
        default="chunk",
        description="`document`: one entry per document (k documents) with its best passages,"
        " snippets in plain text with the query terms marked.",
    )
    facets: bool = Field(
        default=False,
        description="Add `facets`: matching documents per source, language, classification"
        " and modified-date bucket, counted only over documents the caller may read.",
    )

    def options(self) -> QueryOptions:
        return QueryOptions(
            k=self.k,
            mode=self.mode,
            sources=tuple(self.sources) if self.sources else None,
            language=self.language,
            max_classification=self.max_classification,
            modified_after=self.modified_after,
            modified_before=self.modified_before,
        )


class AskRequest(Narrowing):
    question: Text = Field(min_length=1, max_length=4000)
    extractive: bool = False
    endpoint: Text | None = Field(default=None, max_length=100)
    stream: bool = False

    def options(self) -> QueryOptions:
        return QueryOptions(
            endpoint=self.endpoint,
            extractive=self.extractive,
            sources=tuple(self.sources) if self.sources else None,
            max_classification=self.max_classification,
            modified_after=self.modified_after,
            modified_before=self.modified_before,
        )


class FeedbackRequest(BaseModel):
    answer_index: int = Field(ge=0, description="The `index` of the answer's receipt.")
    rating: Literal["up", "down"]
    comment: Text = Field(default="", max_length=2000)


class ReceiptRequest(BaseModel):
    receipt: dict[str, Any]


def run_search(st: AppState, ident: Identity, body: SearchRequest) -> SearchResult:
    ident.require("search")
    try:
        return st.slots.call(st.ws.search, ident.principal, body.query, body.options())
    except ConfigError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


def run_search_documents(
    st: AppState, ident: Identity, body: SearchRequest
) -> tuple[SearchResult, list[DocumentHit]]:
    ident.require("search")
    try:
        return st.slots.call(st.ws.search_documents, ident.principal, body.query, body.options())
    except ConfigError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


@router.post("/search", tags=["search"])
async def search(body: SearchRequest, ident: Searcher, st: State) -> dict[str, Any]:
    """Hybrid search over the documents the caller may read."""
    if body.group_by == "document":
        result, documents = await run_in_threadpool(run_search_documents, st, ident, body)
        out = grouped_dict(result, documents)
    else:
        result = await run_in_threadpool(run_search, st, ident, body)
        out = result.to_dict()
    if body.facets:
        out["facets"] = facets_of(result).to_dict()
    return out


def count_answer(st: AppState, answer: Answer) -> None:
    st.metrics.answers.labels(answer.endpoint, answer.generation, str(answer.found).lower()).inc()


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def answer_events(st: AppState, ident: Identity, body: AskRequest) -> Generator[str, None, None]:
    """SSE frames: `delta` pieces, then one `answer` with citations, endpoint and receipt."""
    try:
        for event in st.slots.stream(st.ws.ask(ident.principal, body.question, body.options())):
            if event.answer is not None:
                count_answer(st, event.answer)
                yield sse("answer", event.answer.to_dict())
            elif event.delta:
                yield sse("delta", {"text": event.delta})
    except Exception as exc:  # the stream has started: report in-band, never a traceback
        yield sse("error", {"error": "internal", "detail": type(exc).__name__})


_END = ""


async def until_disconnected(
    frames: Generator[str, None, None], disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[str]:
    """`frames`, stopped as soon as the client has gone (a cancelled question): the generator is
    closed, so the answer stops being composed and its slot is released at once rather than
    when the thread's generator is garbage-collected."""
    try:
        while True:
            # Not abandoned on cancellation: the frame in progress finishes, then close() runs.
            frame = await run_in_threadpool(next, frames, _END)
            if frame == _END or await disconnected():
                break
            yield frame
    finally:
        frames.close()


def ask_once(st: AppState, ident: Identity, body: AskRequest) -> Answer:
    final: Answer | None = None
    try:
        for event in st.slots.stream(st.ws.ask(ident.principal, body.question, body.options())):
            if event.answer is not None:
                final = event.answer
    except ConfigError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    if final is None:
        raise ApiError(500, "internal", "no answer produced")
    count_answer(st, final)
    return final


@router.post("/ask", tags=["ask"], response_model=None)
async def ask(
    body: AskRequest, ident: Asker, st: State, request: Request
) -> StreamingResponse | dict[str, Any]:
    """Answer from the caller's documents with citations; `stream: true` (or
    `Accept: text/event-stream`) sends Server-Sent Events: `delta`…, then `answer`."""
    ident.require("ask")
    known = {e.name for e in st.ws.config.endpoints}
    if body.endpoint is not None and body.endpoint not in known:
        raise ApiError(400, "bad_request", f"unknown endpoint; known: {sorted(known)}")
    if body.stream:
        return StreamingResponse(
            until_disconnected(answer_events(st, ident, body), request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    answer = await run_in_threadpool(ask_once, st, ident, body)
    return answer.to_dict()


@router.get("/documents/{document_id:path}", tags=["documents"], response_model=None)
async def document(document_id: str, ident: Reader, st: State) -> JSONResponse | dict[str, Any]:
    """A document's readable passages. A document the caller may not read is a 404,
    byte for byte the same as one that does not exist."""
    if len(document_id) > 1000:
        return JSONResponse(NOT_FOUND, status_code=404)
    view = await run_in_threadpool(st.ws.document, ident.principal, document_id)
    if view is None:
        st.metrics.denials.labels("document_not_visible").inc()
        return JSONResponse(NOT_FOUND, status_code=404)
    return view.to_dict()


def sync_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """A sync report with its document lists reduced to counts: document ids name files an
    operator may not be allowed to read (`sovra source show` gives the ids on the server)."""
    if report is None:
        return None
    return {k: len(v) if isinstance(v, list | dict) else v for k, v in report.items()}


@router.get("/sources", tags=["sources"])
async def sources(ident: Searcher, st: State) -> dict[str, Any]:
    """Configured sources; document counts and sync reports for administrators only."""
    return {"sources": source_rows(st, ident)}


def source_rows(st: AppState, ident: Identity) -> list[dict[str, Any]]:
    """Name and kind of every source; counts and the last sync only for administrators."""
    ws = st.ws
    rows = []
    for src in ws.config.sources:
        row: dict[str, Any] = {"name": src.name, "kind": src.kind}
        if ident.principal.is_admin:
            row["counts"] = ws.state.counts(src.name)
            row["last_sync"] = sync_summary(ws.state.last_report(src.name))
        rows.append(row)
    return rows


@router.get("/endpoints", tags=["endpoints"])
async def endpoints(ident: AnyCaller, st: State) -> dict[str, Any]:
    """Registered model endpoints and where they run (no URLs or credentials)."""
    return {
        "endpoints": [
            {
                "name": e.name,
                "kind": e.kind,
                "model": e.model,
                "jurisdiction": e.jurisdiction,
                "hosting": e.hosting,
                "max_classification": e.max_classification,
                "pii": e.pii,
            }
            for e in st.ws.config.endpoints
        ]
    }


@router.get("/audit/events", tags=["audit"])
async def audit_events(
    ident: AuditAdmin,
    st: State,
    action: Annotated[str | None, Query(max_length=40)] = None,
    start: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Logged events (personal fields decrypted or shown as erased); administrators only."""

    def read() -> list[dict[str, Any]]:
        rows = []
        for ev in st.ws.audit.events(action=action, start=start):
            rows.append({"index": ev.index, "leaf_hash": ev.leaf_hash.hex(), **ev.view})
            if len(rows) >= limit:
                break
        return rows

    return {"events": await run_in_threadpool(read)}


def own_event(st: AppState, ident: Identity, index: int) -> dict[str, Any] | None:
    """The event at `index` if the caller may see it (its actor, or an administrator)."""
    return st.ws.own_event(ident.principal, index)


@router.get("/audit/entries/{index}/receipt", tags=["audit"])
async def audit_receipt(index: int, ident: Auditor, st: State) -> dict[str, Any]:
    """A fresh receipt (inclusion proof against the latest checkpoint) for one of the
    caller's own entries; administrators may prove any entry."""
    if index < 0 or await run_in_threadpool(own_event, st, ident, index) is None:
        raise ApiError(404, "not_found", "no such entry")
    receipt = await run_in_threadpool(st.ws.audit.prove, index)
    return {"receipt": receipt.to_dict()}


@router.get("/audit/public-key", tags=["audit"])
async def audit_public_key(ident: AnyCaller, st: State) -> dict[str, Any]:
    """The log's verifier key: receipts verify offline against it."""
    return {"public_key": st.ws.audit.public_key}


@router.post("/audit/verify-receipt", tags=["audit"])
async def audit_verify_receipt(body: ReceiptRequest, ident: AnyCaller, st: State) -> dict[str, Any]:
    """Check a receipt against this log's public key (the same check `sovra audit
    verify-receipt` does offline)."""
    try:
        result = verify_receipt(json.dumps(body.receipt), st.ws.audit.public_key)
    except ReceiptError as exc:
        return {"valid": False, "reason": str(exc)}
    return {
        "valid": True,
        "origin": result.origin,
        "index": result.index,
        "tree_size": result.tree_size,
        "signed_by": result.signed_by,
    }


@router.post("/feedback", tags=["feedback"], status_code=201)
async def feedback(body: FeedbackRequest, ident: FeedbackGiver, st: State) -> dict[str, Any]:
    """Thumbs up/down and a comment on one of the caller's own answers (stored and logged)."""
    stored = await run_in_threadpool(
        st.ws.feedback, ident.principal, body.answer_index, body.rating, body.comment
    )
    if stored is None:
        raise ApiError(404, "not_found", "no such answer")
    return {"id": stored.id, "receipt": stored.receipt}


@router.post("/policy/check", tags=["policy"])
async def policy_check(body: PolicyCheckRequest, ident: Admin, st: State) -> dict[str, Any]:
    """Administrators: the Cedar decision for a user, action and resource, with the deciding
    policies and what would allow it (as `sovra policy check`)."""
    try:
        return await run_in_threadpool(check_policy, st.ws.config, body)
    except PolicyCheckError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
