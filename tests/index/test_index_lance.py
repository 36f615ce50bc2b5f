"""Behaviour specific to the LanceDB backend: BM25 statistics over admitted chunks only."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovra.index import EmbeddedIndex
from tests.support.index import DIM, chunk, everyone

pytest.importorskip("lancedb")


def test_bm25_statistics_only_count_admitted_chunks(tmp_path: Path) -> None:
    """Scores must not depend on chunks the caller cannot read (no statistics side channel)."""
    from sovra.index.lance import LanceIndex

    small, big = LanceIndex(tmp_path / "a", DIM), LanceIndex(tmp_path / "b", DIM)
    try:
        visible = {f"v{i}": [chunk(f"v{i}", 0, f"secret{i % 2} plan")] for i in range(4)}
        small.replace_documents(visible)
        big.replace_documents(visible)
        big.replace_documents(
            {f"h{i}": [chunk(f"h{i}", 0, "secret0 plan", access=("group:hr",))] for i in range(50)}
        )
        big.optimize()
        flt = everyone()
        a = [(h.chunk.id, round(h.score, 5)) for h in small.search_text("secret0", "en", 10, flt)]
        b = [(h.chunk.id, round(h.score, 5)) for h in big.search_text("secret0", "en", 10, flt)]
        assert a and a == b
    finally:
        small.close()
        big.close()


def test_lance_scores_like_the_embedded_engine(tmp_path: Path) -> None:
    from sovra.index.lance import LanceIndex

    docs = {
        f"d{i}": [chunk(f"d{i}", 0, " ".join(["disk pressure node"] * (i % 3 + 1) + ["x"] * i))]
        for i in range(8)
    }
    lance = LanceIndex(tmp_path / "l", DIM)
    try:
        with EmbeddedIndex(tmp_path / "e", DIM) as emb:
            lance.replace_documents(docs)
            emb.replace_documents(docs)
            flt = everyone()
            got = [h.chunk.id for h in lance.search_text("disk pressure", "en", 5, flt)]
            want = [h.chunk.id for h in emb.search_text("disk pressure", "en", 5, flt)]
            assert got == want
    finally:
        lance.close()
