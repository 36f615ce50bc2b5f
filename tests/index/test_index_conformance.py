"""Conformance suite for the `Index` protocol; runs unchanged against every backend."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from sovra.domain import Chunk, SearchFilter
from sovra.index import Index, IndexError_
from tests.support.index import DIM, Opener, chunk, everyone, ids, unit

# ------------------------------------------------------------------- basics


def test_backend_implements_protocol(opener: Opener) -> None:
    assert isinstance(opener(), Index)


def test_empty_index(opener: Opener) -> None:
    idx = opener()
    assert idx.count() == 0
    assert idx.count(everyone()) == 0
    assert idx.document_ids() == set()
    assert idx.search_text("anything", "en", 10, everyone()) == []
    assert idx.search_vector(unit(np.random.default_rng(1)), 10, everyone()) == []
    assert idx.chunks_of("nope") == []
    assert idx.delete_documents(["nope"]) == 0


def test_replace_delete_count(opener: Opener) -> None:
    idx = opener()
    idx.replace_document("d1", [chunk("d1", i) for i in range(3)])
    idx.replace_document("d2", [chunk("d2", i) for i in range(2)])
    assert idx.count() == 5
    assert idx.document_ids() == {"d1", "d2"}
    # Replace shrinks d1 to one chunk with new text; the old chunks are gone.
    idx.replace_document("d1", [chunk("d1", 7, "fresh alpine meadow")])
    assert idx.count() == 3
    assert [c.id for c in idx.chunks_of("d1")] == ["d1#7"]
    assert ids(idx.search_text("meadow", "en", 10, everyone())) == ["d1#7"]
    assert idx.search_text("common", "en", 10, everyone()) != []
    assert all(h.chunk.document_id == "d2" for h in idx.search_text("common", "en", 10, everyone()))
    # Empty replace deletes.
    idx.replace_document("d2", [])
    assert idx.document_ids() == {"d1"}
    assert idx.delete_documents(["d1", "unknown"]) == 1
    assert idx.count() == 0
    assert idx.document_ids() == set()


def test_bulk_replace(opener: Opener) -> None:
    idx = opener()
    idx.replace_documents({f"d{i}": [chunk(f"d{i}", j) for j in range(3)] for i in range(5)})
    assert idx.count() == 15
    idx.replace_documents({"d0": [], "d1": [chunk("d1", 0, "only one")]})
    assert idx.count() == 10
    assert idx.document_ids() == {"d1", "d2", "d3", "d4"}


def test_chunks_round_trip(opener: Opener) -> None:
    idx = opener()
    when = datetime(2024, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)
    original = chunk(
        "doc",
        0,
        "Body text with ünïcode",
        access=("group:sre", "user:alice"),
        classification="confidential",
        residency="eu-de",
        source="runbooks",
        language="de",
        modified_at=when,
        title="Runbook",
        heading_path=("Ops", "etcd"),
    )
    second = chunk("doc", 1, "second")
    idx.replace_document("doc", [second, original])  # out of order on purpose
    got = idx.chunks_of("doc")
    assert [c.position for c in got] == [0, 1]
    back = got[0]
    for f in dataclasses.fields(Chunk):
        if f.name == "embedding":
            continue
        assert getattr(back, f.name) == getattr(original, f.name), f.name
    assert back.embedding is not None
    assert np.allclose(back.embedding, original.embedding, atol=1e-6)


def test_deleted_documents_never_returned(opener: Opener) -> None:
    idx = opener()
    rng = np.random.default_rng(3)
    vec = unit(rng)
    idx.replace_document("keep", [chunk("keep", 0, "zebra crossing", rng=rng)])
    idx.replace_document("gone", [chunk("gone", 0, "zebra stripes", embedding=vec)])
    idx.replace_document("old", [chunk("old", 0, "zebra v1", embedding=vec)])
    idx.replace_document("old", [chunk("old", 1, "giraffe v2")])
    idx.delete_documents(["gone"])
    flt = everyone()
    text_hits = ids(idx.search_text("zebra", "en", 10, flt))
    vec_hits = ids(idx.search_vector(vec, 10, flt))
    for hits in (text_hits, vec_hits):
        assert "gone#0" not in hits
        assert "old#0" not in hits
    assert text_hits == ["keep#0"]
    assert idx.count(flt) == 2


def test_reopen_after_close(opener: Opener) -> None:
    idx = opener()
    rng = np.random.default_rng(5)
    vec = unit(rng)
    idx.replace_document("a", [chunk("a", 0, "persistent lighthouse", embedding=vec)])
    idx.replace_document("b", [chunk("b", 0, "temporary")])
    idx.delete_documents(["b"])
    idx.close()
    with pytest.raises(IndexError_):
        idx.count()
    again = opener()
    assert again.count() == 1
    assert again.document_ids() == {"a"}
    assert ids(again.search_text("lighthouse", "en", 5, everyone())) == ["a#0"]
    assert ids(again.search_vector(vec, 1, everyone())) == ["a#0"]
    # Writes after reopen work and survive another reopen.
    again.replace_document("c", [chunk("c", 0, "lighthouse keeper")])
    again.close()
    third = opener()
    assert third.document_ids() == {"a", "c"}
    assert set(ids(third.search_text("lighthouse", "en", 5, everyone()))) == {"a#0", "c#0"}


def test_dimension_mismatch_is_a_clear_error(opener: Opener, tmp_path: object) -> None:
    idx = opener(dimension=DIM)
    with pytest.raises(IndexError_, match="dimension"):
        idx.replace_document("d", [chunk("d", 0, embedding=[0.1] * (DIM + 1))])
    assert idx.count() == 0
    idx.replace_document("d", [chunk("d", 0)])
    with pytest.raises(IndexError_, match="dimension"):
        idx.search_vector([0.1] * (DIM - 1), 5, everyone())
    idx.close()
    with pytest.raises(IndexError_, match="dimension"):
        opener(dimension=DIM * 2)


def test_chunk_must_belong_to_document(opener: Opener) -> None:
    idx = opener()
    with pytest.raises(IndexError_):
        idx.replace_document("a", [chunk("b", 0)])
    assert idx.count() == 0


def test_bad_batch_changes_nothing(opener: Opener) -> None:
    idx = opener()
    idx.replace_document("a", [chunk("a", 0, "original")])
    with pytest.raises(IndexError_):
        idx.replace_documents(
            {"a": [chunk("a", 0, "changed")], "b": [chunk("b", 0, embedding=[1.0])]}
        )
    assert [c.text for c in idx.chunks_of("a")] == ["original"]
    assert idx.document_ids() == {"a"}


def test_k_zero_and_stopword_query(opener: Opener) -> None:
    idx = opener()
    idx.replace_document("a", [chunk("a", 0, "the cat")])
    assert idx.search_text("cat", "en", 0, everyone()) == []
    assert idx.search_text("the and of", "en", 10, everyone()) == []


def test_scores_are_ordered(opener: Opener) -> None:
    idx = opener()
    rng = np.random.default_rng(9)
    idx.replace_documents(
        {
            "a": [chunk("a", 0, "apple apple apple banana", rng=rng)],
            "b": [chunk("b", 0, "apple banana cherry date elder fig grape", rng=rng)],
            "c": [chunk("c", 0, "cherry", rng=rng)],
        }
    )
    hits = idx.search_text("apple", "en", 10, everyone())
    assert ids(hits) == ["a#0", "b#0"]
    assert hits[0].score > hits[1].score > 0
    vhits = idx.search_vector(unit(rng), 3, everyone())
    scores = [h.score for h in vhits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0001 <= s <= 1.0001 for s in scores)


def test_vector_search_is_cosine(opener: Opener) -> None:
    idx = opener()
    base = np.zeros(DIM, dtype=np.float32)
    base[0] = 1.0
    near = base.copy()
    near[1] = 0.1
    far = np.zeros(DIM, dtype=np.float32)
    far[1] = 1.0
    # Stored un-normalised and with a large norm: cosine must ignore the length.
    idx.replace_documents(
        {
            "near": [chunk("near", 0, embedding=list(near * 50))],
            "far": [chunk("far", 0, embedding=list(far))],
        }
    )
    hits = idx.search_vector(list(base * 3), 2, everyone())
    assert ids(hits) == ["near#0", "far#0"]
    assert hits[0].score == pytest.approx(1 / np.sqrt(1.01), abs=1e-4)
    assert hits[1].score == pytest.approx(0.0, abs=1e-4)


# ------------------------------------------------------------------- filters

_T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _labelled_corpus() -> list[Chunk]:
    """Chunks spanning every filter field, all matching the text query 'common'."""
    rng = np.random.default_rng(11)
    out: list[Chunk] = []
    accesses = [("public",), ("group:sre",), ("user:alice",), ("group:sre", "user:bob"), ()]
    classes = ["public", "internal", "confidential", "restricted", "secret-unknown"]
    regions = ["eu", "eu-de", "eu-fr", "sa", "*", "eudora"]
    sources = ["files", "tickets", "wiki"]
    langs = ["en", "de", "es"]
    i = 0
    for a in accesses:
        for c in classes:
            for r in regions:
                doc = f"d{i}"
                out.append(
                    chunk(
                        doc,
                        0,
                        "common ground",
                        rng=rng,
                        access=a,
                        classification=c,
                        residency=r,
                        source=sources[i % 3],
                        language=langs[(i // 3) % 3],
                        modified_at=None if i % 7 == 0 else _T0 + timedelta(days=i),
                    )
                )
                i += 1
    return out


FILTERS = {
    "access-public": SearchFilter(frozenset({"public"})),
    "access-group": SearchFilter(frozenset({"group:sre"})),
    "access-user": SearchFilter(frozenset({"user:alice", "user:bob"})),
    "access-none": SearchFilter(frozenset({"group:nobody"})),
    "classification": SearchFilter(frozenset({"public", "group:sre"}), max_classification_rank=1),
    "classification-custom-labels": SearchFilter(
        frozenset({"public"}),
        max_classification_rank=0,
        classification_labels=("internal", "public"),
    ),
    "region-eu-de": SearchFilter(frozenset({"public"}), region="eu-de"),
    "region-eu": SearchFilter(frozenset({"public"}), region="eu"),
    "region-us": SearchFilter(frozenset({"public"}), region="us"),
    "sources": SearchFilter(frozenset({"public", "group:sre"}), sources=frozenset({"tickets"})),
    "languages": SearchFilter(frozenset({"public"}), languages=frozenset({"de", "es"})),
    "modified-after": SearchFilter(
        frozenset({"public", "group:sre"}), modified_after=_T0 + timedelta(days=60)
    ),
    "modified-before": SearchFilter(
        frozenset({"public"}), modified_before=_T0 + timedelta(days=30)
    ),
    "modified-range": SearchFilter(
        frozenset({"public", "user:alice"}),
        modified_after=datetime(2024, 1, 20, tzinfo=UTC),
        modified_before=datetime(2024, 3, 1, 12, tzinfo=UTC),
    ),
    "everything": SearchFilter(
        frozenset({"public", "group:sre", "user:alice"}),
        max_classification_rank=2,
        region="eu-fr",
        sources=frozenset({"files", "wiki"}),
        languages=frozenset({"en", "de"}),
        modified_after=_T0,
        modified_before=_T0 + timedelta(days=100),
    ),
}


@pytest.fixture
def labelled(opener: Opener) -> tuple[Index, list[Chunk]]:
    idx = opener()
    corpus = _labelled_corpus()
    idx.replace_documents({c.document_id: [c] for c in corpus})
    return idx, corpus


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_filter_semantics_match_reference(labelled: tuple[Index, list[Chunk]], name: str) -> None:
    idx, corpus = labelled
    flt = FILTERS[name]
    expected = {c.id for c in corpus if flt.admits(c)}
    big = len(corpus) + 5
    assert idx.count(flt) == len(expected)
    assert set(ids(idx.search_text("common", "en", big, flt))) == expected
    assert set(ids(idx.search_vector(unit(np.random.default_rng(2)), big, flt))) == expected


def test_prefilter_returns_k_under_one_percent(opener: Opener) -> None:
    """1% of 2,000 chunks admitted: a post-filter would return ~0 of the top 10."""
    idx = opener()
    rng = np.random.default_rng(13)
    docs: dict[str, list[Chunk]] = {}
    rare: set[str] = set()
    for i in range(2000):
        is_rare = i % 100 == 37
        c = chunk(
            f"d{i}",
            0,
            # The admitted chunks have the WEAKEST text match, so only pre-filtering finds them.
            "needle" if is_rare else "needle needle needle haystack",
            rng=rng,
            access=("group:rare",) if is_rare else ("public",),
        )
        docs[c.document_id] = [c]
        if is_rare:
            rare.add(c.id)
    idx.replace_documents(docs)
    flt = SearchFilter(frozenset({"group:rare"}))
    assert idx.count(flt) == 20
    text = ids(idx.search_text("needle", "en", 10, flt))
    assert len(text) == 10 and set(text) <= rare
    vec = ids(idx.search_vector(unit(rng), 10, flt))
    assert len(vec) == 10 and set(vec) <= rare


# ------------------------------------------------------------------- languages


@pytest.mark.parametrize(
    ("language", "document", "query"),
    [
        ("de", "Die Häuser am See sind alt", "Haus"),
        ("de", "Das Haus ist groß", "häuser"),
        ("en", "The servers were running hot", "server run"),
        ("es", "Las canciones de los niños", "canción"),
        ("fr", "Les maisons et les cafés", "maison café"),
        ("ar", "ذهبت إلى المكتبة", "مكتبة"),
    ],
)
def test_language_aware_matching(opener: Opener, language: str, document: str, query: str) -> None:
    idx = opener()
    idx.replace_documents(
        {
            "hit": [chunk("hit", 0, document, language=language)],
            "miss": [chunk("miss", 0, "unrelated filler text", language=language)],
        }
    )
    assert ids(idx.search_text(query, language, 5, everyone())) == ["hit#0"]


def test_title_and_headings_are_searchable(opener: Opener) -> None:
    idx = opener()
    idx.replace_document(
        "a", [chunk("a", 0, "body only", title="Quarantine", heading_path=("Etcd", "Quota"))]
    )
    assert ids(idx.search_text("quarantine", "en", 5, everyone())) == ["a#0"]
    assert ids(idx.search_text("quota", "en", 5, everyone())) == ["a#0"]
