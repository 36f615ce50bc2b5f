"""Embedded generation benchmark: sovra's LlamaCppGenerator beside a plain llama-cpp-python call.

    .venv/bin/python -m bench.bench_generation [--threads 2] [--max-tokens 64] [--repeats 1]

Model: the packaged Gemma 3 270M base (Q4_K_M), assembled into bench/cache/generation-home. For
each prompt (retrieval-style: numbered runbook excerpts from ../shared/data/company/runbooks plus
a question, sized to ~500 and ~1500 tokens with the model's tokenizer) it measures time to first
token, decode tokens/s and total time for

* sovra:  `LlamaCppGenerator.stream(messages)` (GGUF chat template, own stop/UTF-8 handling), and
* plain:  `llama_cpp.Llama(...).create_chat_completion(messages, stream=True)` on the same prompt,

greedy (temperature 0), same threads and context, KV cache cleared before every run, the two
interleaved so machine load hits both alike. Load time is measured for `Llama(...)`, for
`LlamaCppGenerator(...)`, and for `ModelRegistry.load_generator` (adds the sha256 check).
Raw results go to bench/results/generation.json; a markdown table is printed for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from sovra.models.llamacpp import LlamaCppGenerator, chat_template, read_gguf_metadata
from sovra.models.registry import DEFAULT_GGUF_NAME, ModelRegistry, ensure_default_gguf

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "generation.json"
HOME = ROOT / "cache" / "generation-home"
RUNBOOKS = ROOT.parent.parent / "shared" / "data" / "company" / "runbooks" / "alerts"
CONTEXT = 4096
SYSTEM = (
    "Answer the question using only the numbered sources below. Cite sources as [n]. "
    "If the sources do not contain the answer, say so."
)
QUESTIONS = [
    "What should I do when the etcd database quota is low?",
    "How do I find out why a cluster operator is degraded?",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_messages(
    gen: LlamaCppGenerator, question: str, target: int, offset: int
) -> list[dict[str, str]]:
    """System + user message whose rendered prompt is about `target` tokens."""
    files = sorted(RUNBOOKS.rglob("*.md"))
    if not files:
        raise SystemExit(f"no runbooks under {RUNBOOKS}; the benchmark needs ../shared/data")
    parts: list[str] = []
    used = gen.count_tokens(SYSTEM + question) + 40
    i = offset
    while used < target:
        text = " ".join(files[i % len(files)].read_text(encoding="utf-8").split())
        room = target - used
        n = gen.count_tokens(text)
        if n > room:  # trim the last source to land near the target
            text = text[: max(200, int(len(text) * room / n))]
            n = gen.count_tokens(text)
        parts.append(f"[{len(parts) + 1}] {files[i % len(files)].stem}: {text}")
        used += n + 8
        i += 1
    user = "Sources:\n" + "\n\n".join(parts) + f"\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def run_sovra(
    gen: LlamaCppGenerator, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, Any]:
    gen.reset()
    started, cpu = time.perf_counter(), time.process_time()
    generation = gen.stream(messages, max_tokens=max_tokens, temperature=0.0)
    text = "".join(generation)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    s = generation.stats
    return {
        "tokens_in": s.tokens_in,
        "tokens_out": s.tokens_out,
        "ttft_s": s.first_token_s,
        "total_s": wall,
        "cpu_s": cpu,
        "decode_tok_s": s.tokens_per_s,
        "finish_reason": s.finish_reason,
        "text": text,
    }


def run_plain(llm: Any, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    llm.reset()
    started, cpu = time.perf_counter(), time.process_time()
    first: float | None = None
    pieces: list[str] = []
    finish = ""
    for chunk in llm.create_chat_completion(
        messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True
    ):
        choice = chunk["choices"][0]
        content = choice["delta"].get("content")
        if content:
            if first is None:
                first = time.perf_counter() - started
            pieces.append(content)
        finish = choice.get("finish_reason") or finish
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu
    text = "".join(pieces)
    # The stream carries no usage: count the produced text with the model's tokenizer.
    tokens_out = len(llm.tokenize(text.encode(), add_bos=False)) if text else 0
    decode = total - (first or 0.0)
    return {
        "tokens_out": tokens_out,
        "ttft_s": first,
        "total_s": total,
        "cpu_s": cpu,
        "decode_tok_s": tokens_out / decode if decode > 0 and tokens_out else 0.0,
        "finish_reason": finish,
        "text": text,
    }


def wrapper_cost(
    gen: LlamaCppGenerator, llm: Any, messages: list[dict[str, str]], text: str
) -> dict[str, float]:
    """sovra's own work, timed apart from llama.cpp's: rendering + tokenising the prompt, and the
    per-token path of the decode loop (EOG check, detokenise, UTF-8, stop-sequence filter) replayed
    over the answer's tokens. CPU-bound and short, so far less sensitive to machine load than the
    end-to-end timings."""
    import codecs

    import llama_cpp

    from sovra.models.generation import StopFilter

    reps = 20
    started = time.perf_counter()
    for _ in range(reps):
        gen.prompt_tokens(messages)
    prompt_ms = (time.perf_counter() - started) / reps * 1000
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    started = time.perf_counter()
    for _ in range(reps):
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopFilter(["</source>", "\n\nQuestion:"])
        for token in ids:
            llama_cpp.llama_vocab_is_eog(vocab, token)
            stops.feed(decoder.decode(llm.detokenize([token])))
    per_token_us = (time.perf_counter() - started) / reps / max(1, len(ids)) * 1e6
    return {"prompt_render_tokenize_ms": prompt_ms, "per_token_us": per_token_us}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1500])
    ap.add_argument("--out", type=Path, default=RESULTS, help="raw results file")
    args = ap.parse_args()

    from llama_cpp import Llama
    from llama_cpp import __version__ as llama_version
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    load_before = os.getloadavg()
    entry = ensure_default_gguf(HOME)
    registry = ModelRegistry(HOME)
    path = registry.resolve(entry)

    loads: dict[str, list[float]] = {"plain": [], "sovra": [], "sovra_registry": []}
    for _ in range(3):
        t = time.perf_counter()
        llm = Llama(
            model_path=str(path),
            n_ctx=CONTEXT,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            verbose=False,
        )
        loads["plain"].append(time.perf_counter() - t)
        llm.close()
        t = time.perf_counter()
        g = LlamaCppGenerator(path, context_length=CONTEXT, threads=args.threads)
        loads["sovra"].append(time.perf_counter() - t)
        g.close()
        t = time.perf_counter()
        g = registry.load_generator(DEFAULT_GGUF_NAME, context_length=CONTEXT, threads=args.threads)
        loads["sovra_registry"].append(time.perf_counter() - t)
        g.close()

    # The packaged GGUF has no chat template: give plain llama-cpp-python the same Jinja template
    # sovra uses (otherwise it falls back to the llama-2 format and the prompts differ).
    source, _ = chat_template(read_gguf_metadata(path))
    handler = Jinja2ChatFormatter(template=source, eos_token="<eos>", bos_token="<bos>")
    plain = Llama(
        model_path=str(path),
        n_ctx=CONTEXT,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
        chat_handler=handler.to_chat_handler(),
    )
    sovra = LlamaCppGenerator(
        path, name=DEFAULT_GGUF_NAME, context_length=CONTEXT, threads=args.threads
    )
    warm = [{"role": "user", "content": "Hello"}]
    run_plain(plain, warm, 8)
    run_sovra(sovra, warm, 8)

    runs: list[dict[str, Any]] = []
    for size in args.sizes:
        for qi, question in enumerate(QUESTIONS):
            messages = build_messages(sovra, question, size, offset=qi * 7 + size)
            for rep in range(args.repeats):
                # Alternate who goes first so a load spike does not always hit the same side.
                order = ("plain", "sovra") if (rep + qi) % 2 == 0 else ("sovra", "plain")
                result: dict[str, Any] = {"size": size, "question": qi, "repeat": rep}
                for side in order:
                    r = (
                        run_plain(plain, messages, args.max_tokens)
                        if side == "plain"
                        else run_sovra(sovra, messages, args.max_tokens)
                    )
                    result[side] = r
                result["same_text"] = result["plain"]["text"] == result["sovra"]["text"]
                result["sovra_own"] = wrapper_cost(sovra, plain, messages, result["sovra"]["text"])
                result["plain"]["tokens_in"] = result["sovra"]["tokens_in"]
                runs.append(result)
                s, p = result["sovra"], result["plain"]
                print(
                    f"~{size:>4} tok q{qi} r{rep}: in={s['tokens_in']} out={s['tokens_out']}/"
                    f"{p['tokens_out']}  ttft sovra {s['ttft_s']:.3f}s plain {p['ttft_s']:.3f}s  "
                    f"decode sovra {s['decode_tok_s']:.1f} plain {p['decode_tok_s']:.1f} tok/s  "
                    f"same_text={result['same_text']}",
                    flush=True,
                )

    summary: list[dict[str, Any]] = []
    for size in args.sizes:
        sel = [r for r in runs if r["size"] == size]
        row: dict[str, Any] = {
            "size": size,
            "tokens_in": median([r["sovra"]["tokens_in"] for r in sel]),
            "runs": len(sel),
            "same_text": all(r["same_text"] for r in sel),
            "sovra_own": {
                k: median([r["sovra_own"][k] for r in sel])
                for k in ("prompt_render_tokenize_ms", "per_token_us")
            },
        }
        for side in ("sovra", "plain"):
            row[side] = {
                k: median([r[side][k] for r in sel if r[side][k] is not None])
                for k in ("ttft_s", "decode_tok_s", "total_s", "cpu_s", "tokens_out")
            }
            row[side]["prompt_tok_s"] = (
                row["tokens_in"] / row[side]["ttft_s"] if row[side]["ttft_s"] else 0.0
            )
        summary.append(row)

    result = {
        "benchmark": "generation",
        "command": "python -m bench.bench_generation "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "out"
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "python": platform.python_version(),
            "llama_cpp_python": llama_version,
        },
        "model": {
            "name": entry.name,
            "file": path.name,
            "sha256": entry.sha256,
            "size_bytes": entry.size_bytes,
            "quantisation": entry.quantisation,
            "instruction_tuned": entry.instruction_tuned,
        },
        "threads": args.threads,
        "context": CONTEXT,
        "max_tokens": args.max_tokens,
        "load_s": {k: {"median": median(v), "all": v} for k, v in loads.items()},
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print()
    print(
        f"load: plain Llama() {median(loads['plain']):.3f} s, LlamaCppGenerator "
        f"{median(loads['sovra']):.3f} s, registry.load_generator (with sha256) "
        f"{median(loads['sovra_registry']):.3f} s"
    )
    print()
    print(
        "| prompt (tokens) | side | TTFT p50 | prompt tok/s | decode tok/s | total p50 "
        "| CPU time p50 | tokens out |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in summary:
        for side in ("sovra", "plain"):
            r = row[side]
            label = (
                "sovra `LlamaCppGenerator.stream`"
                if side == "sovra"
                else "plain `create_chat_completion`"
            )
            print(
                f"| {row['tokens_in']:.0f} | {label} | {r['ttft_s']:.3f} s | {r['prompt_tok_s']:.0f} | "
                f"{r['decode_tok_s']:.1f} | {r['total_s']:.2f} s | {r['cpu_s']:.2f} s "
                f"| {r['tokens_out']:.0f} |"
            )
    print(f"\nresults: {args.out}; load average {load_before} → {os.getloadavg()}")


if __name__ == "__main__":
    main()
