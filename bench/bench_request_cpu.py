"""CPU and wall time of one HTTP request, in process: POST /api/v1/search and /api/v1/ask.

The server's own app (`create_app`) over the small real index of bench_ask_cpu (the 8 runbooks
of tests/support/demo_answers.py, synced with the default config), called through Starlette's
TestClient with the demo SRE's API key, one request at a time. Per request: time.process_time
(this process, every thread: the request's worker thread, the event loop, the audit committer)
and wall time, p50/p90 after one warm-up round. Stage breakdown: the CPU spent inside
`Workspace.search` / `Workspace.ask` (retrieval, answer, audit record and receipt, drift log)
is measured around those calls; the rest of the request's CPU is the HTTP path (authentication,
rate limit, request validation, JSON rendering). The query-embedding cache is off unless
`--query-cache` (the questions repeat, so a cache would time lookups, not encodes). Logging is
set up as `sovra serve` does (plain format, INFO: the access line is part of the request's
cost) into /dev/null, so no console rendering is timed; the TestClient's own httpx log line is
the client's cost and is off. Writes bench/results/request-cpu.json, with the load average so a
busy machine shows.

    python -m bench.bench_request_cpu --requests 100
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from sovra.config import load_config
from sovra.server import ServerSettings, create_app
from sovra.server.accounts import AccountStore
from sovra.workspace import Workspace
from tests.support.answer import make_site
from tests.support.demo_answers import QUESTIONS, USER, site_files

RESULTS = Path(__file__).resolve().parent / "results" / "request-cpu.json"


class StageClock:
    """CPU (process_time) spent inside the workspace's search and ask, per request."""

    def __init__(self) -> None:
        self.ms = 0.0

    def around(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ms += (time.process_time() - started) * 1000

        return timed

    def around_stream(self, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        # ask is a generator: its work happens while the server iterates it.
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            inner = fn(*args, **kwargs)
            while True:
                started = time.process_time()
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    self.ms += (time.process_time() - started) * 1000
                yield item

        return timed


def summary(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "p50": round(statistics.median(s), 2),
        "p90": round(s[int(0.9 * (len(s) - 1))], 2),
        "mean": round(statistics.fmean(s), 2),
    }


def measure(
    client: TestClient,
    clock: StageClock,
    path: str,
    bodies: list[dict[str, Any]],
    headers: dict[str, str],
    n: int,
) -> dict[str, Any]:
    for body in bodies:  # warm-up: models, caches, first connections
        client.post(path, json=body, headers=headers).raise_for_status()
    cpu, wall, inside = [], [], []
    for i in range(n):
        body = bodies[i % len(bodies)]
        clock.ms = 0.0
        c0, w0 = time.process_time(), time.perf_counter()
        resp = client.post(path, json=body, headers=headers)
        c1, w1 = time.process_time(), time.perf_counter()
        resp.raise_for_status()
        cpu.append((c1 - c0) * 1000)
        wall.append((w1 - w0) * 1000)
        inside.append(clock.ms)
    http = [c - w for c, w in zip(cpu, inside, strict=True)]
    return {
        "requests": n,
        "cpu_ms": summary(cpu),
        "wall_ms": summary(wall),
        "stages_cpu_ms": {"workspace": summary(inside), "http_path": summary(http)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="timed requests per route")
    parser.add_argument(
        "--query-cache", action="store_true", help="keep the default query-embedding cache on"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    # As `sovra serve` configures it, before anything installs a handler of its own (the MCP
    # app would otherwise put a rich console handler on the root logger).
    sink = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sink)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        extra = "" if args.query_cache else "\n[embedding]\nquery_cache = 0\n"
        cfg_path = make_site(Path(tmp), site_files(), extra)
        config = load_config(cfg_path)
        accounts = AccountStore.in_home(config.home)
        try:
            key = accounts.create_key(USER, "bench", ("search", "ask"))[0]
        finally:
            accounts.close()
        ws = Workspace.open(config, serving=True)
        clock = StageClock()
        # The instance attributes shadow the methods the routes call; the workspace is the
        # app's own, so the timed path is the served one.
        ws.search = clock.around(ws.search)  # type: ignore[method-assign]
        ws.ask = clock.around_stream(ws.ask)  # type: ignore[method-assign]
        # One client sends every request: lift the per-key rate limit out of the way.
        settings = ServerSettings(rate_limit_per_minute=10**6, rate_limit_burst=10**6)
        headers = {"Authorization": f"Bearer {key}"}
        try:
            with TestClient(create_app(config, settings, ws)) as client:
                search = measure(
                    client,
                    clock,
                    "/api/v1/search",
                    [{"query": q, "k": 10} for q in QUESTIONS],
                    headers,
                    args.requests,
                )
                ask = measure(
                    client,
                    clock,
                    "/api/v1/ask",
                    [{"question": q, "extractive": True} for q in QUESTIONS],
                    headers,
                    args.requests,
                )
        finally:
            ws.close()
    result = {
        "search": search,
        "ask_extractive": ask,
        "query_cache": args.query_cache,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
