"""Query language detection, tuned for short queries: a language with its confidence, or `und`.

A short question is often ambiguous to a detector that knows 75 languages ("how do I reset my
password" comes out Latin, Tagalog or Somali about as often as English). Where lingua's best
candidates are close, the tie is broken by what the caller may read: a candidate's confidence is
weighted by how many of the caller's readable chunks are in that language (a corpus prior). A
detection that stands alone — one candidate far ahead — is never overruled, so a Spanish
question over English pages stays Spanish and is searched cross-lingually.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from sovra.index.detect import MIN_CONFIDENCE, UNDETERMINED, Detection, detect

NEAR_TIE = 0.5
"""A candidate whose confidence is at least this share of the best one's is in the tie."""


def detect_query(query: str) -> Detection:
    """The query's language, lingua's confidence and its dominant script."""
    return detect(query.strip())


def detect_query_language(query: str) -> str:
    """ISO 639-1 code of the query's language, or `und` when too short or ambiguous to tell."""
    return detect_query(query).language


def break_tie(detection: Detection, readable: Callable[[str], int]) -> Detection:
    """`detection` with a near-tie between candidates decided by the caller's corpus.

    `readable(language)` is the number of chunks in that language the caller may read (counted
    under their own filter, so nothing they cannot read shapes their query). Each candidate in
    the tie weighs `confidence × (readable + 1)`; the winner's confidence becomes its share of
    the weight times the tie's total confidence, so a hopeless detection (many languages at a
    few percent) stays `und` however large the corpus.
    """
    if not detection.candidates:
        return detection
    top = detection.candidates[0][1]
    tie = [(lang, conf) for lang, conf in detection.candidates if conf >= NEAR_TIE * top]
    if len(tie) < 2:
        return detection
    weights = {lang: conf * (readable(lang) + 1) for lang, conf in tie}
    total = sum(weights.values())
    best = max(weights, key=lambda lang: (weights[lang], lang == tie[0][0]))
    confidence = weights[best] / total * sum(conf for _, conf in tie)
    language = best if confidence >= MIN_CONFIDENCE else UNDETERMINED
    return dataclasses.replace(detection, language=language, confidence=confidence)
