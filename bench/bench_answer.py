"""sovra's own overhead per answer: retrieval, prompt, checks and audit, generation excluded.

    .venv/bin/python -m bench.bench_answer --config demo/sovra.toml [--user alice] [--rounds 3]
        [--threads 1]

Runs on a synced workspace (default: the demo, `make run`), asking realistic runbook and
handbook questions as a demo user. Two paths, timed stage by stage with the same functions
`Answerer` calls, in the same order:

* extractive (the default answer): retrieve under the asker's filter → choose the supporting
  sentences (embeds ≤ 32 candidate sentences) → audit append with receipt;
* generative, generation excluded: retrieve → prompt assembly counted with the real Gemma
  tokenizer (context 4096) → *a precomputed answer streamed instantly* (a fixed text with
  citations, an image link and raw HTML, so the checks have work to do) → citation check and
  output hygiene → audit append.

A whole `Answerer.ask` with the precomputed generator is timed too, as a cross-check that the
stages add up. The first round warms caches and is not counted. Audit events go to a scratch
log in a temporary directory, never into the workspace's own log. Results: p50/p95 per stage
in bench/results/answer.json; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sovra.answer import Answerer, AnswerSettings, EndpointInfo, GenerationChoice
from sovra.answer.extractive import extract_answer
from sovra.answer.prompt import build_prompt
from sovra.answer.verify import verify_output
from sovra.audit.log import AuditLog
from sovra.config import load_config
from sovra.models.generation import (
    GenerationStats,
    Message,
    StreamedGeneration,
    stream_generation,
)
from sovra.models.registry import DEFAULT_GGUF_NAME, ModelRegistry, ensure_default_gguf
from sovra.workspace import Workspace

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "answer.json"
GGUF_HOME = ROOT / "cache" / "generation-home"  # shared with bench_generation
QUESTIONS = [
    "what should I do when etcd database quota is low?",
    "etcd members are down, how do I find out why?",
    "what does the etcdNoLeader alert mean?",
    "how do I fix high fsync durations on etcd?",
    "a cluster operator is degraded, what should I check?",
    "what happens when the kube API server is down?",
    "how to troubleshoot a node that is not ready?",
    "what is the impact of high etcd commit durations?",
    "how do I check certificate expiry on the cluster?",
    "what to do when a pod is crash looping?",
    "how does the company run demo day?",
    "how do engineering teams collaborate across teams?",
    "what is the policy for background checks?",
    "how do I request time off?",
    "what are the values of the company?",
    "how is the on-call rotation organised?",
]
CANNED = (
    "Defragment the etcd database on every member with etcdctl defrag [1]. "
    "Check the alarm list afterwards and disarm it [2]. "
    "See ![status](https://evil.example/p.png) and <b>this</b> [9]."
)


def precomputed(pieces: list[str], stats: GenerationStats) -> Iterator[str]:
    """Deltas whose text is ready: they stream instantly, so only sovra's work is timed."""
    yield from pieces
    stats.tokens_out = len(pieces)


class PrecomputedGenerator:
    """The Gemma tokenizer and context for prompt budgets; a fixed answer instead of decoding."""

    def __init__(self, counter: Any) -> None:
        self._counter = counter

    @property
    def model_id(self) -> str:
        return "precomputed"

    @property
    def context_length(self) -> int:
        return int(self._counter.context_length)

    @property
    def instruction_tuned(self) -> bool:
        return True

    def count_tokens(self, text: str) -> int:
        return int(self._counter.count_tokens(text))

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> StreamedGeneration:
        stats = GenerationStats("precomputed")
        return stream_generation(precomputed(CANNED.split(" "), stats), stats, stop)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        stage: {
            "p50_ms": round(statistics.median(v), 2),
            "p95_ms": round(pct(v, 0.95), 2),
            "mean_ms": round(statistics.fmean(v), 2),
            "n": len(v),
        }
        for stage, v in samples.items()
    }


