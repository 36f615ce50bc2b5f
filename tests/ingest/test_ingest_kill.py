"""kill -9 in the middle of a sync, then re-run: exactly the right chunks, no duplicates, no loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sovra.index.base import Index
from sovra.ingest import StateStore, SyncOptions, sync_source
from sovra.ingest.chunk import chunk_document
from sovra.ingest.state import STATUS_OK
from tests.support.ingest import (
    DIMENSION,
    FakeEmbedder,
    FileIndex,
    connector,
    copy_tree,
    open_index,
)

WORKER = Path(__file__).with_name("ingest_kill_worker.py")


def snapshot(index: Index) -> dict[str, list[tuple[str, str]]]:
    """document id → [(chunk id, text)] as the index holds it on disk now."""
    if isinstance(index, FileIndex):
        return {
            d: [(str(c["id"]), str(c["text"])) for c in chunks]
            for d, chunks in index.stored().items()
        }
    return {d: [(c.id, c.text) for c in index.chunks_of(d)] for d in index.document_ids()}


@pytest.mark.parametrize("kind", ["fake", "embedded"])
def test_kill_mid_sync_then_resume(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "hb"
    files = copy_tree("handbook/content", root, limit=130)
    assert len(files) >= 120
    index_dir, state_db = tmp_path / "index", tmp_path / "state.db"

    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(root), str(index_dir), str(state_db), "0.05", kind],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    killed_at = None
    for line in proc.stdout:
        parts = line.split()
        if parts[0] == "progress" and int(parts[1]) >= 40:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = int(parts[1])
            break
    proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL

    # What the dead process left: the state never claims more than the index holds.
    index = open_index(kind, index_dir)
    stored = snapshot(index)
    state = StateStore(state_db)
    recorded = {k: v for k, v in state.versions("hb").items() if v[1] == STATUS_OK}
    assert 0 < len(recorded) < len(files)
    for eid in recorded:
        assert f"hb:{eid}" in stored
    assert len(stored) >= len(recorded)

    # The world moves on while the sync is down: one indexed file deleted, one edited.
    indexed = sorted(recorded)
    (root / indexed[0]).unlink()
    (root / indexed[1]).write_text("# Edited\n\nThis page was edited between the runs.\n")

    conn = connector(root)
    report = sync_source(
        conn, "hb", index, FakeEmbedder(DIMENSION), state, options=SyncOptions(batch_chunks=8)
    )
    assert report.ok and not report.failed
    assert report.deleted == [indexed[0]]
    # Work done before the kill is kept: only in-flight, edited and new documents are redone.
    assert report.unchanged == len(recorded) - 2
    assert len(report.added) + len(report.updated) == len(files) - 1 - report.unchanged

    expected_ids = {f"hb:{p.relative_to(root).as_posix()}" for p in root.rglob("*.md")}
    final = snapshot(index)
    assert set(final) == expected_ids
    all_chunk_ids = [cid for chunks in final.values() for cid, _ in chunks]
    assert len(all_chunk_ids) == len(set(all_chunk_ids))
    for doc_id, chunks in final.items():
        doc = conn.fetch(doc_id.split(":", 1)[1])
        want = [(c.id, c.text) for c in chunk_document(doc)]
        assert chunks == want
    assert any("edited between the runs" in text for _, text in final[f"hb:{indexed[1]}"])
    if not isinstance(index, FileIndex):  # the fake counts only this process's writes
        assert index.count() == len(all_chunk_ids)
    versions = state.versions("hb")
    assert set(versions) == {i.split(":", 1)[1] for i in expected_ids}
    assert all(v.status == STATUS_OK for v in versions.values())
    assert state.counts("hb")["chunks"] == len(all_chunk_ids)
    index.close()
    state.close()
