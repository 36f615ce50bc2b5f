"""OpenAI-compatible `/v1/models` and `/v1/chat/completions`.

The "model" names a sovra assistant — governed search + answer under the caller's
permissions — so any OpenAI client gets cited answers from the documents its key may read:

- `sovra`: the configured routing (generation where policy allows, else extractive);
- `sovra-extractive`: quotes only, no generation;
- `sovra:<endpoint>`: ask for one registered endpoint (the router may still refuse it).

The last user message is the question. The reply's text ends with its numbered sources; the
full answer record (citations, endpoint, jurisdiction, AI-generated flag, receipt) rides along
in the extra field `sovra` (and, streaming, in the last chunk).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sovra.answer import Answer
from sovra.server.api import AskRequest, ask_once, count_answer
from sovra.server.auth import ApiError, Identity
from sovra.server.deps import AppState, Needs, app_state
from sovra.server.text import Text

router = APIRouter(prefix="/v1", tags=["openai"])

AnyCaller = Annotated[Identity, Depends(Needs(None))]
Asker = Annotated[Identity, Depends(Needs("ask"))]
State = Annotated[AppState, Depends(app_state)]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: Text | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(max_length=120)
    messages: list[Message] = Field(min_length=1, max_length=100)
    stream: bool = False


def assistants(st: AppState) -> list[str]:
    names = ["sovra", "sovra-extractive"]
    names += [f"sovra:{e.name}" for e in st.ws.config.endpoints]
    return names


@router.get("/models")
async def models(ident: AnyCaller, st: State) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "sovra"}
            for name in assistants(st)
        ],
    }


def question_of(body: ChatRequest) -> str:
    for msg in reversed(body.messages):
        if msg.role != "user" or msg.content is None:
            continue
        if isinstance(msg.content, str):
            text = msg.content
        else:
            text = " ".join(p.text or "" for p in msg.content if p.type == "text")
        if text.strip():
            return text.strip()[:4000]
    raise ApiError(400, "invalid_request", "no user message with text")


def ask_request(st: AppState, body: ChatRequest, stream: bool) -> AskRequest:
    if body.model not in assistants(st):
        raise ApiError(404, "model_not_found", f"unknown model; use one of {assistants(st)}")
    endpoint = body.model.partition(":")[2] or None
    return AskRequest(
        question=question_of(body),
        extractive=body.model == "sovra-extractive",
        endpoint=endpoint,
        stream=stream,
    )


def sources_text(answer: Answer) -> str:
    if not answer.citations:
        return ""
    lines = [f"[{c.number}] {c.title} — {c.uri}" for c in answer.citations]
    return "\n\nSources:\n" + "\n".join(lines)


def sovra_extra(answer: Answer) -> dict[str, Any]:
    data = answer.to_dict()
    data.pop("text", None)
    data.pop("question", None)
    return data


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatRequest, ident: Asker, st: State
) -> StreamingResponse | dict[str, Any]:
    ident.require("ask")
    req = ask_request(st, body, body.stream)
    cid = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            stream_chunks(st, ident, req, cid, created, body.model),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )
    answer = await run_in_threadpool(ask_once, st, ident, req)
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text + sources_text(answer)},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": answer.tokens_in,
            "completion_tokens": answer.tokens_out,
            "total_tokens": answer.tokens_in + answer.tokens_out,
        },
        "sovra": sovra_extra(answer),
    }


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], **extra: Any) -> str:
    data = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "delta": delta, "finish_reason": extra.pop("finish_reason", None)}
        ],
        **extra,
    }
    return "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"


def stream_chunks(
    st: AppState, ident: Identity, req: AskRequest, cid: str, created: int, model: str
) -> Iterator[str]:
    yield _chunk(cid, created, model, {"role": "assistant", "content": ""})
    try:
        for event in st.slots.stream(st.ws.ask(ident.principal, req.question, req.options())):
            if event.answer is not None:
                count_answer(st, event.answer)
                tail = sources_text(event.answer)
                if tail:
                    yield _chunk(cid, created, model, {"content": tail})
                yield _chunk(
                    cid, created, model, {}, finish_reason="stop", sovra=sovra_extra(event.answer)
                )
            elif event.delta:
                yield _chunk(cid, created, model, {"content": event.delta})
    except Exception as exc:  # the stream has started: report in-band, never a traceback
        err = {"error": {"message": "internal error", "type": type(exc).__name__}}
        yield "data: " + json.dumps(err) + "\n\n"
    yield "data: [DONE]\n\n"
