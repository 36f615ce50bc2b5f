"""The embedded index's HNSW path: recall against exact search, filters, persistence.

Recall is measured on a synthetic clustered set with `exact_max=0`, so only the share rule
decides the path: the unfiltered and 10% searches walk the graph, the 1% one (whose fetch would
cover 80% of the graph) is scored exactly. It must meet issue 16's bar: recall@10 >= 0.98
overall and >= 0.99 at 1% selectivity. The other tests drive every search through the graph
(`exact_share` above 1), as the permission properties must hold on that path too.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovra.domain import Chunk, Principal, SearchFilter
from sovra.index import AnnSettings, EmbeddedIndex
from sovra.index.ann import GRAPH_NAME, AnnGraph

DIM = 32
N_DOCS = 2_500
DOC_CHUNKS = 4
ON = AnnSettings(mode="on", exact_max=0, exact_share=2.0)  # every search walks the graph


def _access(doc: int) -> tuple[str, ...]:
    if doc % 100 == 37:
        return ("group:rare",)  # 1% of the chunks
    if doc % 10 == 3:
        return ("group:tenth",)  # 10% (minus the rare ones that share the residue)
    return ("group:staff",)


def _chunk(doc: int, pos: int, vec: np.ndarray, access: tuple[str, ...]) -> Chunk:
    return Chunk(
        id=f"d{doc}#{pos}",
        document_id=f"d{doc}",
        source="s",
        position=pos,
        text=f"chunk {doc} {pos}",
        title="",
        uri="",
        heading_path=(),
        language="en",
        access=access,
        classification="internal",
        residency="eu",
        embedding=vec.tolist(),
    )


def _clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(64, DIM))
    v = centres[rng.integers(0, 64, n)] + rng.normal(scale=0.6, size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> tuple[dict[str, list[Chunk]], np.ndarray]:
    rng = np.random.default_rng(3)
    vecs = _clustered(N_DOCS * DOC_CHUNKS, rng)
    docs = {
        f"d{d}": [_chunk(d, p, vecs[d * DOC_CHUNKS + p], _access(d)) for p in range(DOC_CHUNKS)]
        for d in range(N_DOCS)
    }
    queries = _clustered(200, rng)
    return docs, queries


def _filter(*groups: str) -> SearchFilter:
    return SearchFilter.for_principal(Principal("u", frozenset(groups)))


FILTERS = {
    "all": _filter("staff", "rare", "tenth"),
    "10%": _filter("tenth"),
    "1%": _filter("rare"),
}


def _recall(
    idx: EmbeddedIndex, exact: EmbeddedIndex, queries: np.ndarray, flt: SearchFilter
) -> float:
    found = 0
    for q in queries:
        want = {h.chunk.id for h in exact.search_vector(q.tolist(), 10, flt)}
        got = idx.search_vector(q.tolist(), 10, flt)
        assert all(flt.admits(h.chunk) for h in got)
        assert len(got) == len(want)
        found += len(want & {h.chunk.id for h in got})
    return found / (10 * len(queries))


@pytest.mark.parametrize("exact_max", [0, 1_000])
def test_recall_meets_the_bar(
    corpus: tuple[dict[str, list[Chunk]], np.ndarray],
    tmp_path: Path,
    exact_max: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs, queries = corpus
    ann = EmbeddedIndex(tmp_path / "ann", DIM, ann=AnnSettings(mode="on", exact_max=exact_max))
    exact = EmbeddedIndex(tmp_path / "exact", DIM, ann=AnnSettings(mode="off"))
    walks = 0
    walk = AnnGraph.search

    def counted(graph: AnnGraph, query: np.ndarray, count: int) -> np.ndarray:
        nonlocal walks
        walks += 1
        keys: np.ndarray = walk(graph, query, count)
        return keys

    monkeypatch.setattr(AnnGraph, "search", counted)
    try:
        ann.replace_documents(docs)
        exact.replace_documents(docs)
        recalls: dict[str, float] = {}
        walked: dict[str, int] = {}
        for name, flt in FILTERS.items():
            walks = 0
            recalls[name] = _recall(ann, exact, queries, flt)
            walked[name] = walks
        assert recalls["all"] >= 0.98, recalls
        assert recalls["10%"] >= 0.98, recalls
        assert recalls["1%"] >= 0.99, recalls
        # The bar is met by the graph where it is used, not by exact search everywhere.
        assert walked["all"] >= len(queries), walked
        assert (walked["10%"] >= len(queries)) == (exact_max == 0), walked  # 1,000 rows admitted
        assert walked["1%"] == 0, walked
        assert ann._ann is not None and len(ann._ann) == N_DOCS * DOC_CHUNKS
    finally:
        ann.close()
        exact.close()


def test_graph_follows_replace_and_delete_and_survives_reopen(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vecs = _clustered(400, rng)
    docs = {
        f"d{d}": [_chunk(d, p, vecs[d * 4 + p], ("public",)) for p in range(4)] for d in range(100)
    }
    everyone = _filter()
    idx = EmbeddedIndex(tmp_path / "i", DIM, ann=ON)
    idx.replace_documents(docs)
    assert idx.search_vector(vecs[0].tolist(), 1, everyone)[0].chunk.id == "d0#0"
    # Replace d0 with new vectors and delete d1: old ids never come back, new ones are found.
    fresh = _clustered(4, rng)
    idx.replace_document("d0", [_chunk(0, p, fresh[p], ("public",)) for p in range(4)])
    idx.delete_documents(["d1"])
    assert idx.search_vector(fresh[2].tolist(), 1, everyone)[0].chunk.id == "d0#2"
    for q in vecs[4:8]:  # d1's old vectors
        assert all(h.chunk.document_id != "d1" for h in idx.search_vector(q.tolist(), 10, everyone))
    idx.close()
    assert (tmp_path / "i" / GRAPH_NAME).exists()
    again = EmbeddedIndex(tmp_path / "i", DIM, ann=ON)
    try:
        graph = again._graph()
        assert graph is not None and len(graph) == 396
        assert again.search_vector(fresh[2].tolist(), 1, everyone)[0].chunk.id == "d0#2"
    finally:
        again.close()


def test_stale_or_damaged_graph_is_reconciled_with_the_database(tmp_path: Path) -> None:
    """A graph saved before later writes (a crash, ann switched off meanwhile) or a damaged
    file never brings back a deleted chunk and never hides a new one."""
    rng = np.random.default_rng(9)
    vecs = _clustered(200, rng)
    everyone = _filter()
    path = tmp_path / "i"
    idx = EmbeddedIndex(path, DIM, ann=ON)
    idx.replace_documents(
        {f"d{d}": [_chunk(d, p, vecs[d * 4 + p], ("public",)) for p in range(4)] for d in range(50)}
    )
    idx.search_vector(vecs[0].tolist(), 1, everyone)
    idx.close()
    stale = (path / GRAPH_NAME).read_bytes()
    # Written without the graph: the saved one is now behind the database.
    off = EmbeddedIndex(path, DIM, ann=AnnSettings(mode="off"))
    off.delete_documents(["d0"])
    new = _clustered(4, rng)
    off.replace_document("d99", [_chunk(99, p, new[p], ("public",)) for p in range(4)])
    off.close()
    for damage in (stale, b"not a usearch file"):
        (path / GRAPH_NAME).write_bytes(damage)
        idx = EmbeddedIndex(path, DIM, ann=ON)
        try:
            hits = idx.search_vector(vecs[0].tolist(), 200, everyone)
            assert {h.chunk.document_id for h in hits}.isdisjoint({"d0"})
            assert len(hits) == 200
            assert idx.search_vector(new[1].tolist(), 1, everyone)[0].chunk.id == "d99#1"
        finally:
            idx.close()


def test_auto_switches_on_at_min_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vecs = _clustered(40, rng)
    idx = EmbeddedIndex(tmp_path / "i", DIM, ann=AnnSettings(mode="auto", min_chunks=20))
    try:
        idx.replace_documents({"d0": [_chunk(0, p, vecs[p], ("public",)) for p in range(10)]})
        assert idx._graph() is None
        idx.replace_documents({"d1": [_chunk(1, p, vecs[10 + p], ("public",)) for p in range(10)]})
        assert idx._graph() is not None
    finally:
        idx.close()


def test_a_writer_past_min_chunks_saves_the_graph_without_a_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vecs = _clustered(40, rng)
    auto = AnnSettings(mode="auto", min_chunks=20)
    small = EmbeddedIndex(tmp_path / "small", DIM, ann=auto)
    small.replace_documents({"d0": [_chunk(0, p, vecs[p], ("public",)) for p in range(10)]})
    small.close()
    assert not (tmp_path / "small" / GRAPH_NAME).exists()  # below the size: no graph
    idx = EmbeddedIndex(tmp_path / "i", DIM, ann=auto)
    idx.replace_documents(
        {
            f"d{d}": [_chunk(d, p, vecs[d * 10 + p], ("public",)) for p in range(10)]
            for d in range(4)
        }
    )
    idx.close()  # a sync's writer: it never searched
    assert (tmp_path / "i" / GRAPH_NAME).exists()
    reader = EmbeddedIndex(tmp_path / "i", DIM, ann=auto, read_only=True)
    try:
        graph = reader._graph()
        assert graph is not None and len(graph) == 40
        assert reader.search_vector(vecs[17].tolist(), 1, _filter())[0].chunk.id == "d1#7"
    finally:
        reader.close()
    unchanged = EmbeddedIndex(tmp_path / "i", DIM, ann=auto)  # a sync that found no change
    unchanged.close()
    assert unchanged._ann is None  # the saved graph was left unread
    grown = EmbeddedIndex(tmp_path / "i", DIM, ann=auto)
    grown.replace_documents({"d4": [_chunk(4, 0, vecs[0], ("public",))]})
    grown.close()
    assert grown._ann is not None and len(grown._ann) == 41


label = st.sampled_from(["public", "group:a", "group:b", "user:u", "user:v"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    accesses=st.lists(st.lists(label, max_size=2), min_size=1, max_size=120),
    groups=st.frozensets(st.sampled_from(["a", "b"])),
    user=st.sampled_from(["u", "v", "w"]),
    k=st.integers(1, 40),
    seed=st.integers(0, 2**31),
)
def test_ann_hits_are_only_admitted_chunks(
    tmp_path_factory: pytest.TempPathFactory,
    accesses: list[list[str]],
    groups: frozenset[str],
    user: str,
    k: int,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    vecs = _clustered(len(accesses), rng)
    chunks = [_chunk(i, 0, vecs[i], tuple(a)) for i, a in enumerate(accesses)]
    flt = SearchFilter.for_principal(Principal(user, groups))
    allowed = {c.id for c in chunks if flt.admits(c)}
    idx = EmbeddedIndex(tmp_path_factory.mktemp("ann"), DIM, ann=ON)
    try:
        idx.replace_documents({c.document_id: [c] for c in chunks})
        for q in _clustered(5, rng):
            hits = idx.search_vector(q.tolist(), k, flt)
            got = {h.chunk.id for h in hits}
            assert got <= allowed, got - allowed
            assert len(hits) == min(k, len(allowed))
    finally:
        idx.close()


def test_leak_suite_passes_with_ann_on() -> None:
    """tests/index/test_index_leak.py's property, every vector search through the graph."""
    from tests.index import test_index_leak as leak

    @contextlib.contextmanager
    def fresh() -> Iterator[EmbeddedIndex]:
        with tempfile.TemporaryDirectory() as tmp:
            idx = EmbeddedIndex(Path(tmp), leak.DIM, ann=ON)
            try:
                yield idx
            finally:
                idx.close()

    leak.test_no_hit_or_count_exceeds_what_admits_allows(fresh=fresh)


