"""`make bench`: run every benchmark in turn; each writes bench/results/*.json itself.

Benchmarks are never part of `make test`. The peer comparison needs its own virtualenv
(bench/.peers-venv, see bench/bench_peers.py); it is skipped with a note when that is absent.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAIN = [
    "bench.bench_index",
    "bench.bench_pgindex",
    "bench.bench_pg_hnsw_build",
    "bench.bench_cost_curve",
    "bench.bench_ingest",
    "bench.bench_audit",
    "bench.bench_policy",
    "bench.bench_pii",
    "bench.bench_generation",
    "bench.bench_answer",
    "bench.bench_connectors",
    "bench.bench_ask_cpu",
    "bench.bench_request_cpu",
    "bench.bench_embed",
    "bench.bench_throughput",  # saturated req/s and half-load p99 of search and ask
    "bench.bench_load",  # the 50-user locust soak (5 minutes)
    "bench.bench_triage",  # needs a synced demo home: `make demo` first
    "bench.bench_ray_ingest",
    "bench.bench_vector_layout",
    "bench.bench_audit_sequential",
]


def main() -> int:
    failed: list[str] = []
    only = set(sys.argv[1:])
    runs: list[tuple[str, str]] = [(sys.executable, m) for m in PLAIN]
    peers = ROOT / "bench" / ".peers-venv" / "bin" / "python"
    if peers.exists():
        runs.append((str(peers), "bench.bench_peers"))
    else:
        print("bench_peers: skipped, bench/.peers-venv is missing (see bench/bench_peers.py)")
    for python, module in runs:
        if only and module.split(".")[-1] not in only:
            continue
        started = time.perf_counter()
        print(f"== {module}", flush=True)
        code = subprocess.call([python, "-m", module], cwd=ROOT)
        print(f"== {module}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
        if code:
            failed.append(module)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
