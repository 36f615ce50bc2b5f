"""Language-aware analysis: stemming and stop words per language, accents, scripts."""

from __future__ import annotations

import pytest

from sovra.index import analyze, normalize_language
from sovra.index.analysis import MAX_TOKEN_CHARS
from sovra.index.stopwords import STOP_WORDS


@pytest.mark.parametrize(
    ("language", "a", "b"),
    [
        ("de", "Häuser", "Haus"),
        ("de", "Häusern", "hauses"),
        ("en", "running", "runs"),
        ("en", "Policies", "policy"),
        ("es", "canciones", "canción"),
        ("fr", "maisons", "maison"),
        ("ar", "المكتبة", "مكتبة"),
    ],
)
def test_inflections_meet(language: str, a: str, b: str) -> None:
    assert analyze(a, language) == analyze(b, language)
    assert analyze(a, language) != []


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "the and of to is"),
        ("de", "der die das und für über"),
        ("de", "fur uber"),  # accent-free spellings are stop words too
        ("es", "el la de que también"),
        ("fr", "le la les et où"),
        ("ar", "في من على"),
    ],
)
def test_stop_words_removed(language: str, text: str) -> None:
    content = {"en": "engine", "de": "Motor", "es": "motor", "fr": "moteur", "ar": "محرك"}
    assert analyze(f"{text} {content[language]}", language) == analyze(content[language], language)


def test_a_text_of_stop_words_only_keeps_them() -> None:
    # "to be or not to be" must still be findable: nothing would be left to search for.
    assert analyze("to be or not to be", "en") != []


def test_stop_words_are_per_language() -> None:
    # "die" is a German article but an English content word.
    assert analyze("die Katze", "de") == analyze("Katze", "de")
    assert analyze("die cat", "en") == ["die", "cat"]


def test_accents_stripped_after_stemming() -> None:
    assert analyze("café", "und") == analyze("cafe", "und") == ["cafe"]
    assert analyze("Économie", "fr") == analyze("economie", "fr")


def test_arabic_diacritics_removed() -> None:
    assert analyze("الْكِتَابُ", "ar") == analyze("الكتاب", "ar")


def test_neutral_fallback_keeps_words_in_any_script() -> None:
    assert analyze("東京 Ünïcode foo_bar 42", "und") == ["unicode", "foo_bar", "42", "東京"]
    assert analyze("Running", "xx") == ["running"]  # unknown language: no stemming


def test_junk_tokens_dropped() -> None:
    assert analyze("a" * (MAX_TOKEN_CHARS + 1) + " ok ___", "und") == ["ok"]


def test_language_codes_normalised() -> None:
    assert normalize_language("de-AT") == "de"
    assert normalize_language("EN_us") == "en"
    assert normalize_language("") == "und"
    assert normalize_language(None) == "und"
    assert analyze("Häuser", "DE-de") == ["haus"]


def test_required_languages_have_stop_words() -> None:
    assert {"en", "de", "es", "fr", "ar"} <= set(STOP_WORDS)
    assert all(20 <= len(words) <= 400 for words in STOP_WORDS.values())
