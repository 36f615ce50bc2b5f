"""Sentence spans and vectors stored with a chunk in the embedded index.

The spans must give back exactly the sentences the extractive answerer quotes, whatever the
script or whitespace; the stored rows must read back bit for bit, vanish with their document,
and never be served for a chunk whose text changed under the same id.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovra.answer.sentences import clean_inline, sentence_spans, split_sentences
from sovra.index.embedded import EmbeddedIndex
from tests.support.index import DIM, chunk

WORDS = st.sampled_from(
    [
        "The",
        "node",
        "evicts",
        "pods.",
        "Prüfen",
        "Sie",
        "den",
        "Knoten.",
        "¿Qué",
        "hacer?",
        "الخادم",
        "متوقف؟",
        "服务器",
        "停止了。",
        "Сервер",
        "упал.",
        "e.g.",
        "1.",
        "-",
        "`oc`",
        "[link](http://x)",
        "**bold**",
        "#",
        "##",
        "Heading",
        "|",
        "a|b",
        "```",
        "नोड",
        "रुका।",
    ]
)
SEPARATORS = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u3000", " \n ", "\r\n"])
TEXTS = st.lists(st.tuples(WORDS, SEPARATORS), max_size=60).map(
    lambda parts: "".join(w + s for w, s in parts)
)


@given(TEXTS)
@settings(max_examples=300, deadline=None)
def test_spans_reproduce_the_quoted_sentences(text: str) -> None:
    found, spans = sentence_spans(text)
    assert [s.text for s in found] == [s.text for s in split_sentences(text)]
    assert spans.shape == (len(found), 2)
    previous_end = 0
    for (start, end), sentence in zip(spans.tolist(), found, strict=True):
        assert previous_end <= start <= end <= len(text)
        # The stored offsets cut exactly the quoted sentence out of the chunk's own text.
        assert clean_inline(text[start:end]) == sentence.text
        previous_end = end


@given(TEXTS)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_stored_spans_and_vectors_read_back_exactly(tmp_path: Path, text: str) -> None:
    rng = np.random.default_rng(7)
    c = dataclasses.replace(chunk("doc", 0, rng=rng), text=text or "x")
    found, spans = sentence_spans(c.text)
    vectors = rng.standard_normal((len(found), DIM)).astype(np.float32)
    with EmbeddedIndex(tmp_path / f"i{abs(hash(text))}", DIM) as index:
        index.replace_document(c.document_id, [c])
        index.store_sentence_vectors("m", [(c, spans, vectors)])
        got_spans, got_vectors = index.sentence_vectors("m", [c])[c.id]
    assert np.array_equal(got_spans, spans)
    assert np.array_equal(got_vectors.reshape(vectors.shape), vectors)
    assert [clean_inline(c.text[a:b]) for a, b in got_spans.tolist()] == [s.text for s in found]


def test_sentences_follow_their_chunk(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    c = dataclasses.replace(chunk("doc", 0, rng=rng), text="The node evicts pods now. It stops.")
    found, spans = sentence_spans(c.text)
    vectors = np.ones((len(found), DIM), dtype=np.float32)
    with EmbeddedIndex(tmp_path, DIM) as index:
        index.replace_document("doc", [c])
        index.store_sentence_vectors("m", [(c, spans, vectors)])
        assert c.id in index.sentence_vectors("m", [c])
        assert index.sentence_vectors("other-model", [c]) == {}
        # Same id, new text: the old vectors are not served.
        assert index.sentence_vectors("m", [dataclasses.replace(c, text="New text here.")]) == {}
        index.replace_document("doc", [c])  # a re-sync drops them with the document
        assert index.sentence_vectors("m", [c]) == {}
        index.store_sentence_vectors("m", [(c, spans, vectors)])
        index.delete_documents(["doc"])
        assert index.sentence_vectors("m", [c]) == {}
