"""`sovra eval retrieval --documents`: document-level nDCG of the grouped ranking search serves
against hybrid's first hit per document, on documents of several passages."""

from __future__ import annotations

from pathlib import Path

from sovra.evals.collections import Collection
from sovra.evals.retrieval_eval import bonus_key, evaluate_documents, passage_set
from sovra.search.grouping import BONUS_CAP, SEVERAL_BONUS
from tests.support.ingest import FakeEmbedder


def articles() -> Collection:
    """Article 0: three paragraphs about the VPN tunnel; article 1: one that mentions it once
    among other words; article 2: unrelated. XQuAD-shaped (paragraph ids, article map)."""
    docs = {
        "0-0": ("", "The vpn tunnel drops when the laptop sleeps."),
        "0-1": ("", "Restart the vpn tunnel client after a network change."),
        "0-2": ("", "Logs of the vpn tunnel are in the client folder."),
        "1-0": ("", "Office printers, parking, lunch, vpn tunnel, badges and the kitchen rota."),
        "2-0": ("", "Holiday requests go to your manager two weeks ahead."),
    }
    return Collection(
        "tiny",
        "en",
        "en",
        docs,
        {"q": "vpn tunnel", "h": "holiday requests"},
        {"q": {"0-1": 1}, "h": {"2-0": 1}},
        {pid: f"article-{pid.split('-')[0]}" for pid in docs},
    )


def test_paragraphs_become_passages_of_their_article() -> None:
    ps = passage_set(articles())
    assert ps.construction == "paragraphs by article"
    assert {c.document_id for c in ps.chunks} == {
        "eval:article-0",
        "eval:article-1",
        "eval:article-2",
    }
    assert [c.position for c in ps.chunks if c.uri == "article-0"] == [0, 1, 2]
    # A question's relevant document is the article of its paragraph.
    assert ps.qrels == {"q": {"article-0": 1}, "h": {"article-2": 1}}


def test_chunker_splits_long_documents_and_keeps_judgements() -> None:
    long = " ".join(f"Sentence {i} about wing flutter at supersonic speed." for i in range(120))
    c = Collection("long", "en", "en", {"a": ("Flutter", long), "b": ("", "Short.")}, {}, {})
    ps = passage_set(c)
    assert ps.construction == "sovra chunker"
    assert sum(1 for ch in ps.chunks if ch.uri == "a") > 1
    assert sum(1 for ch in ps.chunks if ch.uri == "b") == 1


def test_grouping_ranks_the_document_of_several_passages(tmp_path: Path) -> None:
    report = evaluate_documents(
        passage_set(articles()),
        FakeEmbedder(),
        bonuses=[(0.0, 0.0), (0.05, 0.15)],
        cache_dir=tmp_path,
    )
    assert (report.documents, report.passages, report.multi_passage_documents) == (3, 5, 1)
    assert report.queries == 2
    # With no bonus, grouping is exactly the first hit per document.
    assert report.grouped[bonus_key(0.0, 0.0)] == report.first_hit
    # The shipped default is no bonus (measured: it cost XQuAD articles nDCG).
    assert (SEVERAL_BONUS, BONUS_CAP) == (0.0, 0.06)
    # A bonus puts the article with three matching passages first.
    assert report.grouped[bonus_key(0.05, 0.15)] == 1.0
