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
from pathlib import Path

import pytest

from sovra.index.embedded import EmbeddedIndex
from sovra.models.base import Embedder, Vectors
from sovra.workspace import Workspace
from tests.support.answer import make_site, open_workspace
from tests.support.demo_answers import FIXTURE, QUESTIONS, ask_all, ask_one, site_files


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root: Path = tmp_path_factory.mktemp("demo-answers")
    ws = open_workspace(make_site(root, site_files()))
    yield ws
    ws.close()


def test_demo_answers_unchanged(demo: Workspace) -> None:
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert ask_all(demo) == expected


class CountingEmbedder:
    """The workspace's model, counting how often each text is embedded."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seen: Counter[str] = Counter()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def languages(self) -> frozenset[str]:
        return self.inner.languages

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.seen.update(texts)
        return self.inner.embed(texts)


def test_question_embedded_once_per_ask(demo: Workspace) -> None:
    counting = CountingEmbedder(demo.embedder)
    demo._embedder = counting
    try:
        assert demo.config.govern.log_query_vectors  # the drift log reuses the vector too
        for q in QUESTIONS[:3]:
            answer = ask_one(demo, q)
            assert answer.found
            assert counting.seen[q] == 1, (q, counting.seen[q])
    finally:
        demo._embedder = counting.inner


def test_stored_sentence_vectors_are_reused(demo: Workspace) -> None:
    question = QUESTIONS[0]
    ask_one(demo, question)  # fills the store for these chunks, if nothing did before
    counting = CountingEmbedder(demo.embedder)
    demo._embedder = counting
    try:
        again = ask_one(demo, question)
    finally:
        demo._embedder = counting.inner
    assert again.found
    # Only the question itself: every candidate sentence came from the index.
    assert dict(counting.seen) == {question: 1}


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
