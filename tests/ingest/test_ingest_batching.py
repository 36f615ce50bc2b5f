"""Ingestion's batching changes cost, never results: length-sorted batches return each text's
vector in the caller's order, and embedding each distinct sentence once stores the very spans
and vectors that embedding every sentence did."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sovra.answer.extractive import fill_sentence_vectors
from sovra.answer.sentences import clean_inline, sentence_spans
from sovra.domain import Chunk
from sovra.index.embedded import EmbeddedIndex
from sovra.models.base import Vectors
from sovra.models.embedding import length_sorted
from tests.support.index import DIM, chunk
from tests.support.ingest import FakeEmbedder


def _one_by_one(texts: Sequence[str]) -> Vectors:
    return FakeEmbedder(DIM).embed(list(texts))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=50), st.integers(1, 9))
def test_length_sorted_rows_come_back_in_the_callers_order(texts: list[str], size: int) -> None:
    batches: list[list[str]] = []

    def encode(batch: list[str]) -> Vectors:
        batches.append(batch)
        return _one_by_one(batch)

    got = length_sorted(texts, size, DIM, encode)
    assert got.shape == (len(texts), DIM)
    np.testing.assert_array_equal(got, _one_by_one(texts).reshape(len(texts), DIM))
    # The point of sorting: each batch holds texts no longer than the batch before it.
    assert all(len(b) <= size for b in batches)
    longest = [max(map(len, b)) for b in batches]
    shortest = [min(map(len, b)) for b in batches]
    assert all(lo >= hi for lo, hi in zip(shortest, longest[1:], strict=False))


class Counting(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__(DIM)
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.embedded.extend(texts)
        return super().embed(texts)


SHARED = "The etcd database quota is low and the cluster refuses writes. "
TEXTS = [
    SHARED + "Compact the keyspace and defragment each member.",
    "Defragment each member in turn. " + SHARED,
    "No sentence here",
    SHARED + SHARED + "Then raise the quota only if the disk allows it.",
]


def test_each_distinct_sentence_is_embedded_once_and_stored_per_chunk(tmp_path: Path) -> None:
    chunks: list[Chunk] = [chunk(f"d{i}", 0, text) for i, text in enumerate(TEXTS)]
    idx = EmbeddedIndex(tmp_path / "idx", DIM)
    idx.replace_documents({c.document_id: [c] for c in chunks})
    emb = Counting()
    assert fill_sentence_vectors(idx, emb, chunks, batch=2) == len(chunks)

    cut = [sentence_spans(c.text) for c in chunks]
    every = [s.text for found, _ in cut for s in found]
    assert len(emb.embedded) == len(set(emb.embedded)) == len(set(every)) < len(every)
    stored = idx.sentence_vectors("fake", chunks)
    for c, (found, spans) in zip(chunks, cut, strict=True):
        got_spans, got_vecs = stored[c.id]
        np.testing.assert_array_equal(got_spans, spans)
        assert [clean_inline(c.text[a:b]) for a, b in got_spans.tolist()] == [s.text for s in found]
        if found:  # the vectors embedding every sentence on its own gives
            np.testing.assert_array_equal(got_vecs, _one_by_one([s.text for s in found]))
        else:
            assert got_vecs.size == 0
    idx.close()
