"""Sync the hostile-files sources in a process of their own and report what happened.

usage: python hostile_worker.py SOVRA_TOML OUT_JSON
Writes the sync reports, the searches for every valid marker and for the secret outside the
sources, wall and CPU time and peak RSS (VmHWM) as JSON. BM25-only: no model loaded.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.support

from sovra.config import load_config
from sovra.domain import Principal, SearchFilter
from sovra.index import open_index
from sovra.ingest import StateStore, sync_source
from sovra.sources import connector_for

DIMENSION = 384


def main() -> None:
    cfg_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    markers = json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
    config = load_config(cfg_path)
    t0 = time.perf_counter()
    index = open_index(config.home / "index", dimension=DIMENSION)
    state = StateStore(config.home / "state.db")
    reports = {}
    try:
        for src in config.sources:
            report = sync_source(connector_for(src, config), src.name, index, None, state)
            data = report.to_dict()
            data["failed"] = dict(report.failed)  # uncapped, for the test's bookkeeping
            data["skipped"] = dict(report.skipped)
            data["added"] = list(report.added)
            reports[src.name] = data
        sync_s = time.perf_counter() - t0
        flt = SearchFilter.for_principal(Principal("tester"), region=config.workspace.region)
        found = {}
        for word in [*markers, "exfiltratedsecretword", "payroll"]:
            hits = index.search_text(word, "en", 5, flt)
            found[word] = sorted({h.chunk.document_id for h in hits})
        chunks = index.count()
    finally:
        index.close()
        state.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it reports the pytest parent's size
    # (the forked child shares it until exec) whenever the parent is the bigger of the two.
    status = Path("/proc/self/status").read_text(encoding="ascii")
    peak_kib = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1])
    out_path.write_text(
        json.dumps(
            {
                "reports": reports,
                "found": found,
                "chunks": chunks,
                "sync_s": sync_s,
                "peak_rss_mib": peak_kib / 1024,
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    )


if __name__ == "__main__":
    main()
