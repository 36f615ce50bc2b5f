"""Query language detection, tuned for short queries: a language with its confidence, or `und`."""

from __future__ import annotations

from sovra.index.detect import Detection, detect


def detect_query(query: str) -> Detection:
    """The query's language, lingua's confidence and its dominant script."""
    return detect(query.strip())


def detect_query_language(query: str) -> str:
    """ISO 639-1 code of the query's language, or `und` when too short or ambiguous to tell."""
    return detect_query(query).language
