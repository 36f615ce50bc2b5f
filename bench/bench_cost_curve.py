"""Cost curve of the embedded index: search latency and RSS at 10k, 100k and 1M chunks.

Run from the repo root:
  .venv/bin/python -m bench.bench_cost_curve                 # 10k, 100k, 1M, one process each
  .venv/bin/python -m bench.bench_cost_curve --sizes 10000   # one size

The corpus is synthetic so that 1M chunks build in minutes on 2 cores without the model:
vectors are 384-dim, drawn around 2,000 Gaussian cluster centres and normalised (a stand-in
for real embeddings: a clustered, not uniform, cloud), texts are 24 words drawn from a Zipf
distribution over the real vocabulary of ../shared/data (so BM25 posting lengths look like
real text). Documents have 4 chunks; 1% of documents are readable by `group:rare` only, 10% by
`group:tenth` only, the rest by `group:staff`. Filters timed: `all` (a principal holding all
three groups: admits 100%), `10%` and `1%`.

Per size, in its own subprocess (so peak RSS is its own): build time; k=10 latency p50/p99
of text, vector and hybrid (one text + one vector search back to back) per filter, with the
vector channel exact (`ann = "off"`) and through the HNSW graph (`ann = "on"`, graph build
timed separately); recall@10 of the graph path against exact search per filter; RSS after
the build and after the graph. Results go to bench/results/cost-curve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.index_corpus import real_pieces

RESULTS = Path(__file__).resolve().parent / "results" / "cost-curve.json"
SIZES = (10_000, 100_000, 1_000_000)
DIM = 384
DOC_CHUNKS = 4
WORDS_PER_CHUNK = 24
BATCH_DOCS = 2_500


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _access(doc: int) -> tuple[str, ...]:
    if doc % 100 == 37:
        return ("group:rare",)
    if doc % 10 == 3:
        return ("group:tenth",)
    return ("group:staff",)


def _vocab() -> tuple[list[str], np.ndarray]:
    counts: Counter[str] = Counter()
    for p in real_pieces():
        if p.language == "en":
            counts.update(w.lower() for w in re.findall(r"[A-Za-z]{3,}", p.text))
    words = [w for w, _ in counts.most_common(20_000)]
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    prob = 1.0 / ranks
    return words, prob / prob.sum()


def _vectors(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    v = centres[rng.integers(0, centres.shape[0], n)]
    v = v + rng.normal(scale=0.05, size=(n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000.0, q)), 3)


def _timed(fn: Any, items: list[Any]) -> dict[str, float]:
    times = []
    for it in items:
        t0 = time.perf_counter()
        fn(it)
        times.append(time.perf_counter() - t0)
    return {"p50_ms": _pct(times, 50), "p99_ms": _pct(times, 99)}


def _hybrid(idx: Any, flt: Any, qtext: list[str], qvecs: list[list[float]]) -> dict[str, float]:
    """One text and one vector search back to back, timed together (fusion costs ~us)."""
    return _timed(
        lambda qq: (idx.search_text(qq[0], "en", 10, flt), idx.search_vector(qq[1], 10, flt)),
        list(zip(qtext, qvecs, strict=True)),
    )


def run_size(n: int, queries: int, keep: Path | None) -> dict[str, Any]:
    from sovra.domain import Chunk, Principal, SearchFilter
    from sovra.index import AnnSettings, EmbeddedIndex

    rng = np.random.default_rng(11)
    words, prob = _vocab()
    centres = rng.normal(size=(2_000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    tmp = tempfile.TemporaryDirectory(dir=keep) if keep else tempfile.TemporaryDirectory()
    path = Path(tmp.name) / "index"
    rss0 = _rss_mib()
    idx = EmbeddedIndex(path, DIM, ann=AnnSettings(mode="off"))
    t0 = time.perf_counter()
    docs = n // DOC_CHUNKS
    for start in range(0, docs, BATCH_DOCS):
        stop = min(docs, start + BATCH_DOCS)
        m = (stop - start) * DOC_CHUNKS
        vecs = _vectors(m, rng, centres)
        toks = rng.choice(len(words), size=(m, WORDS_PER_CHUNK), p=prob)
        batch: dict[str, list[Chunk]] = {}
        for i in range(m):
            d, p = divmod(start * DOC_CHUNKS + i, DOC_CHUNKS)
            batch.setdefault(f"d{d}", []).append(
                Chunk(
                    id=f"d{d}#{p}",
                    document_id=f"d{d}",
                    source="bench",
                    position=p,
                    text=" ".join(words[t] for t in toks[i]),
                    title="",
                    uri="",
                    heading_path=(),
                    language="en",
                    access=_access(d),
                    classification="internal",
                    residency="eu",
                    embedding=vecs[i],  # type: ignore[arg-type]  # any float sequence
                )
            )
        idx.replace_documents(batch)
        print(f"  built {stop * DOC_CHUNKS:,}/{n:,}", file=sys.stderr, flush=True)
    build_s = time.perf_counter() - t0
    rss_built = _rss_mib()
    filters = {
        "all": SearchFilter.for_principal(Principal("u", frozenset({"staff", "tenth", "rare"}))),
        "10%": SearchFilter.for_principal(Principal("u", frozenset({"tenth"}))),
        "1%": SearchFilter.for_principal(Principal("u", frozenset({"rare"}))),
    }
    qvecs = [v.tolist() for v in _vectors(queries, rng, centres)]
    qtext = [
        " ".join(words[t] for t in rng.choice(len(words), size=3, p=prob)) for _ in range(queries)
    ]
    out: dict[str, Any] = {
        "chunks": n,
        "build_s": round(build_s, 1),
        "rss_mib_after_build": round(rss_built - rss0, 1),
        "exact": {},
        "ann": {},
    }
    exact_hits: dict[str, list[set[str]]] = {}
    for name, flt in filters.items():
        exact_hits[name] = [{h.chunk.id for h in idx.search_vector(q, 10, flt)} for q in qvecs]
        out["exact"][name] = {
            "text": _timed(lambda q, f=flt: idx.search_text(q, "en", 10, f), qtext),
            "vector": _timed(lambda q, f=flt: idx.search_vector(q, 10, f), qvecs),
            "hybrid": _hybrid(idx, flt, qtext, qvecs),
        }
        print(f"  exact {name}: {out['exact'][name]}", file=sys.stderr, flush=True)
    idx.close()
    idx = EmbeddedIndex(path, DIM, ann=AnnSettings(mode="on"))
    t0 = time.perf_counter()
    idx.search_vector(qvecs[0], 10, filters["all"])  # builds the graph from memory
    out["ann_build_s"] = round(time.perf_counter() - t0, 1)
    out["rss_mib_with_graph"] = round(_rss_mib() - rss0, 1)
    for name, flt in filters.items():
        found = sum(
            len(want & {h.chunk.id for h in idx.search_vector(q, 10, flt)})
            for q, want in zip(qvecs, exact_hits[name], strict=True)
        )
        out["ann"][name] = {
            "recall_at_10": round(found / sum(len(w) for w in exact_hits[name]), 4),
            "vector": _timed(lambda q, f=flt: idx.search_vector(q, 10, f), qvecs),
            "hybrid": _hybrid(idx, flt, qtext, qvecs),
        }
        print(f"  ann {name}: {out['ann'][name]}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    idx.close()  # saves the graph
    out["ann_save_s"] = round(time.perf_counter() - t0, 1)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    tmp.cleanup()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--tmp", type=Path, default=None, help="directory for the index (disk)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.child:
        (size,) = args.sizes
        print(json.dumps(run_size(size, args.queries, args.tmp)))
        return 0
    runs = []
    for size in args.sizes:
        print(f"== {size:,} chunks", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "bench.bench_cost_curve", "--child", "--sizes", str(size)]
        cmd += ["--queries", str(args.queries)] + (["--tmp", str(args.tmp)] if args.tmp else [])
        res = subprocess.run(cmd, capture_output=False, stdout=subprocess.PIPE, text=True)
        if res.returncode:
            print(f"size {size} failed with exit {res.returncode}", file=sys.stderr)
            return res.returncode
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
        },
        "queries": args.queries,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
