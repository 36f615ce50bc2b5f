"""Hybrid retrieval: full text + vectors fused, aware of which languages the embedding model covers.

Plain RRF with an English-only embedding model wrecks retrieval in other languages, so the vector
channel is weighted by whether the model covers the query's language (registry metadata). The
principal's filter is always applied inside the index, in both channels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sovra.domain import Chunk, ScoredChunk, SearchFilter, SearchMode, as_utc
from sovra.index.base import Index
from sovra.models.base import Embedder
from sovra.search.language import detect_query_language

Mode = SearchMode
Fusion = Literal["rrf", "weighted"]


@dataclass(frozen=True)
class SearchHit:
    chunk: Chunk
    score: float
    rank: int
    text_rank: int | None = None
    vector_rank: int | None = None


@dataclass
class SearchResult:
    query: str
    language: str
    mode: Mode
    vector_weight: float
    hits: list[SearchHit] = field(default_factory=list)
    took_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape shared by `sovra search --json` and the REST API."""
        return {
            "query": self.query,
            "language": self.language,
            "mode": self.mode,
            "took_ms": round(self.took_ms, 2),
            "hits": [
                {
                    "rank": h.rank,
                    "score": h.score,
                    "chunk_id": h.chunk.id,
                    "document_id": h.chunk.document_id,
                    "source": h.chunk.source,
                    "title": h.chunk.title,
                    "uri": h.chunk.uri,
                    "heading_path": list(h.chunk.heading_path),
                    "language": h.chunk.language,
                    "classification": h.chunk.classification,
                    "modified_at": (
                        as_utc(h.chunk.modified_at).isoformat() if h.chunk.modified_at else None
                    ),
                    "text": h.chunk.text,
                }
                for h in self.hits
            ],
        }


class Reranker(Protocol):
    """Optional second stage: reorders the fused candidates (e.g. a local cross-encoder)."""

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]: ...


@dataclass(frozen=True)
class FusionSettings:
    fusion: Fusion = "rrf"
    rrf_k: int = 60
    candidates: int = 100
    text_weight: float = 1.0
    vector_weight_covered: float = 1.0
    vector_weight_uncovered: float = 0.5
    """Weight of the vector channel for a question in a language the model does not cover.

    The channel then only ranks chunks written in a covered language (cross-lingual: a German
    question over English documents); for chunks in the question's own uncovered language
    full text decides alone, so fusion never makes that language worse than BM25.
    """


class Searcher:
    def __init__(
        self,
        index: Index,
        embedder: Embedder | None,
        settings: FusionSettings | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings or FusionSettings()
        self.reranker = reranker

    def vector_weight(self, language: str) -> float:
        if self.embedder is None:
            return 0.0
        if self._covered(language):
            return self.settings.vector_weight_covered
        return self.settings.vector_weight_uncovered

    def _covered(self, language: str) -> bool:
        assert self.embedder is not None
        # An unsure detection on a short query: trust the model if it covers English, the
        # language most short technical queries are written in.
        if language == "und":
            language = "en"
        return language in self.embedder.languages

    def search(
        self,
        query: str,
        flt: SearchFilter,
        k: int = 10,
        mode: Mode = "hybrid",
        language: str | None = None,
    ) -> SearchResult:
        started = time.perf_counter()
        lang = language or detect_query_language(query)
        vweight = self.vector_weight(lang) if mode != "text" else 0.0
        if mode == "vector" and self.embedder is None:
            raise ValueError("vector search needs an embedding model; none is configured")
        result = SearchResult(query=query, language=lang, mode=mode, vector_weight=vweight)
        if not query.strip():
            return result
        depth = max(k, self.settings.candidates)
        text_hits: list[ScoredChunk] = []
        vector_hits: list[ScoredChunk] = []
        if mode in ("hybrid", "text"):
            text_hits = self.index.search_text(query, lang, depth if mode == "hybrid" else k, flt)
        if mode == "vector" or (mode == "hybrid" and vweight > 0 and self.embedder is not None):
            assert self.embedder is not None
            qvec = self.embedder.embed([query])[0]
            vector_hits = self.index.search_vector(
                qvec.tolist(), depth if mode == "hybrid" else k, flt
            )
            if mode == "hybrid" and not self._covered(lang):
                # The model cannot read this language: its similarities are only trusted for
                # chunks written in a language it covers.
                vector_hits = [h for h in vector_hits if self._covered(h.chunk.language)]
        if mode == "text":
            hits = [_single(h, i, "text") for i, h in enumerate(text_hits[:k])]
        elif mode == "vector":
            hits = [_single(h, i, "vector") for i, h in enumerate(vector_hits[:k])]
        else:
            hits = self._fuse(text_hits, vector_hits, vweight, k)
        if self.reranker is not None and hits:
            hits = self.reranker.rerank(query, hits)[:k]
        # Defence in depth: the index filters, and nothing unfiltered may slip through a backend bug.
        result.hits = [h for h in hits if flt.admits(h.chunk)]
        result.took_ms = (time.perf_counter() - started) * 1000
        return result

    def _fuse(
        self,
        text_hits: list[ScoredChunk],
        vector_hits: list[ScoredChunk],
        vweight: float,
        k: int,
    ) -> list[SearchHit]:
        s = self.settings
        chunks: dict[str, Chunk] = {}
        text_rank: dict[str, int] = {}
        vector_rank: dict[str, int] = {}
        for i, h in enumerate(text_hits):
            chunks[h.chunk.id] = h.chunk
            text_rank[h.chunk.id] = i
        for i, h in enumerate(vector_hits):
            chunks.setdefault(h.chunk.id, h.chunk)
            vector_rank[h.chunk.id] = i
        scores: dict[str, float] = {}
        if s.fusion == "rrf":
            for cid, r in text_rank.items():
                scores[cid] = s.text_weight / (s.rrf_k + r + 1)
            for cid, r in vector_rank.items():
                scores[cid] = scores.get(cid, 0.0) + vweight / (s.rrf_k + r + 1)
        else:
            for hits, weight in ((text_hits, s.text_weight), (vector_hits, vweight)):
                if not hits or weight == 0:
                    continue
                top = hits[0].score
                low = hits[-1].score
                span = (top - low) or 1.0
                for h in hits:
                    scores[h.chunk.id] = (
                        scores.get(h.chunk.id, 0.0) + weight * (h.score - low) / span
                    )
        ordered = sorted(scores, key=lambda cid: (-scores[cid], cid))[:k]
        return [
            SearchHit(
                chunk=chunks[cid],
                score=scores[cid],
                rank=i + 1,
                text_rank=None if cid not in text_rank else text_rank[cid] + 1,
                vector_rank=None if cid not in vector_rank else vector_rank[cid] + 1,
            )
            for i, cid in enumerate(ordered)
        ]


def _single(hit: ScoredChunk, i: int, channel: str) -> SearchHit:
    return SearchHit(
        chunk=hit.chunk,
        score=hit.score,
        rank=i + 1,
        text_rank=i + 1 if channel == "text" else None,
        vector_rank=i + 1 if channel == "vector" else None,
    )
