"""Audit log benchmark with a naive-recompute reference beside each number.

    .venv/bin/python -m bench.bench_audit [--entries 1000000] [--quick]

Targets: >= 5,000 durable appends/s on SQLite and PostgreSQL (group commit), inclusion proof
<= 1 ms at 1M entries, full verify of 1M entries <= 10 s. PostgreSQL runs when
$SOVRA_BENCH_POSTGRES_URL or $SOVRA_TEST_POSTGRES_URL is set. Raw results go to
bench/results/audit.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sovra.audit import AuditEvent, AuditLog, ResourceRef
from sovra.audit.merkle import largest_pow2_below, naive_root
from sovra.audit.verify import verify_inclusion

RESULTS = Path(__file__).resolve().parent / "results" / "audit.json"


def event(i: int) -> AuditEvent:
    """A realistic `ask` event: two resources with hashes, policy, endpoint, request id."""
    return AuditEvent(
        actor="svc:answer",
        action="ask",
        resources=(
            ResourceRef(id=f"files:handbook/doc-{i}.md", hash=f"sha256:{i:064x}"),
            ResourceRef(id=f"files:handbook/doc-{i + 1}.md", hash=f"sha256:{i + 1:064x}"),
        ),
        policy_ids=("ask-internal",),
        decision="allow",
        endpoint="local-llama",
        jurisdiction="eu",
        request_id=f"req-{i:08d}",
        details={"chunks": 2, "tokens": 512},
    )


_cpu: list[float] = []


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of fn(); its CPU seconds (all threads of this process) go to _cpu."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    _cpu.append(time.process_time() - c)
    return time.perf_counter() - t


def per_s(n: int, seconds: float) -> dict[str, int]:
    """Throughput by wall clock, and by this process's CPU time (what an idle machine with a
    free core would approach; a PostgreSQL server's own CPU is not in it)."""
    return {"wall": round(n / seconds), "cpu": round(n / _cpu[-1])}


def bench_appends(open_log: Callable[[], AuditLog], n_batch: int, n_group: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log = open_log()
    try:
        events = [event(i) for i in range(n_batch)]
        secs = timed(
            lambda: [log.append_many(events[i : i + 1000]) for i in range(0, n_batch, 1000)]
        )
        out["append_many_batch1000_per_s"] = per_s(n_batch, secs)

        # One producer that does not wait per event (what an async server does): the
        # committer thread batches whatever is queued into one transaction.
        events = [event(i) for i in range(n_batch)]

        def pipelined() -> None:
            futures = [log.submit(e) for e in events]
            for f in futures:
                f.result()

        secs = timed(pipelined)
        out["submit_pipelined_per_s"] = per_s(n_batch, secs)

        threads, per = 64, n_group // 64
        events = [event(i) for i in range(threads * per)]

        def worker(t: int) -> None:
            for i in range(per):
                log.append(events[t * per + i])

        def run() -> None:
            pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
            for th in pool:
                th.start()
            for th in pool:
                th.join()

        secs = timed(run)
        out["append_group_commit_64_threads_per_s"] = per_s(threads * per, secs)

        single = [event(i) for i in range(300)]
        secs = timed(lambda: [log.append(e) for e in single])
        out["append_single_thread_one_commit_each_per_s"] = per_s(len(single), secs)
        assert log.verify().ok
    finally:
        log.close()
    return out


def naive_inclusion_proof(entries: list[bytes], m: int) -> list[bytes]:
    """RFC 9162 PATH(m, D[n]) straight from the definition: O(n) hashing per proof."""
    n = len(entries)
    if n == 1:
        return []
    k = largest_pow2_below(n)
    if m < k:
        return [*naive_inclusion_proof(entries[:k], m), naive_root(entries[k:])]
    return [*naive_inclusion_proof(entries[k:], m - k), naive_root(entries[:k])]


def bench_million(home: Path, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"entries": n}
    log = AuditLog.open(home)
    try:
        t = time.perf_counter()
        batch = 2000
        for start in range(0, n, batch):
            log.append_many([event(i) for i in range(start, min(n, start + batch))])
        out["build_seconds"] = round(time.perf_counter() - t, 1)
        out["sqlite_file_mb"] = round((home / "audit" / "log.sqlite").stat().st_size / 2**20)

        rng = random.Random(5)
        samples = [rng.randrange(n) for _ in range(2000)]
        lat = []
        cpu = time.process_time()
        for leaf in samples:
            t = time.perf_counter()
            receipt = log.prove(leaf)
            lat.append(time.perf_counter() - t)
        out["prove_receipt_cpu_ms_mean"] = round(
            (time.process_time() - cpu) / len(samples) * 1000, 3
        )
        out["prove_receipt_ms_median"] = round(statistics.median(lat) * 1000, 3)
        out["prove_receipt_ms_p99"] = round(sorted(lat)[int(len(lat) * 0.99)] * 1000, 3)
        checkpoint = receipt.checkpoint.split("\n")
        root = base64.b64decode(checkpoint[2])
        verify_inclusion(receipt.index, n, receipt.leaf_hash, receipt.proof, root)

        # Reference: a proof by naive recompute over every entry (read them all, then hash).
        t = time.perf_counter()
        entries = [data for _, data in log.store.entries(0, n)]
        read_s = time.perf_counter() - t
        leaf = samples[0]
        t = time.perf_counter()
        naive = naive_inclusion_proof(entries, leaf)
        out["naive_proof_seconds"] = round(read_s + time.perf_counter() - t, 2)
        assert naive == list(log.prove(leaf).proof)
        t = time.perf_counter()
        naive_full_root = naive_root(entries)
        out["naive_root_recompute_seconds"] = round(read_s + time.perf_counter() - t, 2)
        del entries

        t, cpu = time.perf_counter(), time.process_time()
        report = log.verify()
        out["full_verify_seconds"] = round(time.perf_counter() - t, 2)
        out["full_verify_cpu_seconds"] = round(time.process_time() - cpu, 2)
        assert report.ok and report.root == naive_full_root
    finally:
        log.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="Small sizes, for a smoke run.")
    args = parser.parse_args()
    n_batch, n_group = (5_000, 2_560) if args.quick else (50_000, 19_200)
    n_million = 20_000 if args.quick else args.entries

    results: dict[str, Any] = {
        "command": "python -m bench.bench_audit" + (" --quick" if args.quick else ""),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gpu": None,
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # The machine is shared: wall times include waiting for a CPU; CPU times do not.
        "load_average_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="sovra-bench-audit-") as tmp:
        root = Path(tmp)
        print("appends: sqlite …", flush=True)
        results["sqlite"] = bench_appends(lambda: AuditLog.open(root / "a"), n_batch, n_group)
        print(json.dumps(results["sqlite"]), flush=True)
        url = os.environ.get("SOVRA_BENCH_POSTGRES_URL") or os.environ.get(
            "SOVRA_TEST_POSTGRES_URL"
        )
        if url:
            import psycopg

            schema = f"bench_audit_{uuid.uuid4().hex[:8]}"
            print("appends: postgres …", flush=True)
            try:
                results["postgres"] = bench_appends(
                    lambda: AuditLog.open(root / "p", url, schema=schema), n_batch, n_group
                )
            finally:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            print(json.dumps(results["postgres"]), flush=True)
        else:
            results["postgres"] = "skipped: set SOVRA_BENCH_POSTGRES_URL"
        print(f"{n_million} entries: build, prove, verify …", flush=True)
        results["million"] = bench_million(root / "m", n_million)
        print(json.dumps(results["million"]), flush=True)
    results["load_average_at_end"] = os.getloadavg()[0]
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
