"""An index from before this version's embedding or analysis is refused with the fix, never used."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sovra.index import EmbeddedIndex, IndexError_
from tests.support.index import DIM, chunk


def test_minilm_only_index_opened_with_the_fused_model_names_the_rebuild(tmp_path: Path) -> None:
    with EmbeddedIndex(tmp_path, 384):
        pass
    with pytest.raises(IndexError_, match=r"384-dimensional.*sovra source sync --all"):
        EmbeddedIndex(tmp_path, 384 + 512)


def test_index_analysed_by_an_older_analyser_is_refused(tmp_path: Path) -> None:
    with EmbeddedIndex(tmp_path, DIM) as idx:
        idx.replace_document("s:d1", [chunk("s:d1", 0, "背景调查政策", language="zh")])
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.execute("DELETE FROM meta WHERE key = 'analysis'")  # as written before the analyser change
    db.commit()
    db.close()
    with pytest.raises(IndexError_, match=r"analysis version 1.*sovra source sync --all"):
        EmbeddedIndex(tmp_path, DIM)
