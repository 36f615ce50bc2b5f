"""Query embedding latency and ingestion throughput per encoder runtime.

Variants: `torch` (sentence-transformers MiniLM), `onnx-fp32` and `onnx-int8` (the same model on
ONNX Runtime, exported into a temp cache first, not timed), `use` (the multilingual USE v3,
numpy). For each: one query at a time (p50/p95 over distinct XQuAD English questions, no
cache), `--clients` concurrent callers through the serving wrapper's micro-batcher (per-call
p50/p95 and queries/s), a query-cache hit, and documents/s for ingestion batches of IT tickets
(title + body, the pipeline's batch size). Query threads default to the server's (1); the
ingestion phase uses every CPU, as `sovra source sync` does. Each variant runs in its own
subprocess so thread settings and RSS do not leak between them.

The load average is recorded with every run: figures from a shared machine are not clean.

Usage (from the repository root):
    .venv/bin/python -m bench.bench_embed [--variants torch onnx-fp32 onnx-int8 use]
        [--queries 200] [--clients 8] [--docs 512] [--query-threads 1]
Writes bench/results/embed.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = ROOT.parent / "shared" / "data"
VARIANTS = ("torch", "onnx-fp32", "onnx-int8", "use")


def questions(n: int) -> list[str]:
    data = json.loads((DATA / "eval" / "xquad" / "xquad.en.json").read_text(encoding="utf-8"))
    out = [q["question"] for d in data["data"] for p in d["paragraphs"] for q in p["qas"]]
    return out[:n]


def tickets(n: int) -> list[str]:
    with (DATA / "company" / "tickets" / "it_tickets.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [f"{r['title']}\n{r['body']}".strip() for r in rows[:n]]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


def make(variant: str, threads: int, cache: Path) -> Any:
    from sovra.models.embedding import OnnxEmbedder, SentenceTransformerEmbedder, USEEmbedder

    if variant == "torch":
        return SentenceTransformerEmbedder(threads=threads)
    if variant == "use":
        return USEEmbedder(threads=threads)
    return OnnxEmbedder(
        cache_dir=cache, quantize="int8" if variant == "onnx-int8" else "none", threads=threads
    )


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    from sovra.models.serving import ServingEmbedder

    qs = questions(args.queries)
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        query_model = make(variant, args.query_threads, cache)
        query_model.embed(["warm up the model and its export"])
        if variant.startswith("onnx") and query_model.runtime == "torch":
            raise SystemExit(f"{variant}: export refused: {query_model.fallback_reason}")
        single = []
        for q in qs:
            t0 = time.perf_counter()
            query_model.embed([q])
            single.append((time.perf_counter() - t0) * 1000)

        served = ServingEmbedder(query_model, cache_size=0, batch_window_ms=args.window_ms)
        start = threading.Barrier(args.clients)
        per_call: list[float] = []
        lock = threading.Lock()

        def client(i: int) -> None:
            start.wait()
            for q in qs[i :: args.clients]:
                t0 = time.perf_counter()
                served.embed([q])
                with lock:
                    per_call.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, range(args.clients)))
        wall = time.perf_counter() - t0
        assert served.batcher is not None

        cached = ServingEmbedder(query_model, cache_size=16)
        cached.embed([qs[0]])
        hits = []
        for _ in range(200):
            t0 = time.perf_counter()
            cached.embed([qs[0]])
            hits.append((time.perf_counter() - t0) * 1000)

        docs = tickets(args.docs)
        doc_model = make(variant, cores, cache)
        doc_model.embed(docs[:8])
        t0 = time.perf_counter()
        doc_model.embed(docs)
        doc_s = time.perf_counter() - t0
    return {
        "variant": variant,
        "query_threads": args.query_threads,
        "single_query_ms": {"p50": pct(single, 0.5), "p95": pct(single, 0.95), "n": len(single)},
        "batched": {
            "clients": args.clients,
            "window_ms": args.window_ms,
            "per_call_ms": {"p50": pct(per_call, 0.5), "p95": pct(per_call, 0.95)},
            "queries_per_s": round(len(per_call) / wall, 1),
            "batches": served.batcher.batches,
            "mean_batch": round(len(per_call) / max(1, served.batcher.batches), 2),
        },
        "cache_hit_ms_p50": pct(hits, 0.5),
        "ingest": {"docs": len(docs), "threads": cores, "docs_per_s": round(len(docs) / doc_s, 1)},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--window-ms", type=float, default=2.0)
    ap.add_argument("--docs", type=int, default=512)
    ap.add_argument("--query-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "embed.json")
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_variant(args.one, args)))
        return
    from bench.bench_ingest import machine

    rows = []
    for v in args.variants:
        cmd = [sys.executable, "-m", "bench.bench_embed", "--one", v, "--queries",
               str(args.queries), "--clients", str(args.clients), "--window-ms",
               str(args.window_ms), "--docs", str(args.docs), "--query-threads",
               str(args.query_threads)]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"{v}: exit {done.returncode}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        s, b = row["single_query_ms"], row["batched"]
        print(
            f"{v:<10} query p50 {s['p50']:6.2f} ms p95 {s['p95']:6.2f} | {b['clients']} clients "
            f"p50 {b['per_call_ms']['p50']:6.2f} p95 {b['per_call_ms']['p95']:6.2f} "
            f"{b['queries_per_s']:6.1f} q/s (batch {b['mean_batch']}) | cache hit "
            f"{row['cache_hit_ms_p50']:.3f} ms | ingest {row['ingest']['docs_per_s']:.0f} docs/s",
            flush=True,
        )
    result = {"machine": machine(), "load_average": os.getloadavg(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
