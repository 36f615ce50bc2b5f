"""The extractive answers to the demo questions stay what they were before the fast path.

The fixture was recorded on the code that embedded the question twice and every candidate
sentence per request (`python -m tests.support.demo_answers`); sharing the query vector and
scoring stored sentence vectors must not change a word or a citation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

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
