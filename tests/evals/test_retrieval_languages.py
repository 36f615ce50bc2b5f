"""`sovra eval retrieval` runs every XQuAD language, alone and over English, with a BM25 reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovra.evals.collections import Collection, standard_collections
from sovra.evals.retrieval_eval import _reference_tokens, bm25_reference


def test_every_xquad_language_alone_and_over_english(shared_data: Path) -> None:
    names = set(standard_collections(shared_data / "eval"))
    for lang in ("en", "de", "es", "ar", "ru", "zh"):
        assert f"xquad-{lang}" in names
    for lang in ("de", "es", "ar", "ru", "zh"):
        assert f"xquad-{lang}-en" in names
    assert {"cranfield", "nfcorpus"} <= names


def test_reference_analysers() -> None:
    assert _reference_tokens(["背景调查"], "zh") == [["背景", "景调", "调查"]]
    # Snowball Russian: inflected forms meet.
    a, b = _reference_tokens(["проверки", "проверка"], "ru")
    assert a == b


@pytest.mark.parametrize("lang", ["en", "ru", "zh"])
def test_bm25_reference_finds_the_obvious_document(lang: str) -> None:
    docs = {
        "en": ["The background check policy applies to new hires.", "Lunch is served at noon."],
        "ru": ["Политика проверки биографии кандидатов.", "Обед подают в полдень."],
        "zh": ["背景调查政策适用于新员工。", "午餐在中午供应。"],
    }[lang]
    query = {"en": "background checks", "ru": "проверка биографии", "zh": "背景调查"}[lang]
    c = Collection(
        "t", lang, lang, {"a": ("", docs[0]), "b": ("", docs[1])}, {"q": query}, {"q": {"a": 1}}
    )
    scores = bm25_reference(c, ["q"], docs, ["a", "b"])
    assert scores.ndcg10 == 1.0
