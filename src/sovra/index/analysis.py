"""Language- and script-aware text analysis for full-text search.

Documents and queries go through the same steps, so both sides produce comparable terms:

1. NFKC and case folding (full-width forms, ligatures, `ß`/`ss`, Turkish dotted capitals).
   In Arabic script, tashkeel and tatweel go too: they are optional in writing.
2. Tokens by Unicode script. Runs of Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer and
   Myanmar, scripts written without spaces between words, become overlapping character
   bigrams (the dependable baseline for CJK retrieval; one-character runs stay unigrams). All
   other scripts: runs of letters, digits and combining marks (so Devanagari or Bengali vowel
   signs stay inside their word, which `\\w+` does not do).
3. Stop words of the language, if it has a list.
4. Snowball stemming (PyStemmer) where PyStemmer has the language; it runs before accents are
   stripped because the stemmers use them (German umlauts, French and Spanish suffixes).
5. Latin/Greek/Cyrillic accents are stripped ("cafe" meets "café", "ё" meets "е"); Arabic-script
   letter variants are unified (alef forms, alef maqsura/yeh, teh marbuta/heh, Persian yeh and
   keheh), after stemming, because the Arabic stemmer reads those letters.

A document's language comes from detection and may differ from a query's (a short query is
often `und`). So a document indexes each word's stem AND its unstemmed form (when they differ),
while a query is stemmed only when its language is known: a sure query matches stems, an unsure
one matches exact words, and neither needs to guess the document's language. Languages without
a stemmer, and `und`, get steps 1, 2 and 5: exact words in any script.
"""

from __future__ import annotations

import itertools
import re
import threading
import unicodedata

import regex
import Stemmer

from sovra.index.stopwords import STOP_WORDS

ANALYSIS_VERSION = "2"
"""Stored with an index: terms analysed by another version do not meet this version's queries."""

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

CJK_UNIGRAMS = False
"""Also index single characters of bigram-segmented runs (measured: docs/benchmarks.md)."""

_SEG_CLASS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_TOKEN = regex.compile(
    rf"(?P<seg>[{_SEG_CLASS}](?:[{_SEG_CLASS}\p{{M}}])*)"
    rf"|(?P<word>[[\p{{L}}\p{{N}}]--[{_SEG_CLASS}]][[\p{{L}}\p{{N}}\p{{M}}_]--[{_SEG_CLASS}]]*)",
    regex.V1,
)
_ARABIC_MARKS = regex.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_ARABIC_LETTERS = str.maketrans(
    {
        "\u0623": "\u0627",  # alef with hamza above
        "\u0625": "\u0627",  # alef with hamza below
        "\u0622": "\u0627",  # alef with madda
        "\u0671": "\u0627",  # alef wasla
        "\u0649": "\u064a",  # alef maqsura -> yeh
        "\u06cc": "\u064a",  # Persian yeh -> yeh
        "\u0629": "\u0647",  # teh marbuta -> heh
        "\u06a9": "\u0643",  # keheh -> kaf
    }
)
_ASCII_WORD = re.compile(r"[a-z0-9_]*[a-z0-9][a-z0-9_]*")
_GRAPHEME = regex.compile(r"\X")
# Teh marbuta is left to the Arabic stemmer (a feminine ending it removes); the rest it would
# treat inconsistently ("مستشفى" and "مستشفي" stem differently).
_ARABIC_BEFORE_STEM = {k: v for k, v in _ARABIC_LETTERS.items() if k != ord("\u0629")}
_LATIN_MARKS = regex.compile("[\u0300-\u036f]")


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text
    return str(_LATIN_MARKS.sub("", unicodedata.normalize("NFKD", text)))


def _fold(text: str) -> str:
    """Step 1: NFKC, case folding, tashkeel and tatweel removed, Arabic letter variants unified.

    Unified before stemming too (but teh marbuta), so variants reach the stemmer as one word."""
    if text.isascii():
        return text.lower()
    folded = str(_ARABIC_MARKS.sub("", unicodedata.normalize("NFKC", text).casefold()))
    return folded.translate(_ARABIC_BEFORE_STEM)


def _finish(term: str) -> str:
    """Step 5 on one stem or word."""
    if term.isascii():
        return term
    return unicodedata.normalize("NFC", _strip_accents(term)).translate(_ARABIC_LETTERS)


def _stop_set(language: str) -> frozenset[str]:
    words = STOP_WORDS.get(language, frozenset())
    return words | frozenset(_finish(_fold(w)) for w in words) | frozenset(_fold(w) for w in words)


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


def _bigrams(run: str, out: list[str]) -> None:
    # Grapheme clusters, so a Thai or Khmer vowel sign stays on its consonant.
    chars = list(run) if run.isalpha() else _GRAPHEME.findall(run)
    if len(chars) == 1:
        out.append(chars[0])
        return
    out.extend(a + b for a, b in itertools.pairwise(chars))
    if CJK_UNIGRAMS:
        out.extend(chars)


def _tokens(text: str) -> tuple[list[str], list[str]]:
    """(words, segmented terms) of folded text."""
    if text.isascii():
        return _ASCII_WORD.findall(text), []
    words: list[str] = []
    segs: list[str] = []
    for m in _TOKEN.finditer(text):
        word = m.group("word")
        if word is not None:
            words.append(word)
        else:
            _bigrams(m.group("seg"), segs)
    return words, segs


def _analyze(text: str, language: str | None, both: bool) -> list[str]:
    lang = normalize_language(language)
    words, segs = _tokens(_fold(text))
    kept = [w for w in words if len(w) <= MAX_TOKEN_CHARS]
    if not kept and not segs and words:
        # Only over-long tokens: keep their prefix rather than lose the text entirely.
        kept = [w[:MAX_TOKEN_CHARS] for w in words]
    stops = _STOPS.get(lang, _EMPTY)
    if stops:
        content = [w for w in kept if w not in stops]
        # A text of stop words only ("to be or not to be") still has to be findable.
        kept = content or kept
    stemmer = _stemmer(lang)
    out: list[str] = []
    if stemmer is None:
        out = [_finish(w) for w in kept]
    else:
        stems = stemmer.stemWords(kept)
        out = [_finish(st) for st in stems]
        if both:
            out += [
                s for w, st in zip(kept, out[: len(kept)], strict=True) if (s := _finish(w)) != st
            ]
    out.extend(segs)
    return [t for t in out if t]


def analyze(text: str, language: str | None = "und") -> list[str]:
    """Query terms of `text` analysed for `language` (ISO 639-1, or `und`: no stemmer)."""
    return _analyze(text, language, both=False)


def analyze_document(text: str, language: str | None = "und") -> list[str]:
    """Index terms: each word's stem for `language` plus its unstemmed form when different."""
    return _analyze(text, language, both=True)
