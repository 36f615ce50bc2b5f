"""Ingest throughput on the sample company data.

Targets: BM25-only ingest ≥ 5,000 docs/s; full pipeline (parse → language → chunk → embed →
index → state) ≥ 80% of the bare model's encode throughput on the very same chunk texts;
report peak memory.

Every phase runs `sovra.ingest.sync_source` — the code `sovra source sync` runs — on the real
connectors (folder for handbook/runbooks, records for the tickets CSV) from
../shared/data/company (read-only), into a fresh index and state store in a temp dir. Each
phase is its own subprocess so its peak RSS (ru_maxrss) is its own:

* bm25: `embedder=None`, per source, `--repeats` times (best and median reported).
* full: the packaged MiniLM (model loaded and warmed before the clock starts), per source in
  `--full-sources`, on `--runtime onnx` (the shipped default, `OnnxEmbedder` with its export
  cached in bench/cache/onnx) or `torch` (`SentenceTransformerEmbedder`). The texts the
  pipeline hands the model are recorded (a pass-through wrapper), then the same embedder
  encodes exactly those texts in one call (sorted by length inside, batches of 64) — the
  ceiling the pipeline is held to.

Usage (from /work/main):  .venv/bin/python -m bench.bench_ingest [--profile]
Writes bench/results/ingest.json (and bench/cache/ingest-profile-*.txt with --profile).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
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
DATA = Path(os.environ.get("SOVRA_SHARED_DATA", ROOT.parent / "shared" / "data"))
COMPANY = DATA / "company"
RESULTS = ROOT / "bench" / "results"
PROFILES = ROOT / "bench" / "cache"
DIM = 384
SOURCES = ("tickets", "runbooks", "handbook")
DECLARED = {"language": ""}
"""`--declared-language`: every source declared in that language (`[[sources]] language`), so
sync skips detection; empty = detect per document (the default of a source)."""


def connector(name: str) -> Any:
    from sovra.config import FolderSource, RecordsSource
    from sovra.sources import FolderConnector, RecordsConnector

    if name == "tickets":
        path = COMPANY / "tickets" / "it_tickets.csv"
        src = RecordsSource(
            name="tickets",
            kind="records",
            path=path,
            format="csv",
            title_field="title",
            text_fields=("body",),
            metadata_fields=(
                "ticket_type",
                "category",
                "sub_category1",
                "sub_category2",
                "business_service",
                "urgency",
                "impact",
            ),
            access=("group:it-support",),
            classification="confidential",
            residency="eu",
        )
        return RecordsConnector(src, path)
    if name in ("handbook", "runbooks"):
        path = COMPANY / name
        fsrc = FolderSource(
            name=name,
            kind="folder",
            path=path,
            include=("**/*.md",),
            access=("group:staff",) if name == "handbook" else ("group:sre",),
            classification="internal",
            residency="eu",
        )
        return FolderConnector(fsrc, path)
    raise SystemExit(f"unknown source {name!r}; use one of {', '.join(SOURCES)}")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def one_sync(name: str, embedder: Any, profile: Path | None = None) -> dict[str, Any]:
    """One fresh sync of source `name` into a temp index; wall time and the report."""
    from sovra.index import open_index
    from sovra.ingest import StateStore, SyncOptions, sync_source

    with tempfile.TemporaryDirectory(prefix="sovra-bench-ingest-") as tmp:
        index = open_index(Path(tmp) / "index", dimension=DIM)
        state = StateStore(Path(tmp) / "state.sqlite")
        conn = connector(name)
        prof = None
        if profile is not None:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        cpu = time.process_time()
        t = time.perf_counter()
        options = SyncOptions(language=DECLARED["language"] or None)
        report = sync_source(conn, name, index, embedder, state, options=options)
        wall = time.perf_counter() - t
        cpu = time.process_time() - cpu
        if prof is not None:
            import io
            import pstats

            prof.disable()
            buf = io.StringIO()
            st = pstats.Stats(prof, stream=buf)
            st.sort_stats("tottime").print_stats(25)
            st.sort_stats("cumulative").print_stats(35)
            assert profile is not None
            profile.write_text(buf.getvalue())
        chunks = index.count()
        index.close()
    d = report.to_dict()
    docs = d["counts"]["added"]
    return {
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 4),
        "load1": round(os.getloadavg()[0], 2),
        "docs": docs,
        "failed": d["counts"]["failed"],
        "chunks": chunks,
        "docs_per_s": round(docs / wall, 1),
        "chunks_per_s": round(chunks / wall, 1),
        "timings_s": d["timings_s"],
    }


def phase_bm25(sources: list[str], repeats: int, profile: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sources:
        runs = [one_sync(name, None) for _ in range(repeats)]
        best = min(runs, key=lambda r: r["wall_s"])
        out[name] = {
            "docs": best["docs"],
            "failed": best["failed"],
            "chunks": best["chunks"],
            "best": best,
            "median_docs_per_s": round(statistics.median(r["docs_per_s"] for r in runs), 1),
            "all_docs_per_s": [r["docs_per_s"] for r in runs],
        }
        if profile:
            PROFILES.mkdir(parents=True, exist_ok=True)
            one_sync(name, None, PROFILES / f"ingest-profile-bm25-{name}.txt")
    out["peak_rss_mb"] = peak_rss_mb()
    return out


class Recording:
    """Pass-through embedder that keeps the texts it was asked to embed (negligible cost)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.sizes: list[int] = []
        self.calls = 0
        self.seconds = 0.0

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def dimension(self) -> int:
        return int(self.inner.dimension)

    @property
    def languages(self) -> frozenset[str]:
        return frozenset(self.inner.languages)

    def embed(self, texts: Any) -> Any:
        self.texts.extend(texts)
        self.sizes.append(len(texts))
        self.calls += 1
        t = time.perf_counter()
        v = self.inner.embed(texts)
        self.seconds += time.perf_counter() - t
        return v


