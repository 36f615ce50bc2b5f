"""Ingest cost of each `[embedding] multilingual` option: docs/s, peak RAM, disk per 100k chunks.

Each option runs in its own subprocess (so ru_maxrss is its own): the embedder `sovra` builds
from `[embedding]` (models.embedding.build_embedder), loaded and warmed before the clock starts,
then `sovra.ingest.sync_source` (what `sovra source sync` runs) over one sample-company source
into a fresh embedded index. Disk per 100k chunks is the index directory's size (SQLite +
snapshot) divided by its chunk count, times 100,000. `routed` stores the same vectors as
`fused` (it differs only at query time), so it is not run separately.

The machine the figures in docs/benchmarks.md come from was shared with other jobs: the load
average is recorded with every run; re-run on a quiet machine for clean timings.

Usage (from the repository root):
    .venv/bin/python -m bench.bench_embed_options [--source runbooks] [--sample 60]
        [--options off only fused]
Writes bench/results/embed-options.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OPTIONS = ("off", "only", "fused")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sample_connector(source: str, sample: int, tmp: Path) -> Any:
    """A folder connector over the first `sample` markdown files of `source` (0: all of them)."""
    import shutil

    from bench.bench_ingest import COMPANY
    from sovra.config import FolderSource
    from sovra.sources import FolderConnector

    files = sorted((COMPANY / source).rglob("*.md"))
    if sample:
        files = files[:sample]
    root = tmp / source
    for f in files:
        target = root / f.relative_to(COMPANY / source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    fsrc = FolderSource(
        name=source, kind="folder", path=root, include=("**/*.md",), access=("group:staff",),
        classification="internal", residency="eu",
    )  # fmt: skip
    return FolderConnector(fsrc, root)


def run_option(option: str, source: str, sample: int) -> dict[str, Any]:
    """One option, in this process: warm the embedder, sync `source`, measure."""
    from sovra.config import EmbeddingConfig
    from sovra.index import open_index
    from sovra.ingest import StateStore, sync_source
    from sovra.models.embedding import build_embedder

    embedder = build_embedder(EmbeddingConfig(multilingual=option), lambda p: p)  # type: ignore[arg-type]
    t = time.perf_counter()
    embedder.embed(["warm up the model"] * 8)
    load_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="sovra-bench-embed-") as tmp:
        index_dir = Path(tmp) / "index"
        index = open_index(index_dir, dimension=embedder.dimension)
        state = StateStore(Path(tmp) / "state.sqlite")
        load1 = os.getloadavg()[0]
        conn = sample_connector(source, sample, Path(tmp))
        t = time.perf_counter()
        report = sync_source(conn, source, index, embedder, state)
        wall = time.perf_counter() - t
        chunks = index.count()
        index.close()
        disk = _dir_bytes(index_dir)
    docs = report.to_dict()["counts"]["added"]
    return {
        "option": option,
        "embedder": embedder.name,
        "dimension": embedder.dimension,
        "source": source,
        "sample_files": sample,
        "model_load_s": round(load_s, 2),
        "docs": docs,
        "chunks": chunks,
        "wall_s": round(wall, 2),
        "docs_per_s": round(docs / wall, 1),
        "chunks_per_s": round(chunks / wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "index_bytes": disk,
        "disk_per_100k_chunks_mb": round(disk / max(chunks, 1) * 100_000 / 2**20, 1),
        "load1_start": round(load1, 2),
        "load1_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--source", default="runbooks", choices=("runbooks", "handbook"))
    ap.add_argument("--sample", type=int, default=60, help="first N files (0: all)")
    ap.add_argument("--options", nargs="+", default=list(OPTIONS), choices=OPTIONS)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: run one option, print JSON
    ap.add_argument("--out", type=Path, default=RESULTS / "embed-options.json")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_option(args.one, args.source, args.sample)))
        return
    load_before = os.getloadavg()
    runs = []
    for option in args.options:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.bench_embed_options", "--one", option,
             "--source", args.source, "--sample", str(args.sample)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]))
    base = next((r for r in runs if r["option"] == "off"), None)
    if base:
        for r in runs:
            r["docs_per_s_vs_off"] = round(r["docs_per_s"] / base["docs_per_s"], 3)
    result = {
        "command": "python -m bench.bench_embed_options " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_avg_before": load_before,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
