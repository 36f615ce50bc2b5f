"""Policy decision latency (target p50 ≤ 0.5 ms per decision).

Three measurements on the shipped default policy set, each after a warm-up:

* `engine.ask`: one `PolicyEngine.decide` for `ask` on a source (entities built per call, as
  a request handler does);
* `engine.send`: one `send_to_endpoint` decision with its full context;
* `router.decide`: a whole routing decision over 3 registered endpoints and 8 chunks (one
  batched Cedar call; PII scan excluded, it is measured by bench_pii).

Usage (from /work/main):  .venv/bin/python -m bench.bench_policy [--n 5000]
Writes bench/results/policy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from sovra.config import EndpointConfig
from sovra.domain import Chunk, ClassificationScale, Principal
from sovra.policy import PolicyEngine, Request, Router, source_entity, user_entity
from sovra.policy.entities import endpoint_entity
from sovra.policy.router import send_context

RESULTS = Path(__file__).resolve().parent / "results" / "policy.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(fn: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(min(500, n)):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    samples.sort()
    return {
        "n": n,
        "p50_ms": round(statistics.median(samples), 4),
        "p90_ms": round(samples[int(0.9 * n)], 4),
        "p99_ms": round(samples[int(0.99 * n)], 4),
        "mean_ms": round(statistics.fmean(samples), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    from sovra.config import FolderSource

    engine = PolicyEngine.default()
    scale = ClassificationScale()
    bob = Principal("bob", frozenset({"staff", "it-support"}))
    source = FolderSource(
        name="tickets",
        kind="folder",
        path=Path("."),
        access=("group:it-support",),
        classification="confidential",
        residency="eu",
    )
    endpoints = [
        EndpointConfig(
            name="local", kind="embedded", model="m", pii="allow", max_classification="confidential"
        ),
        EndpointConfig(
            name="eu",
            kind="openai",
            model="m",
            base_url="https://eu.example/v1",
            hosting="regional_cloud",
            jurisdiction="eu-fr",
            pii="redact",
            max_classification="confidential",
        ),
        EndpointConfig(
            name="us",
            kind="openai",
            model="m",
            base_url="https://us.example/v1",
            hosting="foreign_cloud",
            jurisdiction="us",
            pii="allow",
            max_classification="restricted",
        ),
    ]
    chunks = [
        Chunk(
            f"tickets:{i}#0",
            f"tickets:{i}",
            "tickets",
            0,
            "text",
            "t",
            "u",
            (),
            "en",
            ("group:it-support",),
            "confidential" if i % 2 else "internal",
            "eu",
        )
        for i in range(8)
    ]
    router = Router(engine, endpoints, scale, home_region="eu-de", pii_scan=lambda t: False)

    def ask() -> object:
        return engine.decide(Request(user_entity(bob), "ask", source_entity(source)))

    def send() -> object:
        ctx = send_context(scale, "confidential", ("eu",), "eu-fr", contains_pii=True)
        return engine.decide(
            Request(user_entity(bob), "send_to_endpoint", endpoint_entity(endpoints[1], scale), ctx)
        )

    def route() -> object:
        return router.decide(bob, chunks, question="why is the VPN down?")

    assert ask().allowed and send().allowed  # type: ignore[attr-defined]
    assert route().chosen.name == "local"  # type: ignore[attr-defined]
    result = {
        "command": f".venv/bin/python -m bench.bench_policy --n {args.n}",
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "load_avg_before": list(os.getloadavg()),
            "python": platform.python_version(),
        },
        "policy_version": engine.version,
        "policies": len(engine.policy_set.policies),
        "engine.ask": measure(ask, args.n),
        "engine.send": measure(send, args.n),
        "router.decide (3 endpoints, 8 chunks)": measure(route, args.n),
    }
    result["machine"]["load_avg_after"] = list(os.getloadavg())  # type: ignore[index]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
