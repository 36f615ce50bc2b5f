"""Search results per document: grouping and ranking, plain-text snippets, highlighting by the
index's analyser (stems, any script), and markup that stays text."""

from __future__ import annotations

from jinja2 import Environment

from sovra.domain import Chunk
from sovra.search import SearchHit, SearchResult
from sovra.search.grouping import group_by_document, grouped_dict, plain_text, query_terms, snippet


def chunk(doc: str, i: int, text: str, language: str = "en") -> Chunk:
    return Chunk(
        id=f"{doc}#{i}",
        document_id=doc,
        source="handbook",
        position=i,
        text=text,
        title=f"Title of {doc}",
        uri=f"file:///{doc}",
        heading_path=("Top", f"Part {i}"),
        language=language,
        access=("group:all",),
        classification="internal",
        residency="eu",
    )


def result(query: str, hits: list[tuple[str, int, float]], text: str = "vpn text") -> SearchResult:
    return SearchResult(
        query=query,
        language="en",
        mode="hybrid",
        vector_weight=0.5,
        hits=[
            SearchHit(chunk(doc, i, text), score, rank)
            for rank, (doc, i, score) in enumerate(hits, start=1)
        ],
    )


def test_one_entry_per_document_with_best_three_passages() -> None:
    hits = [("a", i, 1.0 - i / 100) for i in range(13)] + [("b", 0, 0.5)]
    docs = group_by_document(result("vpn", hits), k=10)
    assert [d.document_id for d in docs] == ["a", "b"]
    a = docs[0]
    assert [p.hit.chunk.id for p in a.passages] == ["a#0", "a#1", "a#2"]
    assert a.more == 10 and docs[1].more == 0
    assert [d.rank for d in docs] == [1, 2]


def test_passages_in_score_order_even_when_hits_are_not() -> None:
    docs = group_by_document(result("vpn", [("a", 1, 0.2), ("a", 2, 0.9)]), k=5)
    assert [p.hit.chunk.id for p in docs[0].passages] == ["a#2", "a#1"]


def test_several_passages_break_a_tie_but_never_beat_a_clearly_better_one() -> None:
    # b's best passage equals a's, but b has two matching passages: b ranks first.
    tie = group_by_document(result("x", [("a", 0, 0.5), ("b", 0, 0.5), ("b", 1, 0.3)]), k=5)
    assert [d.document_id for d in tie] == ["b", "a"]
    # a is clearly better: ten weak passages of b do not overtake it.
    weak = [("b", i, 0.3) for i in range(10)]
    clear = group_by_document(result("x", [("a", 0, 0.5), *weak]), k=5)
    assert [d.document_id for d in clear] == ["a", "b"]
    assert clear[1].score <= 0.3 * 1.15 + 1e-9


def test_k_limits_documents() -> None:
    hits = [(f"d{i}", 0, 1.0 - i / 10) for i in range(8)]
    assert len(group_by_document(result("x", hits), k=3)) == 3


def test_plain_text_drops_image_syntax_link_urls_and_heading_hashes() -> None:
    md = (
        "### Architecture ![AWS VPN architecture](https://example.com/vpn.png)\n\n"
        "See the [VPN guide](https://example.com/guide) and `openvpn --help`.\n\n"
        "- first item\n- second item\n"
    )
    text = plain_text(md)
    assert text == ("Architecture See the VPN guide and openvpn --help. first item second item")
    for gone in ("###", "![", "](", "https://", "vpn.png"):
        assert gone not in text


def test_stems_are_highlighted() -> None:
    terms = query_terms("vpn not working", "en")
    segs = snippet("The VPN works after it has been reconnected; the tunnel worked.", terms, "en")
    assert [s.text for s in segs if s.marked] == ["VPN", "works", "worked"]
    assert "".join(s.text for s in segs).startswith("The VPN works")


def test_other_scripts_are_highlighted() -> None:
    ru = snippet("Политика проверки биографических данных", query_terms("проверка", "ru"), "ru")
    assert [s.text for s in ru if s.marked] == ["проверки"]
    zh = snippet("背景调查政策 适用于所有员工", query_terms("背景调查", "zh"), "zh")
    assert any(s.marked and "背景" in s.text for s in zh)


def test_snippet_window_starts_near_the_first_match() -> None:
    text = "filler " * 200 + "the quota alarm fires"
    segs = snippet(text, query_terms("quota", "en"), "en", width=80)
    joined = "".join(s.text for s in segs)
    assert joined.startswith("…") and "quota" in joined and len(joined) <= 90
    assert [s.text for s in segs if s.marked] == ["quota"]


def test_markup_in_a_chunk_reaches_the_page_as_text() -> None:
    md = "Reset the VPN <script>alert('x')</script>\n\n<script>steal()</script>\n"
    res = result("vpn", [("a", 0, 1.0)], text=md)
    docs = group_by_document(res, k=5)
    env = Environment(autoescape=True)
    tpl = env.from_string(
        "{% for s in segs %}{% if s.marked %}<mark>{{ s.text }}</mark>"
        "{% else %}{{ s.text }}{% endif %}{% endfor %}"
    )
    html = tpl.render(segs=docs[0].passages[0].snippet)
    assert "<script>" not in html and "<mark>VPN</mark>" in html
    shape = grouped_dict(res, docs)
    assert shape["group_by"] == "document"
    (doc,) = shape["documents"]
    assert doc["passages"][0]["highlights"][1] == {"text": "VPN", "marked": True}


def test_headings_are_plain_text() -> None:
    c = chunk("a", 0, "vpn")
    c = Chunk(**{**c.__dict__, "heading_path": ("Top", "[People & Talent](people/index.md)")})
    res = SearchResult("vpn", "en", "hybrid", 0.5, [SearchHit(c, 1.0, 1)])
    (doc,) = group_by_document(res, k=1)
    assert doc.passages[0].heading == ("Top", "People & Talent")
