"""Saturated throughput, and latency at half that load, of POST /api/v1/search and extractive ask.

Issue 16's targets: search ≥ 150 requests/s saturated and p99 ≤ 100 ms at 50 % of that; extractive
ask ≥ 40 requests/s and p99 ≤ 250 ms at 50 %. Locust (bench_load) cannot measure this on two
cores: its users cost more CPU per request than the server does. This harness is a small asyncio
HTTP/1.1 keep-alive client (pre-built requests, a regex for Content-Length), a few hundred
microseconds of CPU per request, and it reports its own CPU so the share the load generator
takes from the server is visible.

Server: the real `sovra serve` in a child process (its own logging to a file, rate limits raised
through SOVRA_SERVER_* so the limiter is exercised but never refuses), over either

* `--site load` (default): bench_load's site, built fresh: every etcd-operator runbook and four
  handbook pages, synced with the default models, query-embedding cache off; or
* `--site corpus`: the same site with the 100k-chunk bench corpus (bench/index_corpus.py: real
  text and real MiniLM vectors, tiled with variation) written straight into its embedded index
  beside the synced pages, every chunk readable by the requesting user (the broad, costliest
  case); `--chunks N` sets the size, `--ann off|on|auto` the index's `[index] ann` (a graph is
  built and saved before the server starts); the multilingual channel is off, as the corpus
  carries MiniLM vectors only; or
* `--config PATH`: an indexed site of your own (e.g. `demo/sovra.toml` after `make demo`, the
  ~18k-chunk demo index); an API key for `--user` is created in its account store for the run
  and revoked after it. Its query cache stays as configured: the queries below do not repeat.

Queries: the titles of the sample company's IT tickets (5,431 real helpdesk questions, shuffled
with a fixed seed), so almost every request is a new query and a query-embedding cache cannot
serve it. Per route:

1. saturation: a closed loop at each of `--connections` (default 1, 4, 16) for `--seconds` after
   a warm-up; the best requests/s is "saturated";
2. half load: an open loop, Poisson arrivals at 50 % of the saturated rate, latency counted from
   each request's scheduled time (so a stalled server is not hidden by a waiting client), run
   twice: from `--users` (default 50) users, each request on its own user's keep-alive
   connection (a department's browsers), and from one pool that reuses the most recently idle
   connection (one client process, or a proxy). `--workers N` shares out connections, not
   requests, so the second can load one worker and leave the other idle; each phase reports
   the workers' shares of the server CPU.

Reported per phase: requests/s, p50/p95/p99/max, non-200 answers, and the server's and the
client's CPU ms per request (psutil / process_time). Writes bench/results/throughput.json.

    python -m bench.bench_throughput [--site load | --config demo/sovra.toml] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench.bench_load import build_site, free_port, start_server, wait_ready
from sovra.config import load_config
from sovra.server.accounts import AccountStore

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "throughput.json"
TICKETS = REPO.parent / "shared" / "data" / "company" / "tickets" / "it_tickets.csv"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
KEEP_ALIVE_S = 4.0
ROUTES = {
    "search": ("/api/v1/search", lambda q: {"query": q, "k": 10}),
    "ask (extractive)": ("/api/v1/ask", lambda q: {"question": q, "extractive": True}),
}


def ticket_titles(seed: int = 16) -> list[str]:
    with TICKETS.open(encoding="utf-8", newline="") as fh:
        titles = sorted(
            {row["title"].strip() for row in csv.DictReader(fh) if row["title"].strip()}
        )
    random.Random(seed).shuffle(titles)
    return titles


class Requests:
    """Pre-rendered HTTP/1.1 requests for one route, handed out in turn."""

    def __init__(self, path: str, body: Any, queries: list[str], key: str) -> None:
        self.raw = []
        for q in queries:
            payload = json.dumps(body(q)).encode()
            self.raw.append(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
        self.turn = 0

    def next(self) -> bytes:
        self.turn += 1
        return self.raw[self.turn % len(self.raw)]


async def send(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], raw: bytes) -> int:
    reader, writer = conn
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    length = CONTENT_LENGTH.search(head)
    if length is None:
        raise RuntimeError(f"no Content-Length in the answer: {head[:200]!r}")
    await reader.readexactly(int(length.group(1)))
    return int(head[9:12])


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def stats(
    latencies_s: list[float], errors: int, seconds: float, cpu: dict[str, Any]
) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies_s)
    n = len(ms)

    def pct(p: float) -> float:
        return round(ms[min(n - 1, int(p / 100 * n))], 1) if n else float("nan")

    return {
        "requests": n,
        "non_200": errors,
        "rps": round(n / seconds, 1),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(ms[-1], 1) if n else None,
        "mean_ms": round(statistics.fmean(ms), 1) if n else None,
        "server_cpu_ms_per_request": round(cpu["server"] * 1000 / n, 2) if n else None,
        "client_cpu_ms_per_request": round(cpu["client"] * 1000 / n, 2) if n else None,
        "worker_cpu_shares": cpu["worker_shares"],
    }


@contextmanager
def cpu_meter(server: psutil.Process) -> Iterator[dict[str, Any]]:
    spent: dict[str, Any] = {}

    def server_cpu() -> dict[int, float]:
        # The supervisor and, with --workers, every worker process (they live for the run).
        out = {}
        for proc in (server, *server.children(recursive=True)):
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        return out

    s0, c0 = server_cpu(), time.process_time()
    yield spent
    s1 = server_cpu()
    used = {pid: s1[pid] - s0.get(pid, 0.0) for pid in s1}
    spent["server"] = sum(used.values())
    spent["client"] = time.process_time() - c0
    # Each worker's share of the server's CPU: SO_REUSEPORT spreads connections, not requests,
    # so a few busy keep-alive connections can load one worker and leave the other idle.
    workers = [used[p.pid] for p in server.children(recursive=True) if p.pid in used]
    total = sum(workers)
    spent["worker_shares"] = (
        sorted((round(w / total, 2) for w in workers), reverse=True) if total else []
    )


async def closed_loop(
    port: int,
    reqs: Requests,
    connections: int,
    seconds: float,
    warmup: float,
    server: psutil.Process,
) -> dict[str, Any]:
    conns = [await connect(port) for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.perf_counter() + warmup + seconds

    async def worker(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status = await send(conn, reqs.next())
            if measuring:
                latencies.append(time.perf_counter() - started)
                errors += status != 200

    tasks = [asyncio.create_task(worker(c)) for c in conns]
    await asyncio.sleep(warmup)
    measuring = True
    with cpu_meter(server) as cpu:
        began = time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    for _, writer in conns:
        writer.close()
    return {"connections": connections, **stats(latencies, errors, elapsed, cpu)}


async def open_loop(
    port: int,
    reqs: Requests,
    rate: float,
    seconds: float,
    server: psutil.Process,
    users: int = 0,
    seed: int = 7,
) -> dict[str, Any]:
    """Poisson arrivals at `rate`. `users` > 0: each request comes from one of that many users
    picked at random, on that user's own idle keep-alive connection or a new one (browsers of
    a department); `users` = 0: from one shared pool that reuses the most recently idle
    connection first (one client process or a proxy in front)."""
    # Idle connections per user (pool: user 0), with when each went idle: uvicorn closes a
    # keep-alive connection idle for 5 s, so one idle longer than KEEP_ALIVE_S is dropped.
    idle: dict[int, list[tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], float]]] = {}
    opened = 0
    latencies: list[float] = []
    errors = 0
    rng = random.Random(seed)

    async def one(scheduled: float, user: int) -> None:
        nonlocal errors, opened
        conn = None
        mine = idle.setdefault(user, [])
        while mine:
            candidate, since = mine.pop()
            if time.perf_counter() - since < KEEP_ALIVE_S:
                conn = candidate
                break
            candidate[1].close()
        if conn is None:
            opened += 1
            conn = await connect(port)
        status = await send(conn, reqs.next())
        latencies.append(time.perf_counter() - scheduled)
        errors += status != 200
        mine.append((conn, time.perf_counter()))

    pending: list[asyncio.Task[None]] = []
    with cpu_meter(server) as cpu:
        began = time.perf_counter()
        at = began
        while at < began + seconds:
            at += rng.expovariate(rate)
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            user = rng.randrange(users) if users else 0
            pending.append(asyncio.create_task(one(at, user)))
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - began
    for conns in idle.values():
        for (_, writer), _ in conns:
            writer.close()
    return {
        "offered_rps": round(rate, 1),
        "clients": f"{users} users" if users else "one pool",
        "connections_opened": opened,
        **stats(latencies, errors, elapsed, cpu),
    }


def wait_workers(log: Path, workers: int, timeout_s: float = 300) -> None:
    """Until every worker has warmed its models (one readiness answer proves only one)."""
    deadline = time.monotonic() + timeout_s
    while log.read_text(encoding="utf-8").count("Application startup complete") < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"{workers} workers did not all start in {timeout_s:.0f} s")
        time.sleep(0.5)


def tree_rss_mib(server: psutil.Process) -> float:
    return sum(p.memory_info().rss for p in (server, *server.children(recursive=True))) / 2**20


def add_corpus(root: Path, n: int, ann: str) -> int:
    """Write the tiled bench corpus (n chunks, 4 per document) into the site's embedded index,
    labelled like the synced chunk alice reads first; returns the index's chunk count."""
    import numpy as np

    from bench.index_corpus import real_embeddings, real_pieces, tiled
    from sovra.domain import Chunk, SearchFilter
    from sovra.index import AnnSettings, EmbeddedIndex
    from sovra.workspace import Workspace

    config = load_config(root / "sovra.toml")
    ws = Workspace.open(config)
    try:
        alice = ws.principal("alice")
        template = ws.search(alice, "etcd backup").hits[0].chunk
    finally:
        ws.close()
    pieces = real_pieces()
    texts, vecs = tiled(pieces, real_embeddings(pieces), n)
    idx = EmbeddedIndex(root / "data" / "index", vecs.shape[1], ann=AnnSettings(mode=ann))
    try:
        for start in range(0, n, 4_000):
            batch: dict[str, list[Chunk]] = {}
            for i in range(start, min(n, start + 4_000)):
                doc = f"corpus-{i // 4}"
                batch.setdefault(doc, []).append(
                    Chunk(
                        id=f"{doc}#{i % 4}",
                        document_id=doc,
                        source=template.source,
                        position=i % 4,
                        text=texts[i].text,
                        title=texts[i].title,
                        uri=f"corpus://{i // 4}",
                        heading_path=(),
                        language=texts[i].language,
                        access=template.access,
                        classification=template.classification,
                        residency=template.residency,
                        embedding=np.asarray(vecs[i]),
                    )
                )
            idx.replace_documents(batch)
            print(f"  corpus {min(n, start + 4_000):,}/{n:,}", flush=True)
        if ann != "off":  # build the graph now and save it with the index, not in each worker
            idx.search_vector(vecs[0].tolist(), 10, SearchFilter.for_principal(alice))
        return idx.count()
    finally:
        idx.close()


