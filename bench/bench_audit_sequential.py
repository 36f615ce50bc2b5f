"""CPU per audit append when events arrive one at a time, as a server's requests do at low load.

Run from the repo root:  .venv/bin/python -m bench.bench_audit_sequential [--events 1000]

One SQLite audit log (tests/support/audit.py's factory, in a temporary directory), 100 warm-up
appends, then `--events` appends with a 2 ms pause between them, so the committer is idle when
each event arrives (the case where a thread per commit was started before the committer
lingered). Reports process CPU (every thread) and wall time per append, less the pauses, with
the load average, to bench/results/audit-sequential.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tests.support.audit import LogFactory, make_event

RESULTS = Path(__file__).resolve().parent / "results" / "audit-sequential.json"
PAUSE_S = 0.002


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        factory = LogFactory("sqlite", Path(tmp))
        log = factory.open()
        for i in range(100):
            log.append(make_event(i))
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(100, 100 + args.events):
            log.append(make_event(i))
            time.sleep(PAUSE_S)
        cpu_ms = (time.process_time() - cpu) * 1000 / args.events
        wall_ms = ((time.perf_counter() - wall) - PAUSE_S * args.events) * 1000 / args.events
        log.close()
        factory.cleanup()
    result = {
        "benchmark": "audit-sequential",
        "events": args.events,
        "cpu_ms_per_append": round(cpu_ms, 3),
        "wall_ms_per_append": round(wall_ms, 3),
        "loadavg_at_start": load,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
