"""Index engine benchmark: embedded (SQLite + numpy) vs LanceDB on 100k real-text chunks.

Run from the repo root:  .venv/bin/python -m bench.bench_index [--n 100000] [--queries 500]

Corpus: see bench/index_corpus.py (real pieces from ../shared/data embedded once with the
default model and cached under bench/cache/, tiled to --n with text and vector variation).
Governance labels: documents of 4 chunks; 1% of documents are readable only by `group:rare`,
the rest by one of public / group:staff / group:sre. Two filters are timed: `broad` (a
principal holding public, staff and sre: admits 99%) and `1%` (group:rare only).

Queries: real queries (Cranfield, NFCorpus, XQuAD en/de/es questions, in their language),
embedded once with the same model and cached.

Each backend runs in its own subprocess, one after the other, so peak RSS is its own.
Measured per backend: build time (bulk replace_documents, batches of 1,000 documents, plus
LanceDB's FTS index build), open time (close, reopen), k=10 latency p50/p99 over the queries
for text, vector and hybrid (= one text + one vector search back to back, timed together;
fusion is the caller's and costs microseconds), per filter; recall@10 of the vector channel
against exact filtered brute force (numpy over the admitted rows); the share of hits the
filter admits (must be 1.0); peak RSS. Raw results go to bench/results/index.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.index_corpus import CACHE, DATA, Piece, model_dir, real_embeddings, real_pieces, tiled

RESULTS = Path(__file__).resolve().parent / "results" / "index.json"
DOC_CHUNKS = 4
BROAD = frozenset({"public", "group:staff", "group:sre"})
RARE = frozenset({"group:rare"})


def doc_access(doc: int) -> tuple[str, ...]:
    if doc % 100 == 37:
        return ("group:rare",)
    return (("public",), ("group:staff",), ("group:sre",))[doc % 3]


def real_queries(limit: int) -> list[tuple[str, str]]:
    """(text, language) of real queries from the eval collections, interleaved."""
    import re

    cran = re.findall(
        r"<title>\s*(.*?)\s*</title>", (DATA / "eval/cranfield/cran.qry").read_text(), re.S
    )
    nf = [
        line.split("\t", 1)[1][:200]
        for line in (DATA / "eval/nfcorpus/test.titles.queries").read_text().splitlines()
        if "\t" in line
    ]
    xq: dict[str, list[str]] = {}
    for lang in ("en", "de", "es"):
        data = json.loads((DATA / f"eval/xquad/xquad.{lang}.json").read_text(encoding="utf-8"))
        xq[lang] = [
            qa["question"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]
        ]
    pools = [
        [(" ".join(q.split()), "en") for q in cran],
        [(q, "en") for q in nf],
        [(q, "en") for q in xq["en"]],
        [(q, "de") for q in xq["de"]],
        [(q, "es") for q in xq["es"]],
    ]
    out: list[tuple[str, str]] = []
    i = 0
    while len(out) < limit:
        pool = pools[i % len(pools)]
        out.append(pool[(i // len(pools)) % len(pool)])
        i += 1
    return out


def query_vectors(queries: list[tuple[str, str]]) -> np.ndarray:
    import hashlib

    if FAKE:
        return _fake(len(queries))
    digest = hashlib.sha256("\x00".join(q for q, _ in queries).encode()).hexdigest()[:16]
    path = CACHE / f"queries-{len(queries)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu")
    vecs = model.encode([q for q, _ in queries], normalize_embeddings=True, batch_size=64)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs.astype(np.float32))
    return vecs.astype(np.float32)


FAKE = bool(os.environ.get("SOVRA_BENCH_FAKE_VECTORS"))
"""Harness smoke test only: random vectors instead of the model (figures are meaningless)."""


def _fake(n: int) -> np.ndarray:
    v = np.random.default_rng(1).normal(size=(n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def corpus(n: int) -> tuple[list[Piece], np.ndarray]:
    pieces = real_pieces()
    vecs = _fake(len(pieces)) if FAKE else real_embeddings(pieces)
    return tiled(pieces, vecs, n)


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000.0, q)), 2)


def run_backend(backend: str, n: int, n_queries: int, workdir: Path) -> dict[str, Any]:
    from sovra.domain import Chunk, SearchFilter
    from sovra.index import open_index

    pieces, vecs = corpus(n)
    queries = real_queries(n_queries)
    qvecs = query_vectors(queries)
    dim = vecs.shape[1]
    path = workdir / backend
    shutil.rmtree(path, ignore_errors=True)

    access = [doc_access(i // DOC_CHUNKS) for i in range(n)]

    def chunk(i: int) -> Chunk:
        return bench_chunk(pieces, vecs, access, i)

    t0 = time.perf_counter()
    idx = open_index(path, dimension=dim, backend=backend)
    batch: dict[str, list[Chunk]] = {}
    for i in range(n):
        c = chunk(i)
        batch.setdefault(c.document_id, []).append(c)
        if len(batch) >= 1000 and i % DOC_CHUNKS == DOC_CHUNKS - 1:
            idx.replace_documents(batch)
            batch = {}
    if batch:
        idx.replace_documents(batch)
    optimize = getattr(idx, "optimize", None)
    if optimize is not None:
        optimize()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx.close()  # the embedded engine writes its memory snapshot here
    close_s = time.perf_counter() - t0

    fresh = fresh_open(backend, path, dim)
    rebuild = None
    snapshot = path / "memory.npz"
    if snapshot.exists():
        snapshot.unlink()
        rebuild = fresh_open(backend, path, dim)  # open without the snapshot: from SQLite
    t0 = time.perf_counter()
    idx = open_index(path, dimension=dim, backend=backend)
    open_s = time.perf_counter() - t0
    assert idx.count() == n, idx.count()

    filters = {"broad": SearchFilter(BROAD), "1%": SearchFilter(RARE)}
    admitted = {
        name: np.asarray([not flt.access_tokens.isdisjoint(a) for a in access])
        for name, flt in filters.items()
    }
    out: dict[str, Any] = {
        "backend": backend,
        "chunks": n,
        "build_s": round(build_s, 1),
        "open_s": round(open_s, 2),
        "close_s": round(close_s, 2),
        "fresh_process": fresh,
        "fresh_process_without_snapshot": rebuild,
        "filters": {},
    }
    for q, lang in queries[:20]:  # warm-up
        idx.search_text(q, lang, 10, filters["broad"])
    # The embedded engine builds its HNSW graph on the first search that needs it (from
    # `ann_min_chunks`): timed apart, so the percentiles below are of a warm index.
    t0 = time.perf_counter()
    idx.search_vector(qvecs[0], 10, filters["broad"])
    out["first_vector_search_s"] = round(time.perf_counter() - t0, 2)
    for name, flt in filters.items():
        out["filters"][name] = measure_filter(
            idx, flt, admitted[name], pieces, vecs, queries, qvecs
        )
    idx.close()
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    out["disk_mb"] = round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)
    shutil.rmtree(path, ignore_errors=True)
    return out


def bench_chunk(
    pieces: list[Piece], vecs: np.ndarray, access: list[tuple[str, ...]], i: int
) -> Any:
    """Chunk i of the tiled corpus: documents of DOC_CHUNKS chunks, labels from `access`."""
    from sovra.domain import Chunk

    p = pieces[i]
    doc = f"{p.source}:{i // DOC_CHUNKS}"
    return Chunk(
        id=f"{doc}#{i % DOC_CHUNKS}",
        document_id=doc,
        source=p.source,
        position=i % DOC_CHUNKS,
        text=p.text,
        title=p.title,
        uri="",
        heading_path=(),
        language=p.language,
        access=access[i],
        classification="internal",
        residency="eu",
        embedding=vecs[i],
    )


def exact_ids(pieces: list[Piece], rows: np.ndarray, sub: np.ndarray, qv: np.ndarray) -> set[str]:
    """Chunk ids of the exact top 10 of `qv` among the admitted `rows` (`sub` = their vectors)."""
    return {
        f"{pieces[r].source}:{r // DOC_CHUNKS}#{r % DOC_CHUNKS}"
        for r in rows[np.argsort(-(sub @ qv))[:10]]
    }


def measure_filter(
    idx: Any,
    flt: Any,
    mask: np.ndarray,
    pieces: list[Piece],
    vecs: np.ndarray,
    queries: list[tuple[str, str]],
    qvecs: np.ndarray,
) -> dict[str, Any]:
    """Latency p50/p99 (text, vector, hybrid), vector recall@10 against exact filtered brute
    force, admitted share of hits, and text queries with 10 hits, for one filter."""
    rows = np.flatnonzero(mask)
    sub = vecs[rows]
    t_text: list[float] = []
    t_vec: list[float] = []
    t_hyb: list[float] = []
    c_hyb: list[float] = []  # process CPU time: less distorted by other load on the box
    recall: list[float] = []
    admitted_share: list[float] = []
    text_full: list[float] = []
    for (q, lang), qv in zip(queries, qvecs, strict=True):
        cpu0 = time.process_time()
        a = time.perf_counter()
        th = idx.search_text(q, lang, 10, flt)
        b = time.perf_counter()
        vh = idx.search_vector(qv, 10, flt)
        c = time.perf_counter()
        c_hyb.append(time.process_time() - cpu0)
        t_text.append(b - a)
        t_vec.append(c - b)
        t_hyb.append(c - a)
        exact = exact_ids(pieces, rows, sub, qv)
        got = {h.chunk.id for h in vh}
        recall.append(len(got & exact) / max(1, min(10, len(exact))))
        hits = th + vh
        admitted_share.append(
            sum(not flt.access_tokens.isdisjoint(h.chunk.access) for h in hits) / max(1, len(hits))
        )
        text_full.append(1.0 if len(th) == 10 else 0.0)
    return {
        "admitted_chunks": int(mask.sum()),
        "text_p50_ms": pct(t_text, 50),
        "text_p99_ms": pct(t_text, 99),
        "vector_p50_ms": pct(t_vec, 50),
        "vector_p99_ms": pct(t_vec, 99),
        "hybrid_p50_ms": pct(t_hyb, 50),
        "hybrid_p99_ms": pct(t_hyb, 99),
        "hybrid_cpu_p50_ms": pct(c_hyb, 50),
        "hybrid_cpu_p99_ms": pct(c_hyb, 99),
        "vector_recall_at_10": round(float(np.mean(recall)), 4),
        "hits_admitted_share": round(float(np.mean(admitted_share)), 4),
        "text_queries_with_10_hits": round(float(np.mean(text_full)), 4),
        "queries": len(queries),
    }


_FRESH = """
import json, sys, time
from pathlib import Path
def rss(field="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    return 0
from sovra.domain import SearchFilter
from sovra.index import open_index
if sys.argv[3] == "lance":
    import sovra.index.lance  # the import of lancedb is not part of opening an index
base = rss()
t = time.perf_counter()
idx = open_index(Path(sys.argv[1]), dimension=int(sys.argv[2]), backend=sys.argv[3])
opened = time.perf_counter() - t
t = time.perf_counter()
idx.search_text("heat transfer", "en", 10, SearchFilter(frozenset({"public"})))
first = time.perf_counter() - t
print(json.dumps({"open_s": round(opened, 2), "first_query_ms": round(first * 1000, 1),
                  "rss_after_open_mb": rss(), "rss_before_open_mb": base,
                  "peak_rss_mb": rss("VmHWM")}))
"""


def fresh_open(backend: str, path: Path, dim: int) -> dict[str, Any]:
    """Open the built index in a new process: open time and the index's own memory.

    Peak memory is VmHWM of that process: ru_maxrss would report the parent's peak, which
    Linux carries over into a forked child.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH, str(path), str(dim), backend],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20),
        "gpu": "none",
        "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--backends", default="embedded,lance")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.worker:
        res = run_backend(args.worker, args.n, args.queries, Path(args.workdir))
        print(json.dumps(res))
        return
    # Prepare caches once in the parent, so no worker pays for embedding.
    pieces = real_pieces()
    if not FAKE:
        real_embeddings(pieces)
    query_vectors(real_queries(args.queries))
    results: dict[str, Any] = {
        "command": "python -m bench.bench_index " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "corpus": {
            "chunks": args.n,
            "real_pieces": len(pieces),
            "tiling": "real pieces embedded once; copies drop ~10% of words, vector + N(0, 0.02) noise, renormalised",
            "doc_chunks": DOC_CHUNKS,
        },
        "backends": {},
    }
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for backend in args.backends.split(","):
            print(f"[bench_index] {backend} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.bench_index",
                    "--worker",
                    backend,
                    "--n",
                    str(args.n),
                    "--queries",
                    str(args.queries),
                    "--workdir",
                    tmp,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                print(proc.stderr[-4000:], file=sys.stderr)
                results["backends"][backend] = {"error": proc.stderr[-2000:]}
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results["backends"][backend] = res
            print(json.dumps(res, indent=1), file=sys.stderr, flush=True)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
