"""Fusion across languages with the real bundled models, on small fixed XQuAD collections.

* Every XQuAD collection `sovra eval retrieval` runs (each language alone, and each language's
  questions over the English paragraphs; 240 paragraphs, the first 300 questions, as the
  evaluation): hybrid nDCG@10 with the default embedding set-up is never below full text.
  Before score-relative fusion, RRF put hybrid 0.001–0.008 below full text on ar, es and zh.
* A mixed-language document set (each paragraph indexed in one language): every question finds
  its paragraph in the paragraph's own language and from a question in another language.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import pytest

from sovra.config import EmbeddingConfig
from sovra.domain import PUBLIC, SearchFilter
from sovra.evals.collections import load_xquad
from sovra.evals.retrieval_eval import build_eval_index, evaluate_collection
from sovra.ingest.language import detect_languages
from sovra.models.base import Embedder
from sovra.models.embedding import (
    FusedEmbedder,
    SentenceTransformerEmbedder,
    USEEmbedder,
    build_embedder,
)
from sovra.search import FusionSettings, Searcher

pytestmark = pytest.mark.slow

QUESTIONS = 300  # as `sovra eval retrieval --max-queries 300` (docs/benchmarks.md)


@lru_cache(maxsize=1)
def fused() -> Embedder:
    return FusedEmbedder([SentenceTransformerEmbedder(), USEEmbedder(threads=2)])


def xquad_root(shared_data: Path) -> Path:
    return shared_data / "eval" / "xquad"


def _languages(root: Path) -> list[str]:
    return sorted(p.name.split(".")[1] for p in root.glob("xquad.*.json"))


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """The shipped `[embedding]` defaults (MiniLM + USE, routed), on PyTorch instead of an ONNX
    export so the test needs no cache directory."""
    return build_embedder(EmbeddingConfig(), lambda p: p)


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    return xquad_root(shared_data)


@pytest.fixture(scope="module")
def vectors_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Paragraph vectors shared by the collections of one module run (English ones repeat)."""
    return tmp_path_factory.mktemp("eval-vectors")


@pytest.mark.parametrize(
    ("questions", "paragraphs"),
    [(q, q) for q in ("en", "de", "es", "ar", "ru", "zh")]
    + [(q, "en") for q in ("de", "es", "ar", "ru", "zh")],
)
def test_hybrid_never_below_full_text(
    root: Path, vectors_cache: Path, questions: str, paragraphs: str
) -> None:
    missing = {questions, paragraphs} - set(_languages(root))
    if missing:
        pytest.skip(f"no XQuAD file for {sorted(missing)}")
    report = evaluate_collection(
        load_xquad(root, questions, paragraphs),
        default_embedder(),
        FusionSettings(),
        methods=("text", "hybrid"),
        max_queries=QUESTIONS,
        cache_dir=vectors_cache,
    )
    text, hybrid = report.methods["text"].ndcg10, report.methods["hybrid"].ndcg10
    assert hybrid >= text, (report.collection, text, hybrid)


@pytest.fixture(scope="module")
def mixed(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Searcher, dict]]:
    """Paragraph i is indexed in language langs[i % n] only; questions exist in every language."""
    langs = [lang for lang in ("en", "de", "ar", "ru", "zh") if lang in _languages(root)]
    data = {
        lang: json.loads((root / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        for lang in langs
    }
    docs: list[tuple[str, str, str]] = []
    questions: dict[str, dict[str, str]] = {}  # para id -> language -> first question
    owner: dict[str, str] = {}
    n = 0
    for a, article in enumerate(data["en"]["data"]):
        for p, _ in enumerate(article["paragraphs"]):
            if n >= 40:
                break
            pid = f"{a}-{p}"
            lang = langs[n % len(langs)]
            para = data[lang]["data"][a]["paragraphs"][p]
            docs.append((pid, "", para["context"]))
            owner[pid] = lang
            questions[pid] = {
                q: data[q]["data"][a]["paragraphs"][p]["qas"][0]["question"] for q in langs
            }
            n += 1
    embedder = fused()
    vectors = embedder.embed([t for _, _, t in docs])
    index = build_eval_index(
        tmp_path_factory.mktemp("mixed") / "index",
        docs,
        detect_languages([t for _, _, t in docs]),
        vectors,
        embedder.dimension,
    )
    yield Searcher(index, embedder), {"owner": owner, "questions": questions, "langs": langs}
    index.close()


def test_each_document_found_in_its_own_language_and_cross_lingually(
    mixed: tuple[Searcher, dict],
) -> None:
    searcher, info = mixed
    flt = SearchFilter(access_tokens=frozenset({PUBLIC}))
    own = cross = own_total = cross_total = 0
    misses: list[tuple[str, str, str]] = []
    for pid, by_lang in info["questions"].items():
        for lang, question in by_lang.items():
            hits = searcher.search(question, flt, k=5).hits
            found = pid in [h.chunk.uri for h in hits]
            if lang == info["owner"][pid]:
                own_total += 1
                own += found
            else:
                cross_total += 1
                cross += found
            if not found:
                misses.append((pid, lang, question))
    assert own / own_total >= 0.9, misses
    assert cross / cross_total >= 0.75, misses
