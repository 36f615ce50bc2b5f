"""Analysis in every script: property tests, segmentation, normalisation, query/document agreement."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sovra.index.analysis import analyze, analyze_document, supported_languages
from sovra.index.detect import char_script, detect, dominant_script

# (script, first and last code point of a block of its letters)
SCRIPTS: dict[str, tuple[int, int]] = {
    "latin": (0x0041, 0x024F),
    "greek": (0x0391, 0x03C9),
    "cyrillic": (0x0400, 0x04FF),
    "armenian": (0x0531, 0x0587),
    "hebrew": (0x05D0, 0x05EA),
    "arabic": (0x0600, 0x06FF),
    "devanagari": (0x0900, 0x097F),
    "bengali": (0x0980, 0x09FF),
    "tamil": (0x0B80, 0x0BFF),
    "thai": (0x0E00, 0x0E7F),
    "lao": (0x0E80, 0x0EFF),
    "georgian": (0x10A0, 0x10FF),
    "myanmar": (0x1000, 0x109F),
    "khmer": (0x1780, 0x17FF),
    "ethiopic": (0x1200, 0x137F),
    "hiragana": (0x3041, 0x3096),
    "katakana": (0x30A1, 0x30FA),
    "han": (0x4E00, 0x9FFF),
    "hangul": (0xAC00, 0xD7A3),
}
LANGUAGES = ["und", *sorted(supported_languages()), "zh", "ja", "ko", "th", "vi", "he", "xx"]


def _script_text(lo: int, hi: int) -> st.SearchStrategy[str]:
    chars = st.characters(min_codepoint=lo, max_codepoint=hi)
    word = st.text(chars, min_size=1, max_size=12)
    return st.lists(word, min_size=1, max_size=8).map(" ".join)


def _has_letter(text: str) -> bool:
    return any(unicodedata.category(c).startswith("L") for c in text)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_script_never_crashes_and_letters_give_terms(script: str, data: st.DataObject) -> None:
    lo, hi = SCRIPTS[script]
    text = data.draw(_script_text(lo, hi))
    language = data.draw(st.sampled_from(LANGUAGES))
    terms = analyze(text, language)
    doc_terms = analyze_document(text, language)
    assert all(isinstance(t, str) and t for t in terms + doc_terms)
    if _has_letter(text):
        assert terms, (script, language, text)
        assert doc_terms, (script, language, text)
    # Every query term of a text is also one of its index terms, whatever the language.
    assert set(terms) <= set(doc_terms)
    detect(text)  # never raises


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80), language=st.sampled_from(LANGUAGES))
def test_arbitrary_unicode_never_crashes(text: str, language: str) -> None:
    terms = analyze_document(text, language)
    assert all(terms)
    detection = detect(text)
    assert 0.0 <= detection.confidence <= 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("背景调查", ["背景", "景调", "调查"]),
        ("東京に住む", ["東京", "京に", "に住", "住む"]),
        ("한국어", ["한국", "국어"]),
        ("สวัสดี", ["สวั", "วัส", "สดี"]),  # vowel signs stay on their consonant
        ("猫", ["猫"]),
    ],
)
def test_scripts_without_spaces_become_bigrams(text: str, expected: list[str]) -> None:
    assert analyze(text, "und") == expected


def test_chinese_question_meets_its_passage() -> None:
    passage = set(analyze_document("公司的背景调查政策适用于所有新员工。", "zh"))
    assert set(analyze("背景调查政策是什么", "zh")) & passage >= {"背景", "调查", "政策"}


def test_indic_vowel_signs_stay_inside_the_word() -> None:
    # `\w+` splits "नीति" at its vowel sign; the word must stay whole.
    assert analyze("नीति", "und") == ["नीति"]


def test_nfkc_and_casefold() -> None:
    assert analyze("ＡＢＣ ﬁle STRASSE", "und") == analyze("abc file straße", "und")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("أحمد", "احمد"),  # alef with hamza
        ("إسلام", "اسلام"),
        ("مستشفى", "مستشفي"),  # alef maqsura / yeh
        ("مدرسة", "مدرسه"),  # teh marbuta / heh
        ("كتـــاب", "كتاب"),  # tatweel
        ("کتاب", "كتاب"),  # Persian keheh / Arabic kaf
    ],
)
def test_arabic_letter_variants_meet(a: str, b: str) -> None:
    assert analyze(a, "und") == analyze(b, "und")
    assert analyze(a, "ar") == analyze(b, "ar")


def test_unsure_query_meets_a_stemmed_document() -> None:
    # The document was detected as Russian and stemmed; a short query came out `und`.
    doc = set(analyze_document("Политика проверки биографии сотрудников", "ru"))
    assert set(analyze("проверки", "und")) <= doc
    assert set(analyze("проверка", "ru")) <= doc


def test_no_stemmer_for_a_language_without_one() -> None:
    assert analyze("running dogs", "vi") == ["running", "dogs"]


def test_script_detection() -> None:
    assert char_script("ж") == "CYRILLIC"
    assert char_script("中") == "HAN"
    assert dominant_script("Привет, world") == "CYRILLIC"
    assert dominant_script("123 !!") == "UNKNOWN"


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Какова политика проверки биографии сотрудников?", "ru"),
        ("ما هي سياسة التحقق من الخلفية", "ar"),
        ("背景调查政策是什么", "zh"),
        ("Яка політика перевірки кандидатів у компанії?", "uk"),
        ("Arka plan kontrolü politikası nedir?", "tr"),
        ("Mikä on taustatarkistuksen käytäntö?", "fi"),
        ("מהי מדיניות בדיקת הרקע בחברה", "he"),
        ("नई भर्ती के लिए पृष्ठभूमि जांच नीति क्या है", "hi"),
        ("Chính sách kiểm tra lý lịch là gì?", "vi"),
    ],
)
def test_detection_covers_languages_outside_the_old_list(text: str, lang: str) -> None:
    found = detect(text)
    assert found.language == lang
    assert found.confidence >= 0.5


def test_unsure_detection_is_und_with_a_low_confidence() -> None:
    found = detect("hello")
    assert found.language == "und"
    assert found.confidence < 0.5
