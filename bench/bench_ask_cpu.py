"""CPU time of one extractive `Workspace.ask`, per question, on a small real index.

The demo questions of tests/support/demo_answers.py over its 8 runbooks, asked `--rounds`
times after one warm-up round; time.process_time per question (this process only, all
threads), with the load average so a busy machine shows. Writes bench/results/ask-cpu.json.

    python -m bench.bench_ask_cpu --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from sovra.domain import QueryOptions
from tests.support.answer import make_site, open_workspace
from tests.support.demo_answers import QUESTIONS, USER, site_files

RESULTS = Path(__file__).resolve().parent / "results" / "ask-cpu.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds over the questions")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = open_workspace(make_site(Path(tmp), site_files()))
        try:
            times: list[float] = []
            for round_ in range(args.rounds + 1):
                for q in QUESTIONS:
                    principal = ws.principal_for(USER, "ask", q)
                    started = time.process_time()
                    for _ in ws.ask(principal, q, QueryOptions(extractive=True)):
                        pass
                    if round_:  # the first round warms the model and caches
                        times.append((time.process_time() - started) * 1000)
        finally:
            ws.close()
    times.sort()
    result = {
        "questions": len(times),
        "cpu_ms_p50": round(statistics.median(times), 1),
        "cpu_ms_mean": round(statistics.fmean(times), 1),
        "cpu_ms_p90": round(times[int(0.9 * (len(times) - 1))], 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
