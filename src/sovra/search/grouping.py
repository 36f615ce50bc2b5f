"""Search results per document: one entry per Document with its best passages, and readable
snippets (markdown reduced to plain text, query terms marked by the index's own analyser).

Shared by every surface that lists search hits (CLI, REST `group_by=document`, web UI) so a
document ranks and reads the same everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from sovra.domain import as_utc
from sovra.index.analysis import analyze
from sovra.search.hybrid import SearchHit, SearchResult

PASSAGES_SHOWN = 3
"""Best passages kept per document; the rest are counted ("n more passages")."""
SEVERAL_BONUS = 0.0
"""Score bonus per extra matching passage, relative to the best one, capped at `BONUS_CAP`. Off:
on `sovra eval retrieval --documents` (bench/results/ux17-grouping-ndcg.json, first 300 queries)
every bonus measured lowered document-level nDCG@10 against first hit per document on XQuAD
articles (0.02: -0.003 to -0.028; 0.05: -0.020 to -0.064), NFCorpus was even or lower, only
chunked Cranfield gained (+0.002 at 0.02, +0.008 at 0.05). Documents rank by their best passage;
the knob stays for corpora where measurement says otherwise."""
BONUS_CAP = 0.06
SNIPPET_CHARS = 240
CANDIDATES_PER_DOCUMENT = 4
"""Passages fetched per document asked for, so one long document cannot crowd out the others."""

_MD = MarkdownIt("commonmark").enable("table")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Segment:
    """A piece of a snippet; `marked` when it matched a query term."""

    text: str
    marked: bool = False


@dataclass(frozen=True)
class Passage:
    hit: SearchHit
    snippet: tuple[Segment, ...]

    @property
    def heading(self) -> tuple[str, ...]:
        """The heading path as plain text (headings may hold links or emphasis)."""
        return tuple(t for h in self.hit.chunk.heading_path if (t := plain_text(h)))


@dataclass(frozen=True)
class DocumentHit:
    """One Document in grouped results, ranked by its best passage (more passages break ties)."""

    rank: int
    score: float
    passages: tuple[Passage, ...]
    more: int

    @property
    def best(self) -> SearchHit:
        return self.passages[0].hit

    @property
    def document_id(self) -> str:
        return self.best.chunk.document_id

    @property
    def title(self) -> str:
        return self.best.chunk.title

    @property
    def source(self) -> str:
        return self.best.chunk.source

    @property
    def modified_at(self) -> datetime | None:
        return self.best.chunk.modified_at


def plain_text(markdown: str) -> str:
    """`markdown` as the words a reader sees: no image syntax, link URLs or heading hashes."""
    parts: list[str] = []

    def walk(tokens: list[Token]) -> None:
        for t in tokens:
            if t.type == "image":
                continue  # alt text of an image is not part of the passage's prose
            if t.children:
                walk(t.children)
            elif t.type in ("text", "code_inline"):
                parts.append(t.content)
            elif t.type in ("softbreak", "hardbreak"):
                parts.append(" ")
            elif t.type in ("code_block", "fence", "html_block"):
                parts.append(t.content)
            elif t.type.endswith("_close") and t.block:
                parts.append(" ")

    walk(_MD.parse(markdown))
    return " ".join("".join(parts).split())


def query_terms(query: str, language: str) -> frozenset[str]:
    return frozenset(analyze(query, language))


def _marks(text: str, terms: frozenset[str], language: str) -> list[tuple[int, int]]:
    spans = []
    for m in _WORD.finditer(text):
        if terms.intersection(analyze(m.group(), language)):
            spans.append(m.span())
    return spans


def snippet(
    markdown: str, terms: frozenset[str], language: str, *, width: int = SNIPPET_CHARS
) -> tuple[Segment, ...]:
    """A window of `markdown`'s plain text around its first matching term, terms marked.
    Segments are plain strings: each surface escapes them (the UI through autoescaping)."""
    text = plain_text(markdown)
    spans = _marks(text, terms, language) if terms else []
    start = 0
    if spans and spans[0][0] > width // 3:
        start = text.rfind(" ", 0, spans[0][0] - width // 4) + 1
    end = len(text) if len(text) - start <= width else text.rfind(" ", start, start + width)
    if end <= start:
        end = min(len(text), start + width)
    out: list[Segment] = []
    if start > 0:
        out.append(Segment("…"))
    pos = start
    for a, b in spans:
        if a < start or b > end:
            continue
        if a > pos:
            out.append(Segment(text[pos:a]))
        out.append(Segment(text[a:b], marked=True))
        pos = b
    if end > pos:
        out.append(Segment(text[pos:end]))
    if end < len(text):
        out.append(Segment("…"))
    return tuple(out)


def candidate_passages(k: int) -> int:
    """How many passages to retrieve for `k` grouped documents (the eval measures the same)."""
    return min(k * CANDIDATES_PER_DOCUMENT, 200)


def group_by_document(
    result: SearchResult,
    *,
    k: int,
    passages: int = PASSAGES_SHOWN,
    bonus: float = SEVERAL_BONUS,
    cap: float = BONUS_CAP,
) -> list[DocumentHit]:
    """At most `k` Documents from `result`'s hits, each with its best `passages` passages;
    `bonus`/`cap` are open so `sovra eval retrieval --documents` can measure other weights."""
    by_doc: dict[str, list[SearchHit]] = {}
    for h in sorted(result.hits, key=lambda h: (-h.score, h.rank)):
        by_doc.setdefault(h.chunk.document_id, []).append(h)
    terms = query_terms(result.query, result.language)
    scored = []
    for hits in by_doc.values():
        best = hits[0].score
        extra = min(cap, bonus * (len(hits) - 1)) * abs(best)
        scored.append((best + extra, hits))
    # Equal scores: the document with more matching passages first (a tie-break, never a win).
    scored.sort(key=lambda s: (-s[0], -len(s[1]), s[1][0].rank))
    return [
        DocumentHit(
            rank=i,
            score=score,
            passages=tuple(
                Passage(h, snippet(h.chunk.text, terms, h.chunk.language or result.language))
                for h in hits[:passages]
            ),
            more=max(0, len(hits) - passages),
        )
        for i, (score, hits) in enumerate(scored[:k], start=1)
    ]


def segments_dict(segments: tuple[Segment, ...]) -> list[dict[str, Any]]:
    return [{"text": s.text, "marked": s.marked} for s in segments]


def grouped_dict(
    result: SearchResult, documents: list[DocumentHit], *, passage_text: bool = False
) -> dict[str, Any]:
    """The JSON shape of grouped results (`sovra search --json`, REST `group_by=document`,
    MCP search); `passage_text`: each passage's whole text too (MCP: agents read it)."""
    return {
        "query": result.query,
        "language": result.language,
        "mode": result.mode,
        "took_ms": round(result.took_ms, 2),
        "group_by": "document",
        "documents": [
            {
                "rank": d.rank,
                "score": d.score,
                "document_id": d.document_id,
                "title": d.title,
                "source": d.source,
                "uri": d.best.chunk.uri,
                "classification": d.best.chunk.classification,
                "language": d.best.chunk.language,
                "modified_at": as_utc(d.modified_at).isoformat() if d.modified_at else None,
                "more_passages": d.more,
                "passages": [
                    {
                        "chunk_id": p.hit.chunk.id,
                        "score": p.hit.score,
                        "heading_path": list(p.heading),
                        "snippet": "".join(s.text for s in p.snippet),
                        "highlights": segments_dict(p.snippet),
                        **({"text": p.hit.chunk.text} if passage_text else {}),
                    }
                    for p in d.passages
                ],
            }
            for d in documents
        ],
    }
