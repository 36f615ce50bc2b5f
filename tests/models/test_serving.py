"""The query-time wrappers: the micro-batcher hands every concurrent caller its own vector, the
query cache never serves one model's vector for another, and bad `[embedding]` values are
refused naming the field."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sovra.config import ConfigError, load_config
from sovra.models.base import Vectors
from sovra.models.embedding import FusedEmbedder
from sovra.models.serving import MicroBatcher, QueryCache, ServingEmbedder, normalise_query


class Hashing:
    """A deterministic embedder: each text's vector comes from its sha256 (distinct per text and
    per model `salt`), and every call records the batch it was given."""

    def __init__(self, salt: str = "a", dim: int = 8) -> None:
        self.name = self.identity = f"hash-{salt}"
        self.salt, self.dimension, self.languages = salt, dim, frozenset({"en"})
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def vector(self, text: str) -> Vectors:
        # Hypothesis generates lone surrogates; this stand-in must hash them, not crash on them.
        raw = hashlib.sha256((self.salt + "\0" + text).encode("utf-8", "surrogatepass")).digest()[
            : self.dimension
        ]
        v = np.frombuffer(raw, dtype=np.uint8).astype(np.float32) + 1.0
        return v / np.linalg.norm(v)

    def embed(self, texts: Sequence[str]) -> Vectors:
        with self._lock:
            self.calls.append(list(texts))
        return np.vstack([self.vector(t) for t in texts]).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(
    texts=st.lists(st.text(max_size=40), min_size=1, max_size=24),
    window=st.sampled_from([0.5, 3.0]),
)
def test_micro_batcher_gives_each_concurrent_caller_its_own_vector(
    texts: list[str], window: float
) -> None:
    inner = Hashing()
    batcher = MicroBatcher(inner.embed, window_s=window / 1000, max_batch=5)
    start = threading.Barrier(len(texts))

    def call(text: str) -> Vectors:
        start.wait()
        return batcher.submit(text)

    with ThreadPoolExecutor(len(texts)) as pool:
        got = list(pool.map(call, texts))
    for text, vec in zip(texts, got, strict=True):
        assert np.array_equal(vec, inner.vector(text))
    # Every text was encoded exactly once, never more than max_batch at a time.
    assert sorted(t for c in inner.calls for t in c) == sorted(texts)
    assert max(len(c) for c in inner.calls) <= 5


def test_micro_batcher_collects_concurrent_queries_into_one_batch() -> None:
    inner = Hashing()

    def forward_pass(texts: list[str]) -> Vectors:
        time.sleep(0.05)  # a real encode takes time; callers arriving meanwhile queue
        return inner.embed(texts)

    batcher = MicroBatcher(forward_pass, window_s=0.2, max_batch=8)
    start = threading.Barrier(8)

    def call(i: int) -> Vectors:
        start.wait()
        return batcher.submit(f"q{i}")

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(call, range(8)))
    for i, vec in enumerate(got):
        assert np.array_equal(vec, inner.vector(f"q{i}"))
    assert len(inner.calls) < 8  # batched, not one forward pass per caller
    assert max(len(c) for c in inner.calls) > 1


def test_a_caller_nobody_can_join_does_not_wait_the_window() -> None:
    inner = Hashing()
    # A window no request could afford: a lone caller that waited it would be visible.
    batcher = MicroBatcher(inner.embed, window_s=30.0, max_batch=8)
    for i in range(5):  # one at a time, as behind a worker's single model slot
        assert np.array_equal(batcher.submit(f"q{i}"), inner.vector(f"q{i}"))
    assert batcher.waits == 0
    assert inner.calls == [[f"q{i}"] for i in range(5)]


def test_callers_that_queue_during_an_encode_make_the_next_leader_wait() -> None:
    release = threading.Event()
    inner = Hashing()

    def slow(texts: list[str]) -> Vectors:
        if texts == ["first"]:
            release.wait(5)  # the others queue while this round encodes
        return inner.embed(texts)

    batcher = MicroBatcher(slow, window_s=0.05, max_batch=8)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.submit, "first")
        while not batcher._leading:
            time.sleep(0.001)
        rest = [pool.submit(batcher.submit, f"q{i}") for i in range(3)]
        while len(batcher._queue) < 3:
            time.sleep(0.001)
        release.set()
        first.result(), [f.result() for f in rest]
    assert batcher.waits >= 1
    assert [len(c) for c in inner.calls] == [1, 3]  # the queued three went as one batch


def test_micro_batcher_passes_the_error_to_every_caller() -> None:
    def broken(texts: list[str]) -> Vectors:
        raise RuntimeError("model crashed")

    batcher = MicroBatcher(broken, window_s=0.05, max_batch=4)
    start = threading.Barrier(4)

    def call(i: int) -> str:
        start.wait()
        try:
            batcher.submit(str(i))
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(call, range(4))) == ["model crashed"] * 4
    # The batcher still works after a failure.
    ok = MicroBatcher(Hashing().embed, window_s=0.0)
    assert ok.submit("x").shape == (8,)


# No whitespace: texts that normalise alike share an entry by design (tested below).
_WORDS = st.text(alphabet=st.characters(blacklist_categories=("Z", "Cc")), max_size=30)


@settings(max_examples=50, deadline=None)
@given(texts=st.lists(_WORDS, min_size=1, max_size=10))
def test_cache_never_crosses_models(texts: list[str]) -> None:
    a, b = Hashing("a"), Hashing("b")
    cache = QueryCache(1000)
    wa, wb = ServingEmbedder(a), ServingEmbedder(b)
    wa.cache = wb.cache = cache  # one shared cache: the key alone must keep them apart
    for t in texts:
        assert np.array_equal(wa.embed([t])[0], a.vector(t))
        assert np.array_equal(wb.embed([t])[0], b.vector(t))
        assert np.array_equal(wa.embed([t])[0], a.vector(t))  # now from the cache


def test_cache_hits_on_normalised_text_and_evicts_least_recent() -> None:
    inner = Hashing()
    e = ServingEmbedder(inner, cache_size=2)
    e.embed(["reset  my\tpassword "])
    e.embed(["reset my password"])
    assert len(inner.calls) == 1 and e.cache.hits == 1
    e.embed(["b"])
    e.embed(["c"])  # evicts "reset my password"
    e.embed(["reset my password"])
    assert len(inner.calls) == 4
    # Case is kept: cased models give different vectors for it.
    assert normalise_query("VPN") != normalise_query("vpn")


def test_cached_vector_cannot_be_changed_by_a_caller() -> None:
    e = ServingEmbedder(Hashing())
    first = e.embed(["q"])
    first[0, :] = 0.0
    assert np.linalg.norm(e.embed(["q"])[0]) == pytest.approx(1.0)


def test_documents_bypass_cache_and_batcher() -> None:
    inner = Hashing()
    e = ServingEmbedder(inner, batch_window_ms=5.0)
    e.embed(["one", "two", "three"])
    assert inner.calls == [["one", "two", "three"]] and len(e.cache) == 0


def test_fused_parts_keep_their_own_cache_entries() -> None:
    a, b = Hashing("a", 4), Hashing("b", 6)
    fused = FusedEmbedder([ServingEmbedder(a), ServingEmbedder(b)])
    channels = fused.channels
    qa = fused.embed_query("hello", channels[0])
    qb = fused.embed_query("hello", channels[1])
    assert np.array_equal(qa[:4], a.vector("hello")) and not qa[4:].any()
    assert np.array_equal(qb[4:], b.vector("hello")) and not qb[:4].any()


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('runtime = "tensorrt"', "embedding.runtime"),
        ('quantize = "int4"', "embedding.quantize"),
        ("query_cache = -1", "embedding.query_cache"),
        ("query_batch_ms = 100", "embedding.query_batch_ms"),
        ("threads = 0", "embedding.threads"),
    ],
)
def test_bad_embedding_values_name_the_field(tmp_path: object, line: str, field: str) -> None:
    from pathlib import Path

    toml = Path(str(tmp_path)) / "sovra.toml"
    toml.write_text(f"[embedding]\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(toml)
