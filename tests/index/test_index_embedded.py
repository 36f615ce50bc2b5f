"""Behaviour specific to the embedded engine: locking, compaction, statistics, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from index_helpers import DIM, chunk, everyone, ids, unit

from sovra.domain import SearchFilter
from sovra.index import EmbeddedIndex, IndexError_, open_index


def test_second_open_of_same_directory_is_refused(tmp_path: Path) -> None:
    with EmbeddedIndex(tmp_path, DIM), pytest.raises(IndexError_, match="open in another"):
        EmbeddedIndex(tmp_path, DIM)
    # After close it opens again.
    EmbeddedIndex(tmp_path, DIM).close()


def test_unknown_backend_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IndexError_, match="unknown index backend"):
        open_index(tmp_path, dimension=DIM, backend="elastic")


def test_compaction_keeps_results_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    idx = EmbeddedIndex(tmp_path, DIM)
    vecs = {f"d{i}": unit(rng) for i in range(40)}
    # 40 docs x 10 chunks rewritten 5 times: 1,600 dead slots force compactions.
    for round_ in range(5):
        idx.replace_documents(
            {
                doc: [
                    chunk(
                        doc,
                        p,
                        f"round{round_} shared",
                        embedding=vecs[doc] if p == 0 else None,
                        with_embedding=p == 0,
                    )
                    for p in range(10)
                ]
                for doc in vecs
            }
        )
    mem = idx._mem
    assert mem.n < 5 * 400  # compacted: dead slots were dropped
    assert idx.count() == 400
    assert len(idx.search_text("round4", "en", 1000, everyone())) == 400
    assert idx.search_text("round3", "en", 10, everyone()) == []
    assert ids(idx.search_vector(vecs["d7"], 1, everyone())) == ["d7#0"]
    # Chunks without embeddings are never vector hits.
    assert len(idx.search_vector(unit(rng), 1000, everyone())) == 40
    idx.close()
    again = EmbeddedIndex(tmp_path, DIM)
    assert again.count() == 400
    assert len(again.search_text("round4", "en", 1000, everyone())) == 400
    again.close()


def test_bm25_statistics_only_count_admitted_chunks(tmp_path: Path) -> None:
    """Scores must not depend on chunks the caller cannot read (no statistics side channel)."""
    with EmbeddedIndex(tmp_path / "a", DIM) as small, EmbeddedIndex(tmp_path / "b", DIM) as big:
        visible = {f"v{i}": [chunk(f"v{i}", 0, f"secret{i % 2} plan")] for i in range(4)}
        small.replace_documents(visible)
        big.replace_documents(visible)
        big.replace_documents(
            {f"h{i}": [chunk(f"h{i}", 0, "secret0 plan", access=("group:hr",))] for i in range(50)}
        )
        flt = everyone()
        a = [(h.chunk.id, round(h.score, 5)) for h in small.search_text("secret0", "en", 10, flt)]
        b = [(h.chunk.id, round(h.score, 5)) for h in big.search_text("secret0", "en", 10, flt)]
        assert a == b


def test_filter_cache_sees_new_writes(tmp_path: Path) -> None:
    with EmbeddedIndex(tmp_path, DIM) as idx:
        flt = SearchFilter(frozenset({"group:x"}))
        assert idx.count(flt) == 0
        idx.replace_document("d", [chunk("d", 0, access=("group:x",))])
        assert idx.count(flt) == 1
        idx.replace_document("d", [chunk("d", 0, access=("group:y",))])
        assert idx.count(flt) == 0
        assert idx.search_text("common", "en", 5, flt) == []


def test_naive_datetimes_are_taken_as_utc(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    with EmbeddedIndex(tmp_path, DIM) as idx:
        idx.replace_document("d", [chunk("d", 0, modified_at=datetime(2024, 1, 1, 12))])
        after = SearchFilter(
            frozenset({"public"}), modified_after=datetime(2024, 1, 1, 12, tzinfo=UTC)
        )
        later = SearchFilter(frozenset({"public"}), modified_after=datetime(2024, 1, 1, 12, 0, 1))
        assert idx.count(after) == 1
        assert idx.count(later) == 0


def test_chunk_id_owned_by_other_document_is_refused(tmp_path: Path) -> None:
    with EmbeddedIndex(tmp_path, DIM) as idx:
        idx.replace_document("a", [chunk("a", 0, "first")])
        bad = chunk("a", 0, "stolen")
        bad.document_id = "b"
        with pytest.raises(IndexError_, match="another document"):
            idx.replace_document("b", [bad])
        assert [c.text for c in idx.chunks_of("a")] == ["first"]
        assert idx.document_ids() == {"a"}
        # The failed write left the vocabulary consistent: new words still index and search.
        idx.replace_document("c", [chunk("c", 0, "stolen goods")])
        idx.close()
    with EmbeddedIndex(tmp_path, DIM) as again:
        assert ids(again.search_text("stolen", "en", 5, everyone())) == ["c#0"]


def test_filter_with_plain_sets_is_accepted(tmp_path: Path) -> None:
    with EmbeddedIndex(tmp_path, DIM) as idx:
        idx.replace_document("d", [chunk("d", 0, source="wiki")])
        flt = SearchFilter({"public"}, sources={"wiki"})  # type: ignore[arg-type]
        assert idx.count(flt) == 1
        assert ids(idx.search_text("common", "en", 5, flt)) == ["d#0"]
        assert len(idx.search_vector(unit(np.random.default_rng(0)), 5, flt)) == 1