def padding(model: Any, texts: list[str], sizes: list[int], batch: int = 64) -> dict[str, Any]:
    """Padded tokens the model processes: the pipeline's calls vs one call over all texts.

    sentence-transformers sorts by length within ONE encode call and pads each batch of 64
    to its longest text; so many small calls pad far more than one big one. Counted with
    the model's tokenizer (truncated at max_seq_length), no model run needed.
    """
    tok = model.tokenizer
    limit = int(model.max_seq_length)
    enc = tok(texts, add_special_tokens=True, truncation=True, max_length=limit)
    lens = [len(ids) for ids in enc["input_ids"]]

    def cost(groups: list[list[int]]) -> tuple[int, int]:
        linear = quadratic = 0
        for g in groups:
            g = sorted(g, reverse=True)
            for i in range(0, len(g), batch):
                b = g[i : i + batch]
                linear += len(b) * b[0]
                quadratic += len(b) * b[0] * b[0]
        return linear, quadratic

    groups, pos = [], 0
    for n in sizes:
        groups.append(lens[pos : pos + n])
        pos += n
    pipe_lin, pipe_quad = cost(groups)
    one_lin, one_quad = cost([lens])
    real = sum(lens)
    return {
        "real_tokens": real,
        "pipeline_padded_tokens": pipe_lin,
        "one_call_padded_tokens": one_lin,
        "pipeline_vs_one_call_tokens": round(pipe_lin / max(1, one_lin), 3),
        "pipeline_vs_one_call_attention": round(pipe_quad / max(1, one_quad), 3),
        "mean_texts_per_call": round(statistics.fmean(sizes), 1) if sizes else 0,
    }


