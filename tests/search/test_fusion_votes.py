"""How fusion turns each channel's ranked list into votes, on fixed candidate lists (no model).

The default (`relative`) votes a chunk's score as a share of the channel's best: a decisive
full-text match keeps its lead over a multilingual model's preference within the query's own
language, while a near-tie is left for the model to break. RRF, by rank alone, let that model
overturn full text (XQuAD ar/es/zh hybrid below full text; test_multilingual_fusion.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sovra.domain import PUBLIC, ScoredChunk, SearchFilter
from sovra.models.base import Vectors
from sovra.search import FusionSettings, Searcher
from tests.search.test_hybrid import make_chunk

EVERYONE = SearchFilter(access_tokens=frozenset({PUBLIC}))


class MultilingualStub:
    """A multilingual model (several languages: its own-language vote is damped)."""

    name = "multi"
    dimension = 4
    languages = frozenset({"en", "es", "de"})

    def embed(self, texts: Sequence[str]) -> Vectors:
        return np.ones((len(texts), self.dimension), dtype=np.float32) / 2


class FixedIndex:
    """Answers every search with fixed candidate lists, best first (scores as given)."""

    def __init__(self, text: list[tuple[int, float]], vector: list[tuple[int, float]]) -> None:
        self.text = [ScoredChunk(make_chunk(i, f"doc {i}", PUBLIC, "es"), s) for i, s in text]
        self.vector = [ScoredChunk(make_chunk(i, f"doc {i}", PUBLIC, "es"), s) for i, s in vector]

    def search_text(
        self, query: str, language: str, k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        return self.text[:k]

    def search_vector(self, vector: list[float], k: int, flt: SearchFilter) -> list[ScoredChunk]:
        return self.vector[:k]


def fused_order(
    text: list[tuple[int, float]], vector: list[tuple[int, float]], fusion: str = "relative"
) -> list[str]:
    searcher = Searcher(
        FixedIndex(text, vector),  # type: ignore[arg-type]
        MultilingualStub(),
        FusionSettings(fusion=fusion),  # type: ignore[arg-type]
    )
    hits = searcher.search("¿quién ganó?", EVERYONE, k=10, language="es").hits
    return [h.chunk.uri for h in hits]


def test_a_decisive_full_text_match_stands_against_the_multilingual_model() -> None:
    text = [(0, 30.0), (1, 10.0)]  # full text: d0 three times as good as d1
    vector = [(1, 0.9)]  # the model only finds d1
    assert fused_order(text, vector) == ["d0", "d1"]
    # By rank alone the two full-text places are 1/61 vs 1/62 apart, less than the model's
    # damped vote for d1: RRF hands the model the decision.
    assert fused_order(text, vector, "rrf") == ["d1", "d0"]


def test_a_near_tie_in_full_text_goes_to_the_multilingual_model() -> None:
    text = [(0, 30.0), (1, 10.0), (2, 9.9)]
    vector = [(2, 0.9), (1, 0.5), (0, 0.45)]
    assert fused_order(text, vector) == ["d0", "d2", "d1"]
    # Also when full text found only two chunks: min-max (`weighted`) would stretch their 5 %
    # difference to the whole scale, so the model could never break the tie.
    thin = [(0, 10.0), (1, 9.5)]
    vector = [(1, 0.9), (2, 0.3)]
    assert fused_order(thin, vector)[:2] == ["d1", "d0"]
    assert fused_order(thin, vector, "weighted")[:2] == ["d0", "d1"]


scores = st.lists(st.integers(1, 1000), min_size=1, max_size=12, unique=True)


@given(scores, scores, st.permutations(range(12)), st.sampled_from([0.25, 2.0, 1024.0]))
def test_relative_votes_do_not_depend_on_a_channel_s_score_scale(
    text_scores: list[int], vector_scores: list[int], order: list[int], scale: float
) -> None:
    """BM25's scale grows with the corpus and a model's cosines have their own range: only
    each channel's scores relative to its best may decide (powers of two keep floats exact)."""
    text = [(i, float(s)) for i, s in enumerate(sorted(text_scores, reverse=True))]
    vector = [(order[i], s / 1000) for i, s in enumerate(sorted(vector_scores, reverse=True))]
    scaled = [(i, s * scale) for i, s in text]
    assert fused_order(scaled, vector) == fused_order(text, vector)
