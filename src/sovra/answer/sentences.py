"""Split chunk text into candidate answer sentences, keeping their character offsets."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends at . ! ? (or their CJK/Arabic forms) followed by space and an upper-case
# letter, digit, quote or bracket; abbreviations like "e.g." stay inside.
_BOUNDARY = re.compile(r"(?<=[.!?。！？؟])\s+(?=[\"'“(\[A-ZÄÖÜÁÉÍÓÚÑ0-9¿¡])")
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Dr|Mr|Mrs|Ms|Nr|z\.B|bzw|ca|approx|Fig|No)\.$")
_MD_NOISE = re.compile(r"^\s*(?:[-*+]\s+|\d+[.)]\s+|>\s*)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int
    end: int


def clean_inline(text: str) -> str:
    """Markdown links become their label; emphasis markers and extra spaces go."""
    text = _LINK.sub(r"\1", text)
    text = text.replace("**", "").replace("__", "").replace("`", "")
    return " ".join(text.split())


def _blocks(text: str) -> list[tuple[int, int]]:
    """Paragraphs, list items and table rows as (start, end) spans; headings and code skipped.

    Markdown wraps paragraphs over several lines, so consecutive prose lines form one block;
    a list item or table row always starts a new block.
    """
    blocks: list[tuple[int, int]] = []
    current: list[int] | None = None  # [start, end]
    in_code = False
    offset = 0
    for line in text.splitlines(keepends=True):
        line_start, offset = offset, offset + len(line)
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code = not in_code
            current = None
            continue
        if in_code or not stripped or stripped.startswith("#") or set(stripped) <= set("|-: "):
            current = None
            continue
        lead = len(line) - len(line.lstrip())
        noise = _MD_NOISE.match(line[lead:])
        body_start = line_start + lead + (noise.end() if noise else 0)
        body_end = line_start + len(line.rstrip())
        if noise or stripped.startswith("|") or current is None:
            current = [body_start, body_end]
            blocks.append((body_start, body_end))
        else:
            current[1] = body_end
            blocks[-1] = (current[0], body_end)
    return blocks


def split_sentences(text: str, min_words: int = 4) -> list[Sentence]:
    """Sentences of prose, list items and table rows, with offsets into `text`."""
    out: list[Sentence] = []
    for block_start, block_end in _blocks(text):
        body = text[block_start:block_end]
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
                out.append(Sentence(sentence, block_start + a, block_start + b))
    return out
