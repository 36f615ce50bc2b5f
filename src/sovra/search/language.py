"""Query language detection, tuned for short queries (unsure → `und`)."""

from __future__ import annotations

import threading
from functools import lru_cache

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

SUPPORTED = ("en", "de", "es", "fr", "ar", "it", "nl", "pl", "pt")
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _detector() -> LanguageDetector:
    langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in SUPPORTED]
    return LanguageDetectorBuilder.from_languages(*langs).with_preloaded_language_models().build()


def detect_query_language(query: str, min_confidence: float = 0.5) -> str:
    """ISO 639-1 code of the query's language, or `und` when too short or ambiguous to tell."""
    text = query.strip()
    if len(text) < 3:
        return "und"
    with _lock:
        values = _detector().compute_language_confidence_values(text)
    if not values or values[0].value < min_confidence:
        return "und"
    return values[0].language.iso_code_639_1.name.lower()
