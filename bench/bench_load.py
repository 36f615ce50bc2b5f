"""Server under load: locust against `sovra serve` on loopback.

Builds a site from the sample company (all etcd-operator runbooks plus a few handbook pages,
synced with the real MiniLM model and the demo permission rules), starts the server in a child
process, runs locust headless (search, extractive ask, document reads, a forbidden read that
must be 404), samples the server's RSS every 5 s, and writes bench/results/load.json.

Usage (from /work/main):
    .venv/bin/python -m bench.bench_load [--users 50] [--spawn-rate 5] [--duration 300]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support.demo_site import LOAD_FILES, write_site

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "load.json"


def sovra(root: Path, *args: str) -> str:
    exe = Path(sys.executable).parent / "sovra"
    proc = subprocess.run(
        [str(exe), "--config", str(root / "sovra.toml"), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def build_site(root: Path, extra_config: str = "") -> dict[str, str]:
    cfg = write_site(root, LOAD_FILES)
    if extra_config:
        cfg.write_text(cfg.read_text(encoding="utf-8") + extra_config, encoding="utf-8")
    sovra(root, "init", "--demo-directory")
    sovra(root, "source", "sync", "--all")
    from sovra.server.accounts import AccountStore

    accounts = AccountStore.in_home(root / "data")
    try:
        return {u: accounts.create_key(u, "bench")[0] for u in ("alice", "carol")}
    finally:
        accounts.close()


def start_server(
    config: Path, port: int, env: dict[str, str], log: Path, *, workers: int = 1
) -> subprocess.Popen[bytes]:
    """The real `sovra serve` (its own logging set-up) in a child process, output to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "sovra"),
                "--config",
                str(config),
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text(encoding='utf-8')[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("server did not become ready in 300 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentiles(rows: list[dict[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        name = row["Name"]
        out[name] = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "rps": round(float(row["Requests/s"]), 2),
            **{
                f"p{p}_ms": float(row[f"{p}%"]) if row[f"{p}%"] not in ("N/A", "") else None
                for p in (50, 95, 99)
            },
            "max_ms": round(float(row["Max Response Time"]), 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=5)
    parser.add_argument("--duration", type=int, default=300, help="seconds")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env |= {
        "TOKENIZERS_PARALLELISM": "false",
        "SOVRA_SERVER_RATE_LIMIT_PER_MINUTE": "100000",
        "SOVRA_SERVER_RATE_LIMIT_BURST": "10000",
    }
    with tempfile.TemporaryDirectory(prefix="sovra-load-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        keys = build_site(root)
        print(f"site synced in {time.perf_counter() - started:.0f}s", flush=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = root / "serve.log"
        server = start_server(root / "sovra.toml", port, env, log)
        try:
            wait_ready(url, server, log)
            proc = psutil.Process(server.pid)
            rss: list[float] = [proc.memory_info().rss / 2**20]
            locust_env = env | {"SOVRA_BENCH_KEYS": ",".join(f"{u}={k}" for u, k in keys.items())}
            prefix = root / "locust"
            load = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "locust"),
                    "-f",
                    str(REPO / "bench" / "locustfile.py"),
                    "--headless",
                    "--users",
                    str(args.users),
                    "--spawn-rate",
                    str(args.spawn_rate),
                    "--run-time",
                    f"{args.duration}s",
                    "--host",
                    url,
                    "--csv",
                    str(prefix),
                    "--only-summary",
                    "--loglevel",
                    "WARNING",
                ],
                env=locust_env,
            )
            while load.poll() is None:
                time.sleep(5)
                rss.append(proc.memory_info().rss / 2**20)
            with open(f"{prefix}_stats.csv", encoding="utf-8") as fh:
                stats = percentiles(list(csv.DictReader(fh)))
            failures_path = Path(f"{prefix}_failures.csv")
            failures = failures_path.read_text(encoding="utf-8") if failures_path.exists() else ""
        finally:
            server.terminate()
            server.wait(timeout=60)
    quarter = max(1, len(rss) // 4)
    result = {
        "benchmark": "server load (locust, loopback)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "users": args.users,
        "spawn_rate": args.spawn_rate,
        "duration_s": args.duration,
        "mix": "search 6 : ask (extractive) 2 : document 2 : forbidden document (carol, must be 404) 1",
        "stats": stats,
        "failures_csv": failures.strip().splitlines()[1:],
        "server_rss_mib": {
            "before_load": round(rss[0], 1),
            "first_quarter_mean": round(sum(rss[1 : quarter + 1]) / quarter, 1),
            "last_quarter_mean": round(sum(rss[-quarter:]) / quarter, 1),
            "max": round(max(rss), 1),
            "samples": len(rss),
        },
        "command": f".venv/bin/python -m bench.bench_load --users {args.users} --spawn-rate {args.spawn_rate} --duration {args.duration}",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
