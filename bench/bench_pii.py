"""PII detection quality, sovra vs Presidio's default configuration.

Generates the seeded labelled set of `sovra eval pii` (7 faker locales × `--per-locale`
texts, half prose, half ticket-like, identifiers with valid check digits plus look-alike
distractors) and scores both detectors: precision, recall and F2 per entity, per locale and
per entity × locale. Targets: recall ≥ 0.95 and precision ≥ 0.95 on the checksum
identifiers; overall F2 above Presidio default. Also records detection throughput.

Usage (from /work/main):  .venv/bin/python -m bench.bench_pii [--per-locale 300]
Writes bench/results/pii.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from sovra.evals.pii_eval import evaluate, generate, presidio_default_predict, sovra_predict
from sovra.policy.pii import ENTITIES

RESULTS = Path(__file__).resolve().parent / "results" / "pii.json"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-locale", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()
    load_before = list(os.getloadavg())
    samples = generate(args.per_locale, args.seed)
    result: dict[str, object] = {
        "command": f".venv/bin/python -m bench.bench_pii --per-locale {args.per_locale}",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_before": load_before},
        "samples": len(samples),
        "gold_entities": sum(len(s.spans) for s in samples),
        "seed": args.seed,
    }
    for name, make in (("sovra", sovra_predict), ("presidio_default", presidio_default_predict)):
        predict = make()
        start = time.perf_counter()
        report = evaluate(predict, samples, ENTITIES).to_json()
        seconds = time.perf_counter() - start
        report["ms_per_text"] = round(1000 * seconds / len(samples), 3)
        result[name] = report
    result["machine"]["load_avg_after"] = list(os.getloadavg())  # type: ignore[index]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("sovra", "presidio_default"):
        r = result[name]
        assert isinstance(r, dict)
        print(name, "overall", r["overall"], "checksum", r["checksum_identifiers"])


if __name__ == "__main__":
    main()