def run_route(
    port: int,
    reqs: Requests,
    server: psutil.Process,
    connections: list[int],
    seconds: float,
    users: int,
) -> dict[str, Any]:
    sweep = []
    for c in connections:
        row = asyncio.run(closed_loop(port, reqs, c, seconds, min(5.0, seconds / 4), server))
        print(f"    closed loop, {c} connections: {row}", flush=True)
        sweep.append(row)
    best = max(sweep, key=lambda r: r["rps"])
    half = asyncio.run(open_loop(port, reqs, best["rps"] / 2, seconds * 2, server, users))
    print(f"    open loop at half load, {users} users: {half}", flush=True)
    pooled = asyncio.run(open_loop(port, reqs, best["rps"] / 2, seconds * 2, server, 0))
    print(f"    open loop at half load, one pool: {pooled}", flush=True)
    return {
        "saturation": sweep,
        "saturated_rps": best["rps"],
        "half_load": half,
        "half_load_one_pool": pooled,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--site", choices=("load", "corpus"), default="load")
    ap.add_argument("--chunks", type=int, default=100_000, help="--site corpus: its size")
    ap.add_argument("--ann", choices=("off", "on", "auto"), default="auto", help="--site corpus")
    ap.add_argument("--config", type=Path, help="an indexed site of your own instead of --site")
    ap.add_argument("--user", default="alice", help="whose API key the requests carry")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--connections", default="1,4,16")
    ap.add_argument(
        "--seconds", type=float, default=20.0, help="per closed-loop step (open loop: 2x)"
    )
    ap.add_argument("--workers", type=int, default=1, help="sovra serve --workers")
    ap.add_argument(
        "--users", type=int, default=50, help="half load: users, each on its own connections"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SOVRA_SERVER_RATE_LIMIT_PER_MINUTE": "1000000",
        "SOVRA_SERVER_RATE_LIMIT_BURST": "100000",
    }
    queries = ticket_titles()
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sovra-throughput-") as tmp:
        root = Path(tmp)
        if args.config is None:
            started = time.perf_counter()
            extra = "\n[embedding]\nquery_cache = 0\n"
            if args.site == "corpus":
                extra += f'multilingual = "off"\n\n[index]\nann = "{args.ann}"\n'
            keys = build_site(root, extra_config=extra)
            print(f"site synced in {time.perf_counter() - started:.0f}s", flush=True)
            if args.site == "corpus":
                chunks = add_corpus(root, args.chunks, args.ann)
                print(f"index holds {chunks:,} chunks", flush=True)
            config, key, revoke = root / "sovra.toml", keys[args.user], None
        else:
            config = args.config.resolve()
            accounts = AccountStore.for_config(load_config(config))
            key, record = accounts.create_key(args.user, "bench-throughput")
            accounts.close()
            revoke = record.id
        port = free_port()
        log = root / "serve.log"
        server = start_server(config, port, env, log, workers=args.workers)
        try:
            wait_ready(f"http://127.0.0.1:{port}", server, log)
            wait_workers(log, args.workers)
            proc = psutil.Process(server.pid)
            rss_before = tree_rss_mib(proc)
            results: dict[str, Any] = {}
            for route in args.routes.split(","):
                path, body = ROUTES[route]
                print(f"== {route}", flush=True)
                results[route] = run_route(
                    port,
                    Requests(path, body, queries, key),
                    proc,
                    [int(c) for c in args.connections.split(",")],
                    args.seconds,
                    args.users,
                )
            rss_after = tree_rss_mib(proc)
        finally:
            server.terminate()
            server.wait(timeout=60)
            if revoke is not None:
                accounts = AccountStore.for_config(load_config(config))
                accounts.revoke_key(revoke)
                accounts.close()
    result = {
        "benchmark": "saturated throughput and half-load latency, sovra serve on loopback",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "loadavg_at_start": [round(x, 2) for x in load_at_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "site": str(args.config)
        if args.config
        else "load (etcd runbooks + 4 handbook pages, query cache off)"
        + (
            f" + {args.chunks:,} bench-corpus chunks, multilingual off, ann {args.ann}"
            if args.site == "corpus"
            else ""
        ),
        "user": args.user,
        "queries": f"{len(queries)} distinct IT ticket titles, shuffled (seed 16)",
        "routes": results,
        "workers": args.workers,
        "server_rss_mib": {"before": round(rss_before, 1), "after": round(rss_after, 1)},
        "command": "python -m bench.bench_throughput " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        json.dumps(
            {
                r: {k: v[k] for k in ("saturated_rps", "half_load", "half_load_one_pool")}
                for r, v in results.items()
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
