"""Language identification with a confidence, over every language lingua knows, plus script.

One detector serves ingest (documents) and search (queries), so both sides name languages the
same way. Lingua's 75 languages in low-accuracy mode (trigram models) load in about 0.25 s,
take about 77 MB and answer a short query in about 0.2 ms (measured, docs/benchmarks.md);
restricting the candidate set instead made unlisted languages come out as the closest listed
one (Russian analysed as Polish), which is worse than not knowing.

A detection below `MIN_CONFIDENCE` is reported as `und`: the analyser then falls back to
script-aware tokenisation without a stemmer, and fusion treats the language as unknown. A wrong
stemmer damages recall far more than no stemmer.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import regex

UNDETERMINED = "und"
MIN_CONFIDENCE = 0.5
"""Below this lingua confidence the language is `und` (e.g. "hello": Sesotho 0.25)."""
MIN_LETTERS = 3
CANDIDATES = 5

_lock = threading.Lock()
_LETTER = regex.compile(r"\p{L}")
_SCRIPT_SAMPLE = 400


@dataclass(frozen=True)
class Detection:
    """A detected language (ISO 639-1, or `und`), lingua's confidence and the dominant script."""

    language: str
    confidence: float
    script: str
    candidates: tuple[tuple[str, float], ...] = ()
    """lingua's best few languages with their confidences (queries only; empty for documents),
    so a caller with a prior can break a near-tie (search/language.py)."""

    @property
    def sure(self) -> bool:
        return self.language != UNDETERMINED


@functools.lru_cache(maxsize=1)
def _detector() -> Any:
    from lingua import LanguageDetectorBuilder

    return (
        LanguageDetectorBuilder.from_all_languages()
        .with_low_accuracy_mode()
        .with_preloaded_language_models()
        .build()
    )


@functools.lru_cache(maxsize=4096)
def char_script(ch: str) -> str:
    """Unicode script of one character by its name's first word (LATIN, CYRILLIC, CJK, ...)."""
    import unicodedata

    name = unicodedata.name(ch, "")
    head = name.split(" ", 1)[0] if name else "UNKNOWN"
    # Han ideographs are named "CJK UNIFIED IDEOGRAPH-…" / "CJK COMPATIBILITY IDEOGRAPH-…".
    return "HAN" if head == "CJK" else head


def dominant_script(text: str) -> str:
    """The script most letters of `text` (first few hundred) are written in, or UNKNOWN."""
    letters = _LETTER.findall(text, 0, _SCRIPT_SAMPLE)
    if not letters:
        return "UNKNOWN"
    return Counter(char_script(c) for c in letters).most_common(1)[0][0]


def detect(text: str) -> Detection:
    """Language of `text` with lingua's confidence; `und` when unsure or too few letters."""
    script = dominant_script(text)
    if len(_LETTER.findall(text, 0, 200)) < MIN_LETTERS:
        return Detection(UNDETERMINED, 0.0, script)
    with _lock:
        values = _detector().compute_language_confidence_values(text)
    if not values:
        return Detection(UNDETERMINED, 0.0, script)
    top = values[0]
    candidates = tuple(
        (_code(v.language), float(v.value)) for v in values[:CANDIDATES] if v.value > 0
    )
    if top.value < MIN_CONFIDENCE:
        return Detection(UNDETERMINED, float(top.value), script, candidates)
    return Detection(_code(top.language), float(top.value), script, candidates)


def _code(language: Any) -> str:
    return str(language.iso_code_639_1.name).lower()


def detect_many(texts: list[str]) -> list[Detection]:
    """Batch form of `detect`; lingua spreads the batch over all cores."""
    out = [Detection(UNDETERMINED, 0.0, dominant_script(t)) for t in texts]
    todo = [i for i, t in enumerate(texts) if len(_LETTER.findall(t, 0, 200)) >= MIN_LETTERS]
    if not todo:
        return out
    with _lock:
        found = _detector().compute_language_confidence_values_in_parallel([texts[i] for i in todo])
    for i, values in zip(todo, found, strict=True):
        if values and values[0].value >= MIN_CONFIDENCE:
            lang = _code(values[0].language)
            out[i] = Detection(lang, float(values[0].value), out[i].script)
        elif values:
            out[i] = Detection(UNDETERMINED, float(values[0].value), out[i].script)
    return out
