"""The extractive answers to the demo questions stay what they were before the fast path.

The fixture was recorded on the code that embedded the question twice and every candidate
sentence per request (`python -m tests.support.demo_answers`); sharing the query vector and
scoring stored sentence vectors must not change a word or a citation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovra.workspace import Workspace
from tests.support.answer import make_site, open_workspace
from tests.support.demo_answers import FIXTURE, ask_all, site_files


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root: Path = tmp_path_factory.mktemp("demo-answers")
    ws = open_workspace(make_site(root, site_files()))
    yield ws
    ws.close()


def test_demo_answers_unchanged(demo: Workspace) -> None:
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert ask_all(demo) == expected