class Laps:
    """Per-stage wall and CPU time (this process, all threads) for one answer.

    On a shared machine wall time includes waiting for a core; CPU time is the work itself.
    """

    def __init__(self, samples: dict[str, list[float]]) -> None:
        self.samples = samples
        self.wall0 = self.wall = time.perf_counter()
        self.cpu0 = self.cpu = time.process_time()
        self.excluded_wall = self.excluded_cpu = 0.0

    def lap(self, stage: str, excluded: bool = False) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        dw, dc = (wall - self.wall) * 1000, (cpu - self.cpu) * 1000
        self.samples.setdefault(stage, []).append(dw)
        self.samples.setdefault(f"{stage} (cpu)", []).append(dc)
        if excluded:
            self.excluded_wall += dw
            self.excluded_cpu += dc
        self.wall, self.cpu = wall, cpu

    def total(self) -> None:
        wall = (self.wall - self.wall0) * 1000 - self.excluded_wall
        cpu = (self.cpu - self.cpu0) * 1000 - self.excluded_cpu
        self.samples.setdefault("total", []).append(wall)
        self.samples.setdefault("total (cpu)", []).append(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT.parent / "demo" / "sovra.toml")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds (after 1 warm-up)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the embedding model (0: the workspace's setting)",
    )
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="the first N")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    if args.threads:
        import torch

        # One thread by default: on a shared 2-core VM two torch threads spin against other
        # jobs and a one-line query embedding went from ~25 ms to ~400 ms of CPU.
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    ws = Workspace.open(load_config(args.config))
    chunks = ws.index.count()
    if chunks == 0:
        raise SystemExit(f"the workspace of {args.config} is empty: run `sovra source sync --all`")
    scratch = tempfile.TemporaryDirectory(prefix="sovra-bench-audit-")
    # Audit appends are timed for real, but into a scratch log: benchmark questions must not
    # land in the workspace's own tamper-evident record.
    ws._audit = AuditLog.open(Path(scratch.name))
    principal = ws.principal(args.user)
    flt = ws.filter_for(principal)
    settings = AnswerSettings(k=ws.config.answer.k)
    searcher = ws.searcher()
    embedder = ws.embedder
    ensure_default_gguf(GGUF_HOME)
    gemma = ModelRegistry(GGUF_HOME).load_generator(DEFAULT_GGUF_NAME, context_length=4096)
    gen = PrecomputedGenerator(gemma)
    endpoint = EndpointInfo("bench-precomputed")

    def choose(*_: object) -> GenerationChoice:
        return GenerationChoice(endpoint, gen)

    answerer = Answerer(searcher, embedder, choose, settings)
    extractive: dict[str, list[float]] = {}
    generative: dict[str, list[float]] = {}
    whole: dict[str, list[float]] = {}
    found = 0
    for round_no in range(args.rounds + 1):
        counted = round_no > 0
        ex_s: dict[str, list[float]] = extractive if counted else {}
        gen_s: dict[str, list[float]] = generative if counted else {}
        whole_s: dict[str, list[float]] = whole if counted else {}
        for q in QUESTIONS[: args.questions]:
            # Extractive path.
            laps = Laps(ex_s)
            result = searcher.search(q, flt, k=settings.k)
            laps.lap("retrieve")
            ex = extract_answer(
                q,
                result.language,
                result.hits,
                embedder,
                use_semantic=result.vector_weight > 0,
                settings=settings.extractive,
            )
            laps.lap("extract")
            ws.record(principal.id, "ask", [h.chunk for h in result.hits[: len(ex.citations)]])
            laps.lap("audit")
            laps.total()
            found += ex.found and counted
            # Generative path, generation excluded.
            laps = Laps(gen_s)
            result = searcher.search(q, flt, k=settings.k)
            laps.lap("retrieve")
            prompt = build_prompt(
                q,
                result.hits,
                context_tokens=gen.context_length,
                max_answer_tokens=settings.max_answer_tokens,
                count_tokens=gen.count_tokens,
            )
            laps.lap("prompt")
            raw = "".join(gen.stream(prompt.messages))
            laps.lap("generation (excluded)", excluded=True)
            checked = verify_output(raw, prompt.sources, result.language)
            laps.lap("verify")
            ws.record(principal.id, "ask", [prompt.sources[n - 1].chunk for n in checked.cited])
            laps.lap("audit")
            laps.total()
            # The real answer path end to end with the precomputed generator.
            laps = Laps(whole_s)
            answer = answerer.ask(q, flt, principal=principal)
            # finish_answer would also book usage against a configured endpoint; the audit
            # append is the part that belongs to every answer.
            ws.record(principal.id, "ask", [h.chunk for h in result.hits[: len(answer.citations)]])
            laps.lap("Answerer.ask + audit")
        print(f"round {round_no}{'' if counted else ' (warm-up)'} done", flush=True)
    load_after = os.getloadavg()
    report: dict[str, Any] = {
        "config": str(args.config),
        "user": args.user,
        "embedding_threads": args.threads or "workspace setting",
        "questions": QUESTIONS[: args.questions],
        "rounds_counted": args.rounds,
        "chunks_in_index": chunks,
        "chunks_visible_to_user": ws.index.count(flt),
        "extractive_found": found,
        "extractive": summary(extractive),
        "generative_without_generation": summary(generative),
        "answerer_end_to_end_precomputed": summary(whole),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        "| path | stage | wall p50 | wall p95 | CPU p50 | CPU p95 |\n|---|---|---:|---:|---:|---:|"
    )
    for path in ("extractive", "generative_without_generation", "answerer_end_to_end_precomputed"):
        stages = report[path]
        for stage, v in stages.items():
            if stage.endswith(" (cpu)"):
                continue
            c = stages[f"{stage} (cpu)"]
            print(
                f"| {path} | {stage} | {v['p50_ms']:.1f} ms | {v['p95_ms']:.1f} ms"
                f" | {c['p50_ms']:.1f} ms | {c['p95_ms']:.1f} ms |"
            )
    print(f"load average before {load_before}, after {load_after}; raw: {args.out}")
    ws.close()
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
