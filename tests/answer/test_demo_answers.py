"""The extractive answers to the demo questions stay what they were before the fast path.

The fixture was recorded on the code that embedded the question twice and every candidate
sentence per request (`python -m tests.support.demo_answers`); sharing the query vector and
scoring stored sentence vectors must not change a word or a citation.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from sovra.index.embedded import EmbeddedIndex
from sovra.models.base import Embedder, Vectors
from sovra.models.embedding import FusedEmbedder, part_for_language
from sovra.workspace import Workspace
from tests.support.answer import make_site, open_workspace
from tests.support.demo_answers import FIXTURE, QUESTIONS, ask_all, ask_one, site_files


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root: Path = tmp_path_factory.mktemp("demo-answers")
    ws = open_workspace(make_site(root, site_files()))
    yield ws
    ws.close()


class CountingEmbedder:
    """One model of the workspace, counting into `seen` how often it embeds each text."""

    def __init__(self, inner: Embedder, seen: Counter[tuple[str, str]]) -> None:
        self.inner, self.seen = inner, seen
        self.name, self.dimension, self.languages = inner.name, inner.dimension, inner.languages

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.seen.update((self.inner.name, t) for t in texts)
        return self.inner.embed(texts)


@contextmanager
def counting(ws: Workspace) -> Iterator[Counter[tuple[str, str]]]:
    """Count (model, text) for every text the workspace's models embed (each part of a
    fused embedder on its own)."""
    real = ws.embedder
    seen: Counter[tuple[str, str]] = Counter()
    if isinstance(real, FusedEmbedder):
        ws._embedder = FusedEmbedder(
            [CountingEmbedder(p, seen) for p in real.parts], routed=real.routed
        )
    else:
        ws._embedder = CountingEmbedder(real, seen)
    try:
        yield seen
    finally:
        ws._embedder = real


# Runs first on the module's workspace: nothing has been filled lazily by a question yet.
def test_sentence_vectors_stored_at_sync(demo: Workspace) -> None:
    index = demo.index
    assert isinstance(index, EmbeddedIndex)
    chunks = list(index.iter_chunks())
    stored = index.sentence_vectors(part_for_language(demo.embedder, "en").name, chunks)
    assert set(stored) == {c.id for c in chunks}  # every chunk, by `sovra source sync`
    with counting(demo) as seen:
        answer = ask_one(demo, QUESTIONS[1])
    assert answer.found
    # Only the question itself is embedded (once per model: the drift log keeps the whole
    # fused vector), every candidate sentence came from the index.
    assert {t for _, t in seen} == {QUESTIONS[1]}
    assert set(seen.values()) == {1}


def test_demo_answers_unchanged(demo: Workspace) -> None:
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert ask_all(demo) == expected


def test_question_embedded_once_per_ask(demo: Workspace) -> None:
    assert demo.config.govern.log_query_vectors  # the drift log reuses the vector too
    for q in QUESTIONS[:3]:
        with counting(demo) as seen:
            answer = ask_one(demo, q)
        assert answer.found
        # Once per model, never twice by one (before: search, answer and drift log each did).
        asked = {model: n for (model, t), n in seen.items() if t == q}
        assert asked and set(asked.values()) == {1}, asked
        # Retrieval's model (the routed first part for English) embeds it for the answer too.
        assert part_for_language(demo.embedder, "en").name in asked


def test_index_from_before_sentence_vectors_still_answers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root: Path = tmp_path_factory.mktemp("old-index")
    cfg = make_site(root, site_files())
    # An index written before sentence vectors existed has no such table at all.
    db = sqlite3.connect(root / "data" / "index" / "index.sqlite")
    with db:
        db.execute("DROP TABLE sentences")
    db.close()
    ws = open_workspace(cfg)
    try:
        expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
        assert ask_all(ws) == expected
        index = ws.index
        assert isinstance(index, EmbeddedIndex)
        kept = index._db.execute("SELECT count(*) FROM sentences").fetchone()[0]
        assert kept > 0  # filled lazily by the questions
    finally:
        ws.close()
