"""Run one sync in its own process so a test can SIGKILL it midway (see test_ingest_kill.py).

usage: python ingest_kill_worker.py ROOT INDEX_DIR STATE_DB EMBED_DELAY_SECONDS [fake|embedded]
The last argument picks the index: the JSON-file fake (default) or sovra's embedded index.
Prints `progress <done> <total>` lines, flushed, so the test knows when to kill.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.support

from sovra.ingest import StateStore, SyncOptions, sync_source
from tests.support.ingest import DIMENSION, FakeEmbedder, connector, open_index


def main() -> None:
    root, index_dir, state_db, delay = (
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        Path(sys.argv[3]),
        float(sys.argv[4]),
    )

    def progress(done: int, total: int, current: str | None) -> None:
        print(f"progress {done} {total}", flush=True)

    report = sync_source(
        connector(root),
        "hb",
        open_index(sys.argv[5] if len(sys.argv) > 5 else "fake", index_dir),
        FakeEmbedder(dimension=DIMENSION, delay=delay),
        StateStore(state_db),
        progress,
        options=SyncOptions(batch_chunks=8),  # two documents per batch: many commit points
    )
    print(f"done added={len(report.added)} unchanged={report.unchanged}", flush=True)


if __name__ == "__main__":
    main()
