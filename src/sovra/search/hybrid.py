"""Hybrid retrieval: full text + vector channels, each voting scores relative to its best hit.

Plain RRF with an English-only embedding model wrecks retrieval in other languages, so each
vector channel (one per embedding model, see models.embedding.FusedEmbedder) is weighted by
whether its model covers the query's language, and only when the language was detected with
confidence. An unsure detection (`und`) trusts English-only models only for Latin-script
queries (short technical queries), and multilingual models at the reduced weight. A channel
whose model cannot read the query's language is dropped when another channel can; otherwise it
only ranks chunks written in a language it covers, so fusion never makes a language the models
don't read worse than its full text. The principal's filter is always applied inside the index.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from sovra.domain import Chunk, ScoredChunk, SearchFilter, SearchMode, as_utc
from sovra.index.base import Index
from sovra.index.detect import UNDETERMINED, Detection
from sovra.models.base import Embedder, Vectors
from sovra.models.embedding import Channel, FusedEmbedder, channels_of
from sovra.search.language import break_tie, detect_query

Mode = SearchMode
Fusion = Literal["relative", "rrf", "weighted"]
"""How a channel's ranked list becomes votes (`_vote`): `relative` (the default) votes each
chunk's score as a share of the channel's best score; `rrf` by rank, 1 / (rrf_k + rank);
`weighted` by min-max normalised score over the candidates."""


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
    # The query's embedding by model name (a fused embedder's parts one by one): the answer
    # scores sentences against the same vector instead of embedding the question again.
    query_vectors: dict[str, Vectors] = field(default_factory=dict, repr=False)

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
    fusion: Fusion = "relative"
    rrf_k: int = 60
    candidates: int = 100
    text_weight: float = 1.0
    vector_weight_covered: float = 1.0
    vector_weight_uncovered: float = 0.5
    same_language_multilingual: float = 0.1
    """Factor on a multilingual channel's vote for a chunk in the query's own language.

    Within one language a proper full-text analyser beats a 16-language model (XQuAD ar: BM25
    0.96, USE 0.78), so there the model only breaks ties; across languages, where full text
    cannot match, its vote counts fully (docs/benchmarks.md). With `relative` votes (XQuAD,
    first 300 questions) 0.1–0.15 keep hybrid at or above full text in every language;
    0.05–0.08 lose Russian's gain from the model and 0.2 puts Chinese below full text.
    """
    text_weight_other_language: float = 0.5
    """Factor on full text's vote for a chunk in another language than the query's (both
    detected): such matches are names and numbers, not the question's words."""
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

    def channel_weights(self, detection: Detection) -> list[tuple[Channel, float, bool]]:
        """(channel, weight, restricted) per vector channel for a query of this language.

        `restricted`: the channel's model does not read the query's language, so its ranking is
        only trusted for chunks in a language it covers (cross-lingual use).
        """
        if self.embedder is None:
            return []
        s = self.settings
        lang = detection.language
        channels = channels_of(self.embedder)
        if lang == UNDETERMINED:
            latin = detection.script in ("LATIN", "UNKNOWN")
            out = []
            for c in channels:
                if latin and "en" in c.languages:
                    out.append((c, s.vector_weight_covered, False))
                elif len(c.languages) > 1:
                    out.append((c, s.vector_weight_uncovered, False))
            return self._route(out)
        covered = [c for c in channels if lang in c.languages]
        if covered:
            return self._route([(c, s.vector_weight_covered, False) for c in covered])
        return [(c, s.vector_weight_uncovered, True) for c in channels]

    def _route(
        self, weights: list[tuple[Channel, float, bool]]
    ) -> list[tuple[Channel, float, bool]]:
        if isinstance(self.embedder, FusedEmbedder) and self.embedder.routed and weights:
            return weights[:1]
        return weights

    def vector_weight(self, language: str) -> float:
        """Total vector weight for a query detected as `language` with confidence."""
        detection = Detection(language, 1.0, "LATIN" if language == UNDETERMINED else "")
        return sum(w for _, w, _ in self.channel_weights(detection))

    def search(
        self,
        query: str,
        flt: SearchFilter,
        k: int = 10,
        mode: Mode = "hybrid",
        language: str | None = None,
    ) -> SearchResult:
        started = time.perf_counter()
        detection = detect_query(query)
        if language is not None:
            detection = Detection(language, 1.0, detection.script)
        else:
            detection = break_tie(detection, lambda lang: self._readable_in(lang, flt))
        lang = detection.language
        weights = self.channel_weights(detection) if mode != "text" else []
        if mode == "vector" and self.embedder is None:
            raise ValueError("vector search needs an embedding model; none is configured")
        if mode == "vector" and not weights:
            assert self.embedder is not None
            weights = [(c, 1.0, False) for c in channels_of(self.embedder)]
        vweight = sum(w for _, w, _ in weights)
        result = SearchResult(query=query, language=lang, mode=mode, vector_weight=vweight)
        if not query.strip():
            return result
        depth = max(k, self.settings.candidates)
        text_hits: list[ScoredChunk] = []
        vector_lists: list[tuple[list[ScoredChunk], float, float, float]] = []
        if mode in ("hybrid", "text"):
            text_hits = self.index.search_text(query, lang, depth if mode == "hybrid" else k, flt)
        if mode in ("vector", "hybrid") and weights:
            vector_lists = self._vector_lists(
                query, weights, depth if mode == "hybrid" else k, flt, result.query_vectors
            )
        if mode == "text":
            hits = [_single(h, i, "text") for i, h in enumerate(text_hits[:k])]
        elif mode == "vector" and len(vector_lists) == 1:
            hits = [_single(h, i, "vector") for i, h in enumerate(vector_lists[0][0][:k])]
        elif mode == "vector":
            hits = self._fuse([], vector_lists, k, lang)
        else:
            hits = self._fuse(text_hits, vector_lists, k, lang)
        if self.reranker is not None and hits:
            hits = self.reranker.rerank(query, hits)[:k]
        # Defence in depth: the index filters, and nothing unfiltered may slip through a backend bug.
        result.hits = [h for h in hits if flt.admits(h.chunk)]
        result.took_ms = (time.perf_counter() - started) * 1000
        return result

    def _readable_in(self, language: str, flt: SearchFilter) -> int:
        """Chunks in `language` that `flt` admits (the caller's own corpus, for `break_tie`)."""
        if flt.languages is not None and language not in flt.languages:
            return 0
        return self.index.count(dataclasses.replace(flt, languages=frozenset({language})))

    def _vector_lists(
        self,
        query: str,
        weights: list[tuple[Channel, float, bool]],
        depth: int,
        flt: SearchFilter,
        vectors: dict[str, Vectors],
    ) -> list[tuple[list[ScoredChunk], float, float, float]]:
        assert self.embedder is not None
        out: list[tuple[list[ScoredChunk], float, float, float]] = []
        multi = self.settings.same_language_multilingual
        for channel, weight, restricted in weights:
            qvec = self._query_vector(query, channel, vectors)
            hits = self.index.search_vector(qvec.tolist(), depth, flt)
            if restricted:
                # An unsure or unsupported chunk language counts as covered only for a model
                # that reads English (most short untagged text), as before.
                hits = [h for h in hits if _reads(channel, h.chunk.language)]
            out.append((hits, weight, multi if len(channel.languages) > 1 else 1.0, 1.0))
        return out

    def _query_vector(self, query: str, channel: Channel, vectors: dict[str, Vectors]) -> Vectors:
        """The query vector to search `channel` with; each model's embedding lands in `vectors`."""
        assert self.embedder is not None
        if not isinstance(self.embedder, FusedEmbedder):
            vectors[self.embedder.name] = self.embedder.embed([query])[0]
            return vectors[self.embedder.name]
        # As FusedEmbedder.embed_query: that part's embedding, zeros elsewhere; the part's own
        # vector is kept for the answer's sentence scoring.
        part = self.embedder.parts[[c.name for c in self.embedder.channels].index(channel.name)]
        vectors[part.name] = part.embed([query])[0]
        qvec = np.zeros(self.embedder.dimension, dtype=np.float32)
        qvec[channel.start : channel.stop] = vectors[part.name]
        return qvec

    def _fuse(
        self,
        text_hits: list[ScoredChunk],
        vector_lists: list[tuple[list[ScoredChunk], float, float, float]],
        k: int,
        language: str,
    ) -> list[SearchHit]:
        s = self.settings
        chunks: dict[str, Chunk] = {}
        text_rank: dict[str, int] = {}
        vector_rank: dict[str, int] = {}
        # (hits, weight, factor for chunks in the query's language, factor for other languages)
        lists = [(text_hits, s.text_weight, 1.0, s.text_weight_other_language), *vector_lists]
        for i, h in enumerate(text_hits):
            chunks[h.chunk.id] = h.chunk
            text_rank[h.chunk.id] = i
        for hits, *_ in vector_lists:
            for i, h in enumerate(hits):
                chunks.setdefault(h.chunk.id, h.chunk)
                vector_rank[h.chunk.id] = min(i, vector_rank.get(h.chunk.id, i))
        scores: dict[str, float] = {}
        known = language != UNDETERMINED
        for hits, weight, same, other in lists:
            if not hits or weight == 0:
                continue
            for h, vote in zip(hits, _votes(hits, s), strict=True):
                w = weight
                if known and h.chunk.language == language:
                    w *= same
                elif known and h.chunk.language != UNDETERMINED:
                    w *= other
                scores[h.chunk.id] = scores.get(h.chunk.id, 0.0) + w * vote
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