@pytest.mark.parametrize("mode", ["off", "on"])
def test_vector_search_after_a_write_never_uses_the_old_mask(tmp_path: Path, mode: str) -> None:
    """Only vector searches between writes: the cached filter mask must follow the write (a
    compaction renumbers slots, so an old mask would admit a secret chunk)."""
    vec = _clustered(1, np.random.default_rng(2))[0]
    public = {f"p{i}": [_chunk(i, 0, vec, ("public",))] for i in range(1100)}
    secret = {f"s{i}": [_chunk(5000 + i, 0, vec, ("group:hr",))] for i in range(100)}
    for d, chunks in secret.items():  # document ids must match the dict keys
        secret[d] = [dataclasses_replace(chunks[0], document_id=d)]
    for d, chunks in public.items():
        public[d] = [dataclasses_replace(chunks[0], document_id=d)]
    idx = EmbeddedIndex(tmp_path / "i", DIM, ann=AnnSettings(mode=mode, exact_max=0))  # type: ignore[arg-type]
    try:
        idx.replace_documents({**public, **secret})
        flt = _filter()
        assert len(idx.search_vector(vec.tolist(), 50, flt)) == 50
        idx.delete_documents(list(public))  # 1,100 dead slots: memory is compacted
        assert idx.search_vector(vec.tolist(), 50, flt) == []
    finally:
        idx.close()


def test_a_graph_built_first_does_not_crash_the_embedder_loaded_after(tmp_path: Path) -> None:
    """usearch links libstdc++ statically: loaded as the process's first pybind11 module, it made
    the next `import onnxruntime` segfault (exit -11), which killed `sovra source sync` on a
    large index. Run in a fresh interpreter, where nothing else has been imported yet."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from sovra.index.ann import AnnGraph, AnnSettings\n"
        "g = AnnGraph(8, AnnSettings(mode='on'))\n"
        "import onnxruntime\n"
        "print('loaded', onnxruntime.__version__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("loaded")
