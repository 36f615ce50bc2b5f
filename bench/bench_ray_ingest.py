"""Ray ingestion throughput: docs/s of `sync_source_ray` with 1 and 2 workers vs the local sync.

Target (issue 18 §4): Ray's overhead ≤ 15 % against the local pipeline on this machine.

Corpus: the first `--docs` markdown files of the sample company handbook (copied to a temp
folder), a fresh index and state per run. Workers: 1 = a local Ray with 1 CPU (one parse/chunk
task at a time beside the embedding actor); 2 = `ray.cluster_utils.Cluster`, a head and one
extra node of 1 CPU each. The clock covers the sync call only — Ray's start is reported apart;
the Ray sync's time includes starting its embedding actor (the model loads inside it), the
local sync's model is loaded before the clock starts, so the ratio is a ceiling on overhead.

Writes bench/results/ray-ingest.json. `--model onnx` (default) is what `sovra source sync`
embeds with out of the box: `[embedding]`'s defaults (MiniLM on ONNX Runtime, USE routed beside
it), one intra-op thread per CPU. `--model torch` is the same MiniLM on PyTorch; `--model fake`
(hash vectors) measures Ray's own cost without a model. `model_load_s` is how long building and
warming the embedder takes in this process: a Ray sync pays about that inside its actor, the
local sync does not (its model is loaded before the clock).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _embedder_factory(model: str) -> Callable[[], Any]:
    if model == "fake":
        from tests.support.ingest import FakeEmbedder

        return FakeEmbedder
    if model == "torch":
        from sovra.models import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder
    import functools

    from sovra.config import EmbeddingConfig
    from sovra.models.embedding import build_embedder

    return functools.partial(
        build_embedder, EmbeddingConfig(), lambda p: p, cache_dir=ROOT / "bench" / "cache" / "onnx"
    )


def _one(engine: str, corpus: Path, factory: Callable[[], Any], work: Path) -> dict[str, Any]:
    from sovra.ingest import StateStore, sync_source
    from sovra.ingest.ray_engine import sync_source_ray
    from tests.support.ingest import MemoryIndex, connector

    t = time.perf_counter()
    embedder = factory()
    embedder.embed(["warm up the model"] * 8)
    load_s = time.perf_counter() - t
    index, state = MemoryIndex(), StateStore(work / f"state-{engine}-{time.time_ns()}.db")
    t = time.perf_counter()
    if engine == "local":
        report = sync_source(connector(corpus), "hb", index, embedder, state)
    else:
        report = sync_source_ray(
            connector(corpus), "hb", index, embedder, state, embedder_factory=factory
        )
    secs = time.perf_counter() - t
    assert report.ok and not report.failed, report.to_dict()
    docs = len(report.added)
    return {
        "docs": docs,
        "chunks": report.chunks_written,
        "seconds": round(secs, 3),
        "docs_per_s": round(docs / secs, 2),
        "model_load_s": round(load_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--docs", type=int, default=300, help="handbook files to ingest")
    ap.add_argument("--model", choices=("onnx", "torch", "fake"), default="onnx")
    ap.add_argument("--out", type=Path, default=RESULTS / "ray-ingest.json")
    args = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from tests.support.ingest import copy_tree

    factory = _embedder_factory(args.model)
    work = Path(tempfile.mkdtemp(prefix="sovra-bench-ray-"))
    corpus = work / "hb"
    copy_tree("handbook/content", corpus, limit=args.docs)
    out: dict[str, Any] = {"model": args.model, "cpus": os.cpu_count()}
    out["local"] = _one("local", corpus, factory, work)

    t = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    out["ray_start_s_1"] = round(time.perf_counter() - t, 2)
    out["ray_1_worker"] = _one("ray", corpus, factory, work)
    ray.shutdown()

    t = time.perf_counter()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    out["ray_start_s_2"] = round(time.perf_counter() - t, 2)
    try:
        out["ray_2_workers"] = _one("ray", corpus, factory, work)
    finally:
        ray.shutdown()
        cluster.shutdown()

    local = out["local"]["docs_per_s"]
    for key in ("ray_1_worker", "ray_2_workers"):
        out[key]["ratio_to_local"] = round(out[key]["docs_per_s"] / local, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