def full_query_vector(embedder: Embedder, text: str, known: dict[str, Vectors]) -> Vectors:
    """`embedder.embed([text])[0]`, reusing the models' vectors in `known` (by model name).

    A fused embedder's row is its parts' unit vectors side by side, each scaled by 1/sqrt(n)
    (FusedEmbedder.embed); only a part retrieval did not run embeds the text.
    """
    if not isinstance(embedder, FusedEmbedder):
        if embedder.name not in known:
            known[embedder.name] = embedder.embed([text])[0]
        return known[embedder.name]
    scale = np.float32(1.0 / np.sqrt(len(embedder.parts)))
    for part in embedder.parts:
        if part.name not in known:
            known[part.name] = part.embed([text])[0]
    row = np.hstack([known[p.name] * scale for p in embedder.parts])
    return np.ascontiguousarray(row, dtype=np.float32)


def _votes(hits: Sequence[ScoredChunk], s: FusionSettings) -> list[float]:
    """One channel's vote per hit (best first), each in [0, 1] except RRF's small ones.

    `relative` keeps how decisive a channel is: a full-text match scoring three times the next
    one keeps that lead, while a near-tie stays a near-tie for another channel to break. RRF
    gives both cases the same vote gap, so within one language a weaker model (USE on XQuAD ar:
    0.78 against full text's 0.96) overturned confident matches and put hybrid below full text
    on ar, es and zh. Min-max (`weighted`) stretches the weakest candidate to 0, so a thin list
    (full text's name matches across languages) spreads as widely as a strong one, and the
    votes depend on how deep the candidate list goes. Measured in docs/benchmarks.md.
    """
    if s.fusion == "rrf":
        return [1 / (s.rrf_k + i + 1) for i in range(len(hits))]
    top, low = hits[0].score, hits[-1].score
    if s.fusion == "relative" and top > 0:
        # A channel's scores at or below zero (a cosine) are no evidence for the chunk.
        return [max(h.score, 0.0) / top for h in hits]
    span = (top - low) or 1.0
    return [(h.score - low) / span for h in hits]


def _reads(channel: Channel, language: str) -> bool:
    if language in channel.languages:
        return True
    return language == UNDETERMINED and "en" in channel.languages


def _single(hit: ScoredChunk, i: int, channel: str) -> SearchHit:
    return SearchHit(
        chunk=hit.chunk,
        score=hit.score,
        rank=i + 1,
        text_rank=i + 1 if channel == "text" else None,
        vector_rank=i + 1 if channel == "vector" else None,
    )
