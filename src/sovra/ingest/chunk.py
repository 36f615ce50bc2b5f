"""Structure-aware chunking of the normalised markdown text that `sovra.sources.parse` produces.

The text is cut into *units* that must never be split — a heading line, a table row, a list
item (with its continuation lines), one sentence of a paragraph, one line of code — and the
units of each section (the text under one heading) are packed greedily into chunks of about
`target_tokens`, the next chunk repeating the last units of the previous one up to
`overlap_tokens`. A chunk never spans two sections, so its heading path is exact. Only a unit
bigger than `hard_max_tokens` (a minified line, a runaway table cell) is cut, at whitespace.

Every chunk is an exact slice `text[start:end]`: citations and highlights can point into the
stored document text, and the union of the slices covers all of its non-blank characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sovra.domain import Chunk, Document
from sovra.sources.base import LINE_BASE

TokenCounter = Callable[[str], int]

TARGET_TOKENS = 240
"""About 256 model tokens once the title and heading path are prefixed for the embedder
(`embedding_text`), which is the packaged MiniLM's whole window."""
OVERLAP_TOKENS = 32

_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_SENTENCE_END = re.compile(r"(?<=[.!?。؟])\s+")
_WS = re.compile(r"\s+")


_TOKENISH = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Cheap estimate of subword tokens: words, numbers and punctuation marks, plus one per
    40 characters for long words that split into pieces.

    Checked against the MiniLM WordPiece tokenizer on the sample runbooks, handbook and
    tickets: median real/estimate 0.97, 90th percentile 1.16 (words x 1.3 was 1.05 and 1.70,
    so technical chunks overflowed the model's 256-token window). Pass the model's own
    tokenizer as `count_tokens` where exactness matters more than speed.
    """
    return max(len(_TOKENISH.findall(text)) + len(text) // 40, 1)


@dataclass(frozen=True)
class Span:
    """One chunk of a text: `text[start:end]`, the headings above it, its token estimate."""

    start: int
    end: int
    heading_path: tuple[str, ...]
    tokens: int


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int
    heading: tuple[int, str] | None = None  # (level, title) for heading lines


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _split_big(
    text: str, start: int, end: int, limit: int, count: TokenCounter, out: list[_Unit]
) -> None:
    """Cut an oversized unit at whitespace into pieces of at most ~limit tokens."""
    tokens = count(text[start:end])
    if tokens <= limit:
        out.append(_Unit(start, end, tokens))
        return
    pieces = max(2, -(-tokens // limit))
    step = max(1, (end - start) // pieces)
    pos = start
    while pos < end:
        cut = min(end, pos + step)
        if cut < end:
            ws = text.rfind(" ", pos + 1, cut + 1)
            nl = text.rfind("\n", pos + 1, cut + 1)
            best = max(ws, nl)
            if best > pos:
                cut = best
        s, e = _trim(text, pos, cut)
        if e > s:
            out.append(_Unit(s, e, count(text[s:e])))
        pos = cut


class _Scanner:
    def __init__(self, text: str, count: TokenCounter, target: int, hard_max: int) -> None:
        self.text = text
        self.count = count
        self.target = target
        self.hard_max = hard_max
        self.units: list[_Unit] = []

    def add(self, start: int, end: int, *, atomic: bool) -> None:
        start, end = _trim(self.text, start, end)
        if end <= start:
            return
        piece = self.text[start:end]
        tokens = self.count(piece)
        limit = self.hard_max if atomic else self.target
        if tokens <= limit:
            self.units.append(_Unit(start, end, tokens))
        else:
            _split_big(self.text, start, end, self.target, self.count, self.units)

    def add_paragraph(self, start: int, end: int) -> None:
        # Sentences, not paragraphs, are the units: packing puts whole paragraphs back
        # together when they fit, and the overlap can then repeat the last sentence or two.
        para = self.text[start:end]
        pos = 0
        for m in _SENTENCE_END.finditer(para):
            self.add(start + pos, start + m.start(), atomic=False)
            pos = m.end()
        self.add(start + pos, end, atomic=False)

    def scan(self) -> list[_Unit]:
        text = self.text
        lines = text.split("\n")
        starts: list[int] = []
        pos = 0
        for line in lines:
            starts.append(pos)
            pos += len(line) + 1
        kinds = [_kind(line) for line in lines]
        count = len(lines)
        i = 0
        while i < count:
            kind = kinds[i]
            s = starts[i]
            e = s + len(lines[i])
            if kind == _BLANK:
                i += 1
            elif kind == _FENCE_LINE:
                fence = _FENCE.match(lines[i])
                marker = fence.group(1) if fence else "```"
                j = i + 1
                while j < count and not lines[j].lstrip().startswith(marker):
                    j += 1
                last = min(j, count - 1)
                # A code block packs line by line; the fences stay with the first/last line.
                body = range(i + 1, last if j < count else count)
                if len(body) == 0:
                    self.add(s, starts[last] + len(lines[last]), atomic=False)
                else:
                    for k in body:
                        ks = s if k == body.start else starts[k]
                        kl = last if k == body.stop - 1 else k
                        self.add(ks, starts[kl] + len(lines[kl]), atomic=False)
                i = last + 1
            elif kind == _HEADING_LINE:
                heading = _HEADING.match(lines[i])
                assert heading is not None
                hs, he = _trim(text, s, e)
                title = (heading.group(2) or "").strip()
                self.units.append(
                    _Unit(hs, he, self.count(text[hs:he]), (len(heading.group(1)), title))
                )
                i += 1
            elif kind == _TABLE_LINE:
                self.add(s, e, atomic=True)
                i += 1
            elif kind == _ITEM_LINE:
                j = i + 1
                while j < count:
                    nk = kinds[j]
                    if nk == _BLANK:
                        # A blank line ends the item unless indented text continues it.
                        if (
                            j + 1 < count
                            and kinds[j + 1] == _TEXT
                            and lines[j + 1].startswith(("  ", "\t"))
                        ):
                            j += 1
                            continue
                        break
                    if nk != _TEXT:
                        break
                    j += 1
                self.add(s, starts[j - 1] + len(lines[j - 1]), atomic=True)
                i = j
            else:
                j = i + 1
                while j < count and kinds[j] == _TEXT:
                    j += 1
                self.add_paragraph(s, starts[j - 1] + len(lines[j - 1]))
                i = j
        return self.units


_BLANK, _TEXT, _FENCE_LINE, _HEADING_LINE, _TABLE_LINE, _ITEM_LINE = range(6)


def _kind(line: str) -> int:
    """Classify a line by its first character, running a regex only when it could match."""
    stripped = line.lstrip(" \t")
    if not stripped:
        return _BLANK
    c = stripped[0]
    if c == "#":
        return _HEADING_LINE if _HEADING.match(line) else _TEXT
    if c in "`~":
        return _FENCE_LINE if _FENCE.match(line) else _TEXT
    if c == "|":
        return _TABLE_LINE
    if c in "-*+" or c.isdigit():
        return _ITEM_LINE if _LIST_ITEM.match(line) else _TEXT
    return _TEXT


def split_text(
    text: str,
    *,
    target_tokens: int = TARGET_TOKENS,
    overlap_tokens: int = OVERLAP_TOKENS,
    hard_max_tokens: int | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> list[Span]:
    """Chunk spans of `text` in order; see the module docstring for the rules."""
    if target_tokens < 1:
        raise ValueError("target_tokens must be at least 1")
    if len(text) + len(text) // 40 <= target_tokens and "#" not in text:
        # Fast path for short texts without headings (most records): every token is at
        # least one character, so the whole text fits one chunk whatever the counter says.
        start, end = _trim(text, 0, len(text))
        if end <= start:
            return []
        return [Span(start, end, (), count_tokens(text[start:end]))]
    hard_max = hard_max_tokens if hard_max_tokens is not None else 2 * target_tokens
    overlap = max(0, min(overlap_tokens, target_tokens // 2))
    units = _Scanner(text, count_tokens, target_tokens, hard_max).scan()
    spans: list[Span] = []
    stack: list[tuple[int, str]] = []
    path: tuple[str, ...] = ()
    current: list[_Unit] = []
    size = 0
    fresh = 0  # units in `current` that are not overlap from the previous chunk

    def emit() -> None:
        nonlocal current, size, fresh
        if fresh:
            spans.append(Span(current[0].start, current[-1].end, path, size))
        current, size, fresh = [], 0, 0

    for unit in units:
        if unit.heading is not None:
            # A chunk never spans two sections. Headings of sections with no body of their
            # own stay in `current` and open the next section's first chunk.
            if fresh:
                emit()
            level, title = unit.heading
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            path = tuple(t for _, t in stack if t)
            current.append(unit)
            size += unit.tokens
            continue
        if fresh and size + unit.tokens > target_tokens:
            prev = current
            emit()
            tail: list[_Unit] = []
            budget = 0
            for u in reversed(prev):
                if budget + u.tokens > overlap or u.heading is not None:
                    break
                tail.insert(0, u)
                budget += u.tokens
            current, size = tail, budget
        current.append(unit)
        size += unit.tokens
        fresh += 1
    if current and not fresh:
        # A trailing heading (or run of headings) with no body: still searchable text.
        fresh = len(current)
    emit()
    return spans


def chunk_document(
    doc: Document,
    *,
    target_tokens: int = TARGET_TOKENS,
    overlap_tokens: int = OVERLAP_TOKENS,
    count_tokens: TokenCounter = estimate_tokens,
) -> list[Chunk]:
    """The document's chunks with its labels; ids are `f"{doc.id}#{position}"`."""
    spans = split_text(
        doc.text,
        target_tokens=target_tokens,
        overlap_tokens=overlap_tokens,
        count_tokens=count_tokens,
    )
    doc_id = doc.id
    line_base = doc.metadata.get(LINE_BASE)
    return [
        Chunk(
            id=f"{doc_id}#{i}",
            document_id=doc_id,
            source=doc.source,
            position=i,
            text=doc.text[span.start : span.end],
            title=doc.title,
            uri=doc.uri
            if line_base is None
            else f"{doc.uri}#L{int(line_base) + doc.text.count(chr(10), 0, span.start) + 1}",
            heading_path=span.heading_path,
            language=doc.language,
            access=doc.access,
            classification=doc.classification,
            residency=doc.residency,
            start=span.start,
            end=span.end,
            modified_at=doc.modified_at,
        )
        for i, span in enumerate(spans)
    ]


def embedding_text(chunk: Chunk) -> str:
    """What the embedder sees: the title and heading path give a short chunk its context."""
    context = [chunk.title, *chunk.heading_path]
    head = " > ".join(dict.fromkeys(c for c in context if c))
    return f"{head}\n{chunk.text}" if head else chunk.text


def total_tokens(spans: Sequence[Span]) -> int:
    return sum(s.tokens for s in spans)
