"""The fused embedder: unit rows, one channel per model, the right model per language."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sovra.config import EmbeddingConfig
from sovra.models.base import Vectors
from sovra.models.embedding import (
    FusedEmbedder,
    SentenceTransformerEmbedder,
    USEEmbedder,
    build_embedder,
    channels_of,
    part_for_language,
)
from sovra.models.registry import BUNDLED_EMBEDDERS


class Const:
    def __init__(self, name: str, dim: int, languages: Sequence[str], value: float) -> None:
        self.name, self.dimension, self.languages = name, dim, frozenset(languages)
        self.value = value

    def embed(self, texts: Sequence[str]) -> Vectors:
        v = np.full((len(texts), self.dimension), self.value, dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_fused_rows_are_unit_length_and_channels_cover_their_slices() -> None:
    en, multi = Const("en", 4, ["en"], 1.0), Const("multi", 6, ["en", "ar"], 2.0)
    fused = FusedEmbedder([en, multi])
    v = fused.embed(["a", "b"])
    assert v.shape == (2, 10)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    ch = channels_of(fused)
    assert [(c.name, c.start, c.stop) for c in ch] == [("en", 0, 4), ("multi", 4, 10)]
    q = fused.embed_query("x", ch[1])
    assert not q[:4].any() and np.isclose(np.linalg.norm(q), 1.0)
    assert part_for_language(fused, "ar") is multi
    assert part_for_language(fused, "en") is en
    assert part_for_language(fused, "und") is en


def test_config_options_build_the_documented_embedders() -> None:
    off = build_embedder(EmbeddingConfig(multilingual="off"), lambda p: p)
    assert isinstance(off, SentenceTransformerEmbedder)
    only = build_embedder(EmbeddingConfig(multilingual="only"), lambda p: p)
    assert isinstance(only, USEEmbedder)
    routed = build_embedder(EmbeddingConfig(), lambda p: p)
    assert isinstance(routed, FusedEmbedder) and routed.routed
    assert routed.dimension == 384 + 512


def test_registry_lists_the_bundled_models_coverage() -> None:
    use = BUNDLED_EMBEDDERS["use-multilingual-v3"]
    assert {"ar", "ru", "zh", "ja", "ko", "th", "tr"} <= set(use.languages)
    assert USEEmbedder().languages == frozenset(use.languages)
    assert BUNDLED_EMBEDDERS["all-minilm-l6-v2"].languages == ("en",)


def test_use_embeds_unit_vectors_in_input_order() -> None:
    use = USEEmbedder(threads=1)
    texts = ["short", "a much longer sentence about background checks", ""]
    v = use.embed(texts)
    assert v.shape == (3, 512)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    again = use.embed([texts[1]])
    assert np.allclose(v[1], again[0], atol=1e-5)
