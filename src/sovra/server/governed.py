"""The permission path for a Principal, shared by every server route (REST, OpenAI, UI).

`Workspace.search/ask` take a user id and resolve it in the local directory; OIDC principals
carry their groups in the token instead. These functions do what those methods do — the same
`Workspace.filter_for` → `SearchFilter.for_principal`, the same `Searcher`/`Answerer`, the same
audit record — starting from a Principal. (Adapter until Workspace grows `search_as`/`ask_as`.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sovra.answer import AnswerEvent
from sovra.domain import Chunk, Principal, as_utc, content_hash
from sovra.search import SearchResult
from sovra.search.hybrid import Mode
from sovra.workspace import Workspace


@dataclass(frozen=True)
class DocumentView:
    id: str
    source: str
    title: str
    uri: str
    language: str
    classification: str
    chunks: list[Chunk]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "title": self.title,
            "uri": self.uri,
            "language": self.language,
            "classification": self.classification,
            "chunks": [
                {
                    "id": c.id,
                    "position": c.position,
                    "heading_path": list(c.heading_path),
                    "text": c.text,
                    "start": c.start,
                    "end": c.end,
                }
                for c in self.chunks
            ],
        }


class Governed:
    """One per process: the Workspace plus the lock that guards its lazy parts."""

    def __init__(self, ws: Workspace, model_slots: int | None = None) -> None:
        self.ws = ws
        self._lock = threading.Lock()
        # Model work (query embedding, answer composition) is CPU-bound: more concurrent calls
        # than cores only thrash and grow per-thread buffers. Requests queue for a slot.
        slots = model_slots or os.cpu_count() or 1
        self._slots = threading.BoundedSemaphore(slots)
        if slots > 1 and ws.config.embedding.threads is None:
            # Each slot is one model call; a call that also spreads over every core makes the
            # calls spin against each other (measured: 1.4-1.8 s per question embedding with
            # two threads under load, 68-113 ms with one). One intra-op thread per call.
            import torch

            torch.set_num_threads(1)

    def warm(self) -> None:
        """Open every store and load the model now, not on the first request."""
        with self._lock:
            _ = self.ws.index, self.ws.embedder, self.ws.state, self.ws.audit

    def search(
        self,
        principal: Principal,
        query: str,
        *,
        k: int = 10,
        mode: Mode = "hybrid",
        sources: Sequence[str] | None = None,
        language: str | None = None,
        modified_after: datetime | None = None,
        modified_before: datetime | None = None,
    ) -> SearchResult:
        flt = self.ws.filter_for(principal, sources)
        if modified_after is not None or modified_before is not None:
            # Applied inside the index like the access filter (a chunk without a time is out).
            flt = replace(
                flt,
                modified_after=as_utc(modified_after) if modified_after else None,
                modified_before=as_utc(modified_before) if modified_before else None,
            )
        with self._slots:
            result = self.ws.searcher().search(query, flt, k=k, mode=mode, language=language)
        self.ws.record_search(principal, query, result, k=k)
        return result

    def ask(
        self,
        principal: Principal,
        question: str,
        *,
        endpoint: str | None = None,
        extractive: bool = False,
    ) -> Iterator[AnswerEvent]:
        flt = self.ws.filter_for(principal)
        # The slot is held while the answer streams and released when the stream ends,
        # fails, or is closed (a client that disconnects closes the generator).
        self._slots.acquire()
        try:
            for event in self.ws.answerer().stream(
                question, flt, principal=principal, endpoint=endpoint, extractive=extractive
            ):
                if event.answer is not None:
                    self.ws.finish_answer(principal, question, event.answer)
                yield event
        finally:
            self._slots.release()

    def document(self, principal: Principal, document_id: str) -> DocumentView | None:
        """The readable chunks of a document, or None — the same None whether the document
        does not exist or the principal may not read it."""
        flt = self.ws.filter_for(principal)
        chunks = [c for c in self.ws.index.chunks_of(document_id) if flt.admits(c)]
        if not chunks:
            return None
        chunks.sort(key=lambda c: c.position)
        self.ws.record(
            principal.id,
            "read",
            chunks,
            details={"document_sha256": content_hash(document_id)},
        )
        first = chunks[0]
        return DocumentView(
            document_id,
            first.source,
            first.title,
            first.uri,
            first.language,
            first.classification,
            chunks,
        )
