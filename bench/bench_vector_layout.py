"""Exact vector search of the embedded index in its two vector layouts, side by side.

Run from the repo root:  .venv/bin/python -m bench.bench_vector_layout [--sizes 18000,100000]

The embedded index keeps its vectors column-major while broad searches scan them all, and
row-major once the HNSW graph takes broad searches (src/sovra/index/embedded.py, `_Memory`).
This measures why, on the index itself: per size, one index of synthetic chunks (unit vectors
around 2,000 cluster centres, 1 % of documents readable by `group:rare` only) is opened twice
from the same directory, once per layout (`ann = "off"`: column-major; `ann = "on"` with the
graph never used: row-major), and the same queries run through `search_vector` at k = 100
(the hybrid search's candidate depth) under the broad filter (99 %) and the 1 % filter, in
rounds that alternate the layouts so machine drift hits both alike. `--fused` gives the vectors
a second model's 512 columns (the demo's MiniLM + USE index) and queries only the first 384,
as a fused embedder does. One thread for OpenBLAS, as `sovra serve` runs it. Results (p50/p99
ms per layout and filter) go to bench/results/vector-layout.json with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import numpy as np

from sovra.domain import Chunk, SearchFilter
from sovra.index import AnnSettings, EmbeddedIndex

RESULTS = Path(__file__).resolve().parent / "results" / "vector-layout.json"
LAYOUTS = {
    "column-major": AnnSettings(mode="off"),
    "row-major": AnnSettings(mode="on", exact_max=10**9),
}
FILTERS = {
    "broad": SearchFilter(access_tokens=frozenset({"group:staff"})),
    "1%": SearchFilter(access_tokens=frozenset({"group:rare"})),
}


def corpus(n: int, dim: int, rng: np.random.Generator) -> dict[str, list[Chunk]]:
    centres = rng.normal(size=(2_000, dim)).astype(np.float32)
    docs: dict[str, list[Chunk]] = {}
    for d in range(n // 4):
        doc = f"d{d}"
        access = ("group:rare",) if d % 100 == 37 else ("group:staff",)
        vecs = centres[rng.integers(0, 2_000, 4)] + 0.3 * rng.normal(size=(4, dim))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        docs[doc] = [
            Chunk(
                id=f"{doc}#{p}",
                document_id=doc,
                source="files",
                position=p,
                text="",
                title="",
                uri=f"file:///{doc}",
                heading_path=(),
                language="en",
                access=access,
                classification="internal",
                residency="eu",
                embedding=list(vecs[p].astype(np.float32)),
            )
            for p in range(4)
        ]
    return docs


def measure(n: int, dim: int, query_dim: int, queries: int, rounds: int) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    qs = rng.normal(size=(queries, dim)).astype(np.float32)
    qs[:, query_dim:] = 0.0
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    times: dict[str, dict[str, list[float]]] = {lay: {f: [] for f in FILTERS} for lay in LAYOUTS}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with EmbeddedIndex(tmp, dim, ann=LAYOUTS["column-major"]) as idx:
            docs = corpus(n, dim, rng)
            names = list(docs)
            for i in range(0, len(names), 2_500):
                idx.replace_documents({d: docs[d] for d in names[i : i + 2_500]})
        build_s = time.perf_counter() - started
        for _ in range(rounds):
            for layout, ann in LAYOUTS.items():
                with EmbeddedIndex(tmp, dim, ann=ann, read_only=True) as idx:
                    order = idx._mem.order
                    for name, flt in FILTERS.items():
                        idx.search_vector(list(qs[0]), 100, flt)  # filter mask cached, as served
                        for q in qs:
                            t = time.perf_counter()
                            idx.search_vector(list(q), 100, flt)
                            times[layout][name].append((time.perf_counter() - t) * 1000)
                assert order == ("F" if layout == "column-major" else "C"), order
    out: dict[str, Any] = {"chunks": n, "dimension": dim, "query_columns": query_dim}
    out["build_s"] = round(build_s, 1)
    for layout, per in times.items():
        out[layout] = {
            name: {
                "p50_ms": round(statistics.median(v), 3),
                "p99_ms": round(float(np.percentile(v, 99)), 3),
            }
            for name, v in per.items()
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="18000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two layouts")
    ap.add_argument("--fused", action="store_true", help="896-d vectors, 384-d queries")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    dim, query_dim = (896, 384) if args.fused else (384, 384)
    result: dict[str, Any] = {
        "benchmark": "vector-layout",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "command": "python -m bench.bench_vector_layout "
        + f"--sizes {args.sizes} --queries {args.queries} --rounds {args.rounds}"
        + (" --fused" if args.fused else ""),
        "sizes": [],
    }
    for n in (int(s) for s in args.sizes.split(",")):
        row = measure(n, dim, query_dim, args.queries, args.rounds)
        print(json.dumps(row))
        result["sizes"].append(row)
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
