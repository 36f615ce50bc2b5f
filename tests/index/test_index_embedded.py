"""Behaviour specific to the embedded engine: locking, compaction, statistics, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sovra.domain import SearchFilter
from sovra.index import AnnSettings, EmbeddedIndex, IndexError_, open_index
from tests.support.index import DIM, chunk, everyone, ids, unit


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


def _state(idx: EmbeddedIndex, probe: list[float]) -> tuple[object, ...]:
    flt = everyone("group:sre")
    return (
        idx.count(),
        idx.count(flt),
        sorted(idx.document_ids()),
        [(h.chunk.id, round(h.score, 5)) for h in idx.search_text("common words", "en", 50, flt)],
        [(h.chunk.id, round(h.score, 5)) for h in idx.search_vector(probe, 50, flt)],
        [c.text for c in idx.chunks_of("d3")],
    )


def _fill(idx: EmbeddedIndex, rng: np.random.Generator) -> None:
    idx.replace_documents(
        {
            f"d{i}": [
                chunk(
                    f"d{i}",
                    p,
                    f"common words {i} {p} Häuser",
                    rng=rng,
                    access=("group:sre",) if i % 3 == 0 else ("public",),
                    language="de" if i % 2 else "en",
                )
                for p in range(3)
            ]
            for i in range(30)
        }
    )
    idx.delete_documents(["d5"])
    idx.replace_document("d6", [chunk("d6", 0, "replaced text", rng=rng)])


def test_snapshot_reopens_to_the_same_state(tmp_path: Path) -> None:
    rng = np.random.default_rng(31)
    probe = unit(rng)
    idx = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=0)
    _fill(idx, rng)
    before = _state(idx, probe)
    idx.close()
    assert (tmp_path / "memory.npz").exists()
    again = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=0)
    assert again._snapshot_generation == again._generation  # served from the snapshot
    assert _state(again, probe) == before
    # Writes after a snapshot open work, and the next close refreshes the snapshot.
    again.delete_documents(["d7"])
    again.replace_document("d8", [chunk("d8", 0, "common words fresh", rng=rng)])
    after = _state(again, probe)
    again.close()
    third = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=0)
    assert third._snapshot_generation == third._generation
    assert _state(third, probe) == after
    third.close()
    # Rebuilding from SQLite alone gives the same answers as the snapshot.
    (tmp_path / "memory.npz").unlink()
    plain = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=10**9)
    assert _state(plain, probe) == after
    plain.close()


def test_stale_snapshot_never_brings_back_deleted_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(32)
    idx = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=0)
    _fill(idx, rng)
    idx.close()
    old = (tmp_path / "memory.npz").read_bytes()
    idx = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=0)
    idx.delete_documents(["d1", "d2"])
    idx.close()
    # Put the older snapshot back, as a crash before its replacement could have.
    (tmp_path / "memory.npz").write_bytes(old)
    again = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=0)
    assert again._snapshot_generation != again._generation  # rejected: rebuilt from SQLite
    assert not {"d1", "d2"} & again.document_ids()
    hits = again.search_text("common", "en", 1000, everyone("group:sre"))
    assert not {h.chunk.document_id for h in hits} & {"d1", "d2"}
    again.close()


def test_corrupt_snapshot_is_ignored(tmp_path: Path) -> None:
    rng = np.random.default_rng(33)
    idx = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=0)
    _fill(idx, rng)
    count = idx.count()
    idx.close()
    snap = tmp_path / "memory.npz"
    snap.write_bytes(snap.read_bytes()[: snap.stat().st_size // 2])
    again = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=0)
    assert again.count() == count
    # Every chunk but the replaced d6#0 ("replaced text") holds "common".
    assert len(again.search_text("common", "en", 1000, everyone("group:sre"))) == count - 1
    again.close()


def test_readers_share_a_directory_and_writers_wait_for_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    with EmbeddedIndex(tmp_path, DIM) as writer:
        writer.replace_document("d", [chunk("d", 0, "shared words", rng=rng)])
    one = EmbeddedIndex(tmp_path, DIM, read_only=True)
    two = EmbeddedIndex(tmp_path, DIM, read_only=True)
    try:
        assert ids(one.search_text("shared", "en", 5, everyone())) == ["d#0"]
        assert ids(two.search_text("shared", "en", 5, everyone())) == ["d#0"]
        # A writer would leave the readers' memory stale: refused until the last one closes.
        with pytest.raises(IndexError_, match="open in another process"):
            EmbeddedIndex(tmp_path, DIM)
        with pytest.raises(IndexError_, match="read-only"):
            one.replace_document("e", [chunk("e", 0, rng=rng)])
        with pytest.raises(IndexError_, match="read-only"):
            two.delete_documents(["d"])
        one.close()
        with pytest.raises(IndexError_, match="open in another process"):
            EmbeddedIndex(tmp_path, DIM)
    finally:
        one.close()
        two.close()
    with EmbeddedIndex(tmp_path, DIM) as writer:
        assert writer.count() == 1  # the refused writes changed nothing
        with pytest.raises(IndexError_, match="being written by another process"):
            EmbeddedIndex(tmp_path, DIM, read_only=True)


def test_only_the_last_reader_to_close_writes_the_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    with EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=1) as writer:
        _fill(writer, rng)
    snapshot = tmp_path / "memory.npz"
    snapshot.unlink()  # the readers rebuild memory from SQLite, so they have one to save
    one = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=1, read_only=True)
    two = EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=1, read_only=True)
    one.close()
    assert not snapshot.exists(), "a reader saved while another reader had it open"
    two.close()
    assert snapshot.exists()
    probe = unit(rng)
    with EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=1) as a:
        loaded = _state(a, probe)
    snapshot.unlink()
    with EmbeddedIndex(tmp_path, DIM, snapshot_min_chunks=1) as b:
        assert _state(b, probe) == loaded


def test_cached_hits_never_outlive_a_replace_or_delete(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vec = unit(rng)
    with EmbeddedIndex(tmp_path, DIM) as idx:
        idx.replace_document("d", [chunk("d", 0, "alpha first version", embedding=vec)])
        first = idx.search_vector(vec, 1, everyone())
        assert [h.chunk.text for h in first] == ["alpha first version"]
        assert ids(idx.search_text("alpha", "en", 5, everyone())) == ["d#0"]
        idx.replace_document("d", [chunk("d", 0, "beta second version", embedding=vec)])
        assert [h.chunk.text for h in idx.search_vector(vec, 1, everyone())] == [
            "beta second version"
        ]
        assert idx.search_text("alpha", "en", 5, everyone()) == []
        idx.delete_documents(["d"])
        assert idx.search_vector(vec, 1, everyone()) == []
        # Erased text is not kept in memory either.
        assert not any("version" in c.text for c in idx._chunk_cache.values())


def test_cache_is_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    with EmbeddedIndex(tmp_path, DIM, chunk_cache=5) as idx:
        idx.replace_document("d", [chunk("d", p, "word", rng=rng) for p in range(20)])
        hits = idx.search_text("word", "en", 20, everyone())
        assert len(hits) == 20
        assert len(idx._chunk_cache) == 5


# Column-major below the graph's size (ann off), row-major where the graph takes broad searches
# (ann on; exact_max above the corpus keeps every search here exact, so both must agree).
LAYOUTS = {
    "F": AnnSettings(mode="off"),
    "C": AnnSettings(mode="on", exact_max=10**6),
}


@pytest.mark.parametrize("order", sorted(LAYOUTS))
def test_a_query_with_zeros_outside_one_block_scores_as_the_full_product(
    tmp_path: Path, order: str
) -> None:
    """A fused embedder queries one model's columns (zeros elsewhere): the index reads only
    those columns, and must rank and score exactly as the full dot product does, on both the
    broad path (one product over all rows) and the selective one (a gather of admitted rows),
    in both vector layouts."""
    rng = np.random.default_rng(7)
    dim = 12
    vectors = [unit(rng, dim) for _ in range(300)]
    # A quarter is public: below the share where a row-major index gathers admitted rows, above
    # a column-major one's; 2 % are "rare": gathered in both.
    access = [
        ("rare",) if i % 50 == 1 else ("public",) if i % 4 == 0 else ("staff",) for i in range(300)
    ]
    with EmbeddedIndex(tmp_path, dim, ann=LAYOUTS[order]) as idx:
        assert idx._mem.order == order
        idx.replace_documents(
            {
                f"d{i}": [chunk(f"d{i}", 0, "x", embedding=v, access=access[i])]
                for i, v in enumerate(vectors)
            }
        )
        matrix = np.array(vectors, dtype=np.float32)
        for lo, hi in ((0, 5), (5, 12), (3, 9)):
            q = np.zeros(dim, dtype=np.float32)
            q[lo:hi] = rng.normal(size=hi - lo)
            q /= np.linalg.norm(q)
            for flt in (everyone("staff"), everyone(), SearchFilter(frozenset({"rare"}))):
                admitted = [i for i in range(300) if set(access[i]) & flt.access_tokens]
                order = sorted(admitted, key=lambda i: (-float(matrix[i] @ q), i))[:10]
                hits = idx.search_vector(list(q), 10, flt)
                assert ids(hits) == [f"d{i}#0" for i in order]
                for h, i in zip(hits, order, strict=True):
                    assert h.score == pytest.approx(float(matrix[i] @ q), abs=1e-5)


def test_vector_layout_follows_the_index_size_across_growth_and_reopening(tmp_path: Path) -> None:
    """The layout flips to row-major when growth reaches the graph's size, and a snapshot or a
    rebuild from SQLite of either layout answers exactly as brute force does."""
    rng = np.random.default_rng(11)
    probe = unit(rng)
    vectors = {f"d{i}": unit(rng) for i in range(2000)}
    matrix = np.array(list(vectors.values()), dtype=np.float32)
    best = np.argsort(-(matrix @ np.array(probe, dtype=np.float32)), kind="stable")[:20]
    expected = [f"{list(vectors)[i]}#0" for i in best]

    def add(names: list[str]) -> None:
        idx.replace_documents({d: [chunk(d, 0, embedding=vectors[d])] for d in names})

    grows_into_c = AnnSettings(mode="auto", min_chunks=1500, exact_max=10**6)
    idx = EmbeddedIndex(tmp_path, DIM, ann=grows_into_c, snapshot_min_chunks=0)
    add(list(vectors)[:1000])
    assert idx._mem.order == "F"  # 1,024 slots: below the size where the graph takes over
    add(list(vectors)[1000:])
    assert idx._mem.order == "C"  # grown to 2,048 slots
    assert ids(idx.search_vector(probe, 20, everyone())) == expected
    idx.close()
    for ann, order in ((AnnSettings(mode="off"), "F"), (grows_into_c, "C")):
        for snapshot in (True, False):
            if not snapshot:
                (tmp_path / "memory.npz").unlink(missing_ok=True)
            # Each close writes the snapshot again, for the next open to read.
            again = EmbeddedIndex(tmp_path, DIM, ann=ann, snapshot_min_chunks=0)
            assert again._mem.order == order
            assert (again._snapshot_generation == again._generation) is snapshot
            assert ids(again.search_vector(probe, 20, everyone())) == expected
            again.close()