def phase_full(sources: list[str], profile: bool, runtime: str = "onnx") -> dict[str, Any]:
    from sovra.models.embedding import OnnxEmbedder, SentenceTransformerEmbedder

    torch_embedder = SentenceTransformerEmbedder()
    inner: Any = torch_embedder
    if runtime == "onnx":
        inner = OnnxEmbedder(cache_dir=PROFILES / "onnx")
    t = time.perf_counter()
    inner.embed(["warm up the model"] * 8)
    load_s = time.perf_counter() - t
    model = torch_embedder._load()  # its tokenizer counts the padding
    PROFILES.mkdir(parents=True, exist_ok=True)
    import torch

    out: dict[str, Any] = {
        "runtime": getattr(inner, "runtime", "torch"),
        "model_load_s": round(load_s, 3),
        "torch_threads": torch.get_num_threads(),
    }
    for name in sources:
        rec = Recording(inner)
        prof = PROFILES / f"ingest-profile-full-{name}.txt" if profile else None
        r = one_sync(name, rec, prof)
        texts = rec.texts
        cpu = time.process_time()
        t = time.perf_counter()
        inner.embed(texts)  # one call: sorted by length over all texts
        bare_s = time.perf_counter() - t
        cpu = time.process_time() - cpu
        bare_cps = len(texts) / bare_s
        r["embed_calls"] = rec.calls
        r["embed_seconds_in_pipeline"] = round(rec.seconds, 3)
        r["bare_encode"] = {
            "texts": len(texts),
            "seconds": round(bare_s, 3),
            "cpu_s": round(cpu, 3),
            "load1": round(os.getloadavg()[0], 2),
            "chunks_per_s": round(bare_cps, 1),
            "mean_chars": round(sum(map(len, texts)) / max(1, len(texts)), 1),
        }
        r["pipeline_vs_bare"] = round(r["chunks_per_s"] / bare_cps, 3)
        r["padding"] = padding(model, texts, rec.sizes)
        out[name] = r
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem_kb = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "gpu": "none",
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--bm25-sources", default=",".join(SOURCES))
    ap.add_argument("--full-sources", default="tickets,runbooks")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also write cProfile top lists")
    ap.add_argument("--runtime", choices=("onnx", "torch"), default="onnx")
    ap.add_argument("--declared-language", default="", help="e.g. en: sources declare it")
    ap.add_argument("--out", default=str(RESULTS / "ingest.json"))
    ap.add_argument("--phase", choices=("bm25", "full"), help=argparse.SUPPRESS)
    ap.add_argument("--phase-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    DECLARED["language"] = args.declared_language

    if args.phase:
        if args.phase == "bm25":
            res = phase_bm25(args.bm25_sources.split(","), args.repeats, args.profile)
        else:
            res = phase_full(args.full_sources.split(","), args.profile, args.runtime)
        Path(args.phase_out).write_text(json.dumps(res, indent=2))
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report: dict[str, Any] = {
        "command": ".venv/bin/python -m bench.bench_ingest " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
        "declared_language": args.declared_language or None,
    }
    for phase in ("bm25", "full"):
        sources = args.bm25_sources if phase == "bm25" else args.full_sources
        if not sources:
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            out = Path(fh.name)
        cmd = [
            sys.executable,
            "-m",
            "bench.bench_ingest",
            "--phase",
            phase,
            "--phase-out",
            str(out),
        ]
        cmd += ["--bm25-sources", args.bm25_sources, "--full-sources", args.full_sources]
        cmd += ["--repeats", str(args.repeats), "--runtime", args.runtime]
        cmd += ["--declared-language", args.declared_language]
        cmd += ["--profile"] if args.profile else []
        print(f"[{phase}] {sources} ...", flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            print(proc.stderr[-6000:], file=sys.stderr)
            report[phase] = {"error": proc.stderr[-2000:]}
        else:
            report[phase] = json.loads(out.read_text())
            print(f"  done in {time.perf_counter() - t:.1f}s", flush=True)
        out.unlink(missing_ok=True)
    report["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_s"] = round(time.time() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(markdown(report))


def print_table(report: dict[str, Any]) -> None:
    bm = report.get("bm25", {})
    if "error" not in bm:
        print("\nBM25-only: source | docs | chunks | best docs/s | median docs/s | chunks/s")
        for name, r in bm.items():
            if name == "peak_rss_mb":
                continue
            print(
                f"{name} | {r['docs']} | {r['chunks']} | {r['best']['docs_per_s']} | "
                f"{r['median_docs_per_s']} | {r['best']['chunks_per_s']}"
            )
        print(f"peak RSS {bm.get('peak_rss_mb')} MB")
    full = report.get("full", {})
    if "error" not in full:
        print("\nFull: source | docs | chunks | pipeline chunks/s | bare chunks/s | ratio")
        for name, r in full.items():
            if not isinstance(r, dict):
                continue
            print(
                f"{name} | {r['docs']} | {r['chunks']} | {r['chunks_per_s']} | "
                f"{r['bare_encode']['chunks_per_s']} | {r['pipeline_vs_bare']}"
            )
        print(f"peak RSS {full.get('peak_rss_mb')} MB")


def markdown(report: dict[str, Any]) -> str:
    """The tables for docs/benchmarks.md, straight from the JSON."""
    lines: list[str] = []
    bm = report.get("bm25", {})
    if bm and "error" not in bm:
        lines += [
            "| source (BM25-only, `embedder=None`) | docs | chunks | docs/s best (median) "
            "| chunks/s | wall s | CPU s | load1 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in bm.items():
            if not isinstance(r, dict):
                continue
            b = r["best"]
            lines.append(
                f"| {name} | {r['docs']} | {r['chunks']} | {b['docs_per_s']:.0f} "
                f"({r['median_docs_per_s']:.0f}) | {b['chunks_per_s']:.0f} | {b['wall_s']:.2f} "
                f"| {b['cpu_s']:.2f} | {b['load1']} |"
            )
        lines.append(f"\nPeak RSS of the BM25-only process: {bm['peak_rss_mb']:.0f} MB.\n")
    full = report.get("full", {})
    if full and "error" not in full:
        lines += [
            "| source (full pipeline, MiniLM) | docs | chunks | pipeline chunks/s (wall s, CPU s) "
            "| bare encode chunks/s (wall s, CPU s) | pipeline / bare | model share of pipeline "
            "| padded tokens: pipeline calls / one call |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in full.items():
            if not isinstance(r, dict):
                continue
            b = r["bare_encode"]
            share = r["embed_seconds_in_pipeline"] / r["wall_s"]
            lines.append(
                f"| {name} | {r['docs']} | {r['chunks']} | {r['chunks_per_s']:.1f} "
                f"({r['wall_s']:.0f}, {r['cpu_s']:.0f}) | {b['chunks_per_s']:.1f} "
                f"({b['seconds']:.0f}, {b['cpu_s']:.0f}) | {r['pipeline_vs_bare']:.2f} "
                f"| {share:.1%} | {r['padding']['pipeline_vs_one_call_tokens']:.2f}× |"
            )
        lines.append(f"\nPeak RSS of the full-pipeline process: {full['peak_rss_mb']:.0f} MB.\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
