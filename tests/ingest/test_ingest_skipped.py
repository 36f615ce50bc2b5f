"""Sync reports that do not cry wolf: a document with nothing to index (a redirect page with
front matter only, an empty page) is recorded as skipped with its reason, apart from the
documents that truly failed (they need action)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sovra.config import FolderSource
from sovra.ingest import StateStore, sync_source
from sovra.ingest.state import STATUS_FAILED, STATUS_SKIPPED
from sovra.sources import FolderConnector
from tests.support.ingest import FakeEmbedder, MemoryIndex

REDIRECT = "---\ntitle: Old onboarding\nredirect_to: /people/onboarding\n---\n"
STUB = "---\ntitle: Placeholder\nowner: people\n---\n\n   \n"
PAGE = "# Onboarding\n\nEvery new hire meets their buddy on the first day.\n"


def fixture_folder(root: Path) -> FolderConnector:
    root.mkdir(parents=True)
    (root / "redirect.md").write_text(REDIRECT, encoding="utf-8")
    (root / "stub.md").write_text(STUB, encoding="utf-8")
    (root / "empty.md").write_bytes(b"")
    (root / "broken.md").write_bytes(b"# Caf\xe9 \xff\xfe not UTF-8\n")
    (root / "page.md").write_text(PAGE, encoding="utf-8")
    src = FolderSource.model_validate(
        {"name": "hb", "kind": "folder", "path": root, "access": ["public"]}
    )
    return FolderConnector(src, root)


def test_empty_and_redirect_pages_are_skipped_not_failed(tmp_path: Path) -> None:
    conn = fixture_folder(tmp_path / "hb")
    state = StateStore(tmp_path / "state.db")
    index = MemoryIndex()
    report = sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert report.added == ["page.md"]
    assert list(report.failed) == ["broken.md"] and "UTF-8" in report.failed["broken.md"]
    assert set(report.skipped) == {"redirect.md", "stub.md", "empty.md"}
    assert report.skipped["redirect.md"].startswith("redirect page to /people/onboarding")
    assert "front matter only" in report.skipped["stub.md"]
    assert report.skipped["empty.md"] == "empty file: no text"
    shown = report.to_dict()
    assert shown["counts"]["failed"] == 1 and shown["counts"]["skipped"] == 3
    assert state.counts("hb") == {"ok": 1, "failed": 1, "skipped": 3, "chunks": 1}
    skipped = {d.external_id: d.error for d in state.documents("hb", status=STATUS_SKIPPED)}
    assert skipped == report.skipped
    assert [d.external_id for d in state.documents("hb", status=STATUS_FAILED)] == ["broken.md"]

    # Skipped documents are not read again while unchanged; the broken one is retried.
    again = sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert again.skipped == {} and list(again.failed) == ["broken.md"]
    assert again.unchanged == 4


def test_page_that_becomes_a_redirect_leaves_the_index(tmp_path: Path) -> None:
    conn = fixture_folder(tmp_path / "hb")
    state = StateStore(tmp_path / "state.db")
    index = MemoryIndex()
    sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert "hb:page.md" in index.document_ids()
    (tmp_path / "hb" / "page.md").write_text(REDIRECT, encoding="utf-8")
    report = sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert "page.md" in report.skipped and "hb:page.md" not in index.document_ids()
    # …and back: a redirect that gets a body again is indexed.
    (tmp_path / "hb" / "page.md").write_text(PAGE, encoding="utf-8")
    back = sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert back.updated == [] and back.added == ["page.md"]
    assert "hb:page.md" in index.document_ids()


def test_state_from_before_skipped_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE documents (
            source TEXT NOT NULL, external_id TEXT NOT NULL, version TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), error TEXT,
            chunk_count INTEGER NOT NULL DEFAULT 0, synced_at TEXT NOT NULL,
            pipeline TEXT NOT NULL DEFAULT '', PRIMARY KEY (source, external_id)
        ) WITHOUT ROWID;
        INSERT INTO documents VALUES
            ('hb', 'a.md', 'v1', 'ok', NULL, 3, '2026-01-01T00:00:00+00:00', 'p'),
            ('hb', 'b.md', 'v1', 'failed', 'no text in file', 0, '2026-01-01T00:00:00+00:00', 'p');
        """
    )
    old.close()
    state = StateStore(path)
    assert state.counts("hb") == {"ok": 1, "failed": 1, "skipped": 0, "chunks": 3}
    state.record_failed("hb", [("b.md", "v2", "empty file: no text")], status=STATUS_SKIPPED)
    assert state.counts("hb")["skipped"] == 1
    with pytest.raises(ValueError, match="neither failed nor skipped"):
        state.record_failed("hb", [("c.md", "v1", "?")], status="ok")
    state.close()
    assert StateStore(path).counts("hb")["skipped"] == 1
