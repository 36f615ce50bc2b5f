"""Split chunk text into candidate answer sentences, keeping their character offsets."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sovra.domain import Chunk

Spans = npt.NDArray[np.int32]

# A sentence ends at . ! ? (or their CJK/Arabic forms) followed by space and an upper-case
# letter, digit, quote or bracket; abbreviations like "e.g." stay inside.
_BOUNDARY = re.compile(r"(?<=[.!?。！？؟])\s+(?=[\"'“(\[A-ZÄÖÜÁÉÍÓÚÑ0-9¿¡])")
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Dr|Mr|Mrs|Ms|Nr|z\.B|bzw|ca|approx|Fig|No)\.$")
_MD_NOISE = re.compile(r"^\s*(?:[-*+]\s+|\d+[.)]\s+|>\s*)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)|\[([^\]]+)\]\[[^\]]*\]")
_LINK_DEFINITION = re.compile(r"^\[[^\]]+\]:\s*\S+")


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int
    end: int
    block: int = 0  # index of its Block in the chunk
    kind: str = "prose"  # the block's kind


@dataclass(frozen=True)
class Block:
    """A paragraph, list item or table row; the unit a procedural answer quotes whole."""

    start: int
    end: int
    kind: str  # prose | numbered | bullet | table
    headings: tuple[
        tuple[int, str], ...
    ]  # (level, title) of the headings in force, outermost first
    code: str = ""  # a short code block right after it (the command a step refers to)
    code_end: int = 0


_MAX_CODE_CHARS = 200
_MAX_CODE_LINES = 3


def clean_inline(text: str) -> str:
    """Markdown links become their label; emphasis markers and extra spaces go."""
    text = _LINK.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    text = text.replace("**", "").replace("__", "").replace("`", "")
    return " ".join(text.split())


def split_blocks(text: str) -> list[Block]:
    """Paragraphs, list items and table rows with their kind and the headings above them.

    Markdown wraps paragraphs over several lines, so consecutive prose lines form one block;
    a list item or table row always starts a new block. Headings and code are not blocks, but
    a short code block is attached to the block before it: "Run the following command:" is
    only useful with the command.
    """
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    open_block = False  # the next prose line continues the last block
    after_block = False  # nothing but blank lines since the last block
    in_code = False
    code_lines: list[str] = []
    code_attach = False
    offset = 0
    for line in text.splitlines(keepends=True):
        line_start, offset = offset, offset + len(line)
        stripped = line.strip()
        if stripped.startswith("```"):
            if in_code:
                body = "\n".join(c for c in code_lines if c)
                if (
                    code_attach
                    and body
                    and len(body) <= _MAX_CODE_CHARS
                    and len(body.splitlines()) <= _MAX_CODE_LINES
                ):
                    last = blocks[-1]
                    blocks[-1] = Block(
                        last.start, last.end, last.kind, last.headings, body, line_start + len(line)
                    )
            else:
                code_lines = []
                code_attach = after_block and not blocks[-1].code
            in_code = not in_code
            open_block = after_block = False
            continue
        if in_code:
            code_lines.append(stripped.removeprefix("$ ").strip())
            continue
        if stripped.startswith("#"):
            level = len(stripped) - len(stripped.lstrip("#"))
            title = stripped[level:].strip()
            if title:
                headings = [h for h in headings if h[0] < level] + [(level, title)]
            open_block = after_block = False
            continue
        if not stripped:
            # A blank line closes a paragraph, but a code block after it still belongs to it.
            open_block = False
            continue
        if set(stripped) <= set("|-: ") or _LINK_DEFINITION.match(stripped):
            open_block = after_block = False
            continue
        lead = len(line) - len(line.lstrip())
        noise = _MD_NOISE.match(line[lead:])
        body_start = line_start + lead + (noise.end() if noise else 0)
        body_end = line_start + len(line.rstrip())
        if noise or stripped.startswith("|") or not open_block:
            if stripped.startswith("|"):
                kind = "table"
            elif noise and noise.group(0).strip()[:1].isdigit():
                kind = "numbered"
            elif noise and noise.group(0).strip()[:1] in "-*+":
                kind = "bullet"
            else:
                kind = "prose"
            blocks.append(Block(body_start, body_end, kind, tuple(headings)))
        else:
            last = blocks[-1]
            blocks[-1] = Block(last.start, body_end, last.kind, last.headings)
        open_block = after_block = True
    return blocks


def split_sentences(text: str, min_words: int = 4) -> list[Sentence]:
    """Sentences of prose, list items and table rows, with offsets into `text`."""
    return [s for _, s in sentences_of(split_blocks(text), text, min_words)]


def sentences_of(
    blocks: list[Block], text: str, min_words: int = 4
) -> list[tuple[Block, Sentence]]:
    out: list[tuple[Block, Sentence]] = []
    for i, block in enumerate(blocks):
        body = text[block.start : block.end]
        pieces: list[tuple[int, int]] = []
        cursor = 0
        for m in _BOUNDARY.finditer(body):
            if _ABBREV.search(body[cursor : m.start()]):
                continue
            pieces.append((cursor, m.start()))
            cursor = m.end()
        pieces.append((cursor, len(body)))
        for a, b in pieces:
            sentence = clean_inline(body[a:b])
            if len(sentence.split()) >= min_words:
                out.append(
                    (block, Sentence(sentence, block.start + a, block.start + b, i, block.kind))
                )
    return out


def sentence_spans(text: str) -> tuple[list[Sentence], Spans]:
    """Every answer sentence of a chunk and its (start, end) offsets, as stored with the chunk."""
    found = [s for _, s in sentences_of(split_blocks(text), text)]
    spans = np.array([(s.start, s.end) for s in found], dtype=np.int32).reshape(-1, 2)
    return found, spans


@runtime_checkable
class SentenceVectorStore(Protocol):
    """An index that keeps each chunk's sentence spans and vectors (the embedded engine)."""

    def sentence_vectors(
        self, model: str, chunks: Sequence[Chunk]
    ) -> dict[str, tuple[Spans, npt.NDArray[np.float32]]]: ...

    def store_sentence_vectors(
        self, model: str, entries: Sequence[tuple[Chunk, Spans, npt.NDArray[np.float32]]]
    ) -> None: ...
