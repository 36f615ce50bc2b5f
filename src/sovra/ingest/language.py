"""Document language detection: lingua over all its languages (sovra.index.detect), on prose.

Only a bounded prefix of prose (512 characters) is inspected: ingest must stay near-free next to
the embedding model. 256 characters were too few for technical English (terse abstracts came out
Latin at confidence 0.99: 57 of 1,400 NFCorpus and 10 of 1,400 Cranfield abstracts); 512 cuts
that to 19 and 2 for about 0.8 ms more per document (docs/benchmarks.md). A detection below the
confidence floor comes out as `und`, which the analyser treats with script-aware tokenisation
and no stemmer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sovra.index.detect import UNDETERMINED as UNDETERMINED
from sovra.index.detect import detect, detect_many


def _languages() -> set[str]:
    from lingua import Language

    return {str(lang.iso_code_639_1.name).lower() for lang in Language.all()}


SUPPORTED: tuple[str, ...] = tuple(sorted(_languages()))
"""ISO 639-1 codes the detector can return (every language lingua knows)."""

PREFIX_CHARS = 512
_MIN_LETTERS = 12

_CODE_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_NOISE = re.compile(r"https?://\S+|[`*_#>|\[\]()<>{}=\\/]+|\b\w*\d\w*\b")


def prose_sample(text: str, limit: int = PREFIX_CHARS) -> str:
    """Up to `limit` characters of prose: code blocks, URLs, markup and numbers left out."""
    out: list[str] = []
    size = 0
    in_code = False
    for line in text.split("\n", 200):  # bounded: never scan a huge document line by line
        if _CODE_FENCE.match(line):
            in_code = not in_code
            continue
        if in_code or line.startswith("    "):
            continue
        cleaned = _NOISE.sub(" ", line).strip()
        if cleaned:
            out.append(cleaned)
            size += len(cleaned) + 1
            if size >= limit:
                break
    return " ".join(out)[:limit]


_LETTERS = re.compile(r"[^\W\d_]")


def _enough(sample: str) -> bool:
    return len(_LETTERS.findall(sample, 0, 200)) >= _MIN_LETTERS


def detect_language(text: str) -> str:
    """ISO 639-1 code of `text`'s language, or `und` if too little prose or unsure."""
    sample = prose_sample(text)
    if not _enough(sample):
        return UNDETERMINED
    return detect(sample).language


def detect_languages(texts: Sequence[str]) -> list[str]:
    """Batch form of detect_language; lingua spreads the batch over all cores."""
    samples = [prose_sample(t) for t in texts]
    todo = [i for i, s in enumerate(samples) if _enough(s)]
    result = [UNDETERMINED] * len(texts)
    for i, found in zip(todo, detect_many([samples[i] for i in todo]), strict=True):
        result[i] = found.language
    return result
