"""A term repeated in a query weighs more in BM25 (keyword-list queries such as NFCorpus rely
on it: ignoring query term frequency cost 9 nDCG@10 points there)."""

from __future__ import annotations

from pathlib import Path

from sovra.domain import Chunk, SearchFilter
from sovra.index import open_index


def chunk(i: int, text: str) -> Chunk:
    return Chunk(
        id=f"s:d{i}#0",
        document_id=f"s:d{i}",
        source="s",
        position=0,
        text=text,
        title="",
        uri=f"d{i}",
        heading_path=(),
        language="en",
        access=("public",),
        classification="internal",
        residency="eu",
        embedding=[1.0, 0.0],
    )


def test_repeated_query_term_weighs_more(tmp_path: Path) -> None:
    index = open_index(tmp_path / "idx", dimension=2)
    index.replace_documents(
        {
            "s:d0": [chunk(0, "mercury in fish and seafood")],
            "s:d1": [chunk(1, "lead in paint and pipes")],
        }
    )
    flt = SearchFilter(access_tokens=frozenset({"public"}))
    once = index.search_text("mercury lead", "en", 2, flt)
    assert abs(once[0].score - once[1].score) < 1e-6  # symmetric corpus, one mention each
    twice = index.search_text("mercury lead mercury", "en", 2, flt)
    assert twice[0].chunk.document_id == "s:d0"
    assert twice[0].score > twice[1].score * 1.5
    index.close()
