"""Query language detection, tuned for short queries: a language with its confidence, or `und`.

A short question is often ambiguous to a detector that knows 75 languages: on 3-word queries cut
from XQuAD, lingua named the wrong language for 30–45 % of them ("reset my password" comes out
Italian). Lingua's confidences assume every language equally likely; the caller reads a few, so
`break_tie` applies their corpus as a prior (Bayes' rule) with a floor that lets a clear
detection of another language stand — a Spanish question over English pages stays Spanish and
is searched cross-lingually."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from sovra.index.detect import MIN_CONFIDENCE, UNDETERMINED, Detection, detect

CORPUS_PRIOR_FLOOR = 0.01
"""The prior of a language the caller reads nothing in (a share of their corpus, 0–1, plus this):
small enough that a clear detection of another language stands (a Spanish question over English
pages stays Spanish and is searched cross-lingually), large enough that a short query's weak
detection leans to the caller's languages. Chosen on 3-word queries cut from XQuAD and
Cranfield (docs/benchmarks.md): 0.001–0.05 all gained on monolingual collections, 0.2 gained
nothing; full-length questions did not change."""


def detect_query(query: str) -> Detection:
    """The query's language, lingua's confidence and its dominant script."""
    return detect(query.strip())


def detect_query_language(query: str) -> str:
    """ISO 639-1 code of the query's language, or `und` when too short or ambiguous to tell."""
    return detect_query(query).language


def break_tie(detection: Detection, readable: Callable[[str], int]) -> Detection:
    """`detection` with lingua's candidates re-weighed by the caller's corpus (Bayes' rule).

    lingua's confidences are posteriors under a uniform prior over its 75 languages; a caller
    reads a few. `readable(language)` is the number of chunks in that language the caller may
    read (counted under their own filter, so nothing they cannot read shapes their query). Each
    candidate weighs `confidence × (share of the caller's chunks + CORPUS_PRIOR_FLOOR)`; the mass
    lingua gave to languages outside the candidates counts at the floor, so a hopeless detection
    (many languages at a few percent) stays `und` however large the corpus.
    """
    if not detection.candidates:
        return detection
    counts = {lang: readable(lang) for lang, _ in detection.candidates}
    total = sum(counts.values())
    weights = {
        lang: conf * ((counts[lang] / total if total else 0.0) + CORPUS_PRIOR_FLOOR)
        for lang, conf in detection.candidates
    }
    rest = max(0.0, 1.0 - sum(conf for _, conf in detection.candidates)) * CORPUS_PRIOR_FLOOR
    first = detection.candidates[0][0]
    best = max(weights, key=lambda lang: (weights[lang], lang == first))
    confidence = weights[best] / (sum(weights.values()) + rest)
    language = best if confidence >= MIN_CONFIDENCE else UNDETERMINED
    return dataclasses.replace(detection, language=language, confidence=confidence)
