"""Language-aware text analysis for full-text search: tokenise, drop stop words, stem.

The same function analyses chunks at index time (in the chunk's language) and queries at
search time (in the query's language), so both sides produce comparable terms.

Pipeline, and why in this order:
1. Unicode word tokens (`\\w+`), lower-cased. Arabic diacritics (tashkeel) and tatweel are
   removed first because they are optional in writing and would split one word into many.
2. Stop words are dropped on the lower-cased word (either spelling, with or without accents).
3. Snowball stemming (PyStemmer) per language. It runs BEFORE accent stripping because the
   stemmers use accents: German maps umlauts itself ("Häuser" → "haus"), French and Spanish
   suffix rules depend on accented vowels.
4. Remaining accents are stripped from the stems so "cafe" and "café" meet.

Languages without a stemmer (and `und`) get steps 1 and 4 only: a neutral analysis that
still matches exact words in any script.
"""

from __future__ import annotations

import re
import threading
import unicodedata

import Stemmer

from sovra.index.stopwords import STOP_WORDS

# ISO 639-1 → Snowball algorithm names available in PyStemmer.
_STEMMERS: dict[str, str] = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "cs": "czech",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "eo": "esperanto",
    "et": "estonian",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "nb": "norwegian",
    "no": "norwegian",
    "nn": "norwegian",
    "fa": "persian",
    "pl": "polish",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "st": "sesotho",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}

MAX_TOKEN_CHARS = 64
"""Longer 'words' are hashes, base64 or junk; they are dropped rather than indexed."""

_WORD = re.compile(r"\w+", re.UNICODE)
_ARABIC_MARKS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")


_COMBINING = re.compile(
    "[" + "".join(chr(c) for c in range(0x300, 0x10000) if unicodedata.combining(chr(c))) + "]"
)


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text))


def _stop_set(language: str) -> frozenset[str]:
    words = STOP_WORDS.get(language, frozenset())
    return words | frozenset(_strip_accents(w) for w in words)


_STOPS: dict[str, frozenset[str]] = {lang: _stop_set(lang) for lang in STOP_WORDS}
_EMPTY: frozenset[str] = frozenset()

# PyStemmer objects are not thread-safe; one per thread and language.
_local = threading.local()


def normalize_language(language: str | None) -> str:
    """`de-AT`, `DE`, `de_DE` → `de`; empty or None → `und`."""
    if not language:
        return "und"
    return language.strip().lower().replace("_", "-").split("-")[0] or "und"


def supported_languages() -> frozenset[str]:
    """Languages with a stemmer; those in STOP_WORDS also drop stop words."""
    return frozenset(_STEMMERS)


def _stemmer(language: str) -> Stemmer.Stemmer | None:
    algo = _STEMMERS.get(language)
    if algo is None:
        return None
    cache: dict[str, Stemmer.Stemmer] | None = getattr(_local, "stemmers", None)
    if cache is None:
        cache = {}
        _local.stemmers = cache
    stemmer = cache.get(algo)
    if stemmer is None:
        stemmer = Stemmer.Stemmer(algo)
        cache[algo] = stemmer
    return stemmer


def analyze(text: str, language: str | None = "und") -> list[str]:
    """Terms of `text` for full-text search, analysed for `language` (ISO 639-1 or `und`)."""
    lang = normalize_language(language)
    lowered = text.lower()
    if lang == "ar" or not lowered.isascii():
        # Non-ASCII text may hold Arabic marks; the regex is C-speed and a no-op otherwise.
        lowered = _ARABIC_MARKS.sub("", lowered)
    words = [w for w in _WORD.findall(lowered) if len(w) <= MAX_TOKEN_CHARS]
    stops = _STOPS.get(lang, _EMPTY)
    if stops:
        words = [w for w in words if w not in stops]
    stemmer = _stemmer(lang)
    if stemmer is not None:
        words = stemmer.stemWords(words)
    joined = "\x00".join(words)
    if not joined.isascii():
        # One normalisation over the whole text is far cheaper than one per word.
        words = _COMBINING.sub("", unicodedata.normalize("NFKD", joined)).split("\x00")
    # `_` is a word character for \w but never a useful term on its own.
    return [w for w in words if w and w.strip("_")]
