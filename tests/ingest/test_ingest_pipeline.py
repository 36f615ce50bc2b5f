"""sync_source end to end with a fake index and embedder on copies of the sample data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sovra.config import FolderSource, RecordsSource
from sovra.domain import Chunk, SearchFilter
from sovra.ingest import StateStore, SyncOptions, sync_source
from sovra.ingest.chunk import chunk_document
from sovra.ingest.state import STATUS_FAILED, STATUS_OK
from sovra.sources import FolderConnector, RecordsConnector, SourceUnavailable
from tests.support.ingest import FakeEmbedder, MemoryIndex, copy_tree, minimal_pdf, tickets_head


def folder(root: Path, **kw: object) -> FolderConnector:
    src = FolderSource.model_validate({"name": "hb", "kind": "folder", "path": root, **kw})
    return FolderConnector(src, root)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "hb"
    copy_tree("handbook/content/benefits-pay-perks", r / "benefits")
    copy_tree("runbooks/alerts/cluster-etcd-operator", r / "runbooks")
    return r


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "data" / "state.db")


def all_ids(index: MemoryIndex) -> list[str]:
    return [c.id for c in index.all_chunks()]


def test_first_sync_indexes_everything_with_labels_and_embeddings(
    root: Path, state: StateStore
) -> None:
    conn = folder(
        root,
        access=["group:staff"],
        rules=[{"match": "runbooks/**", "access": ["group:sre"], "classification": "confidential"}],
    )
    index, emb = MemoryIndex(), FakeEmbedder()
    seen: list[tuple[int, int, str | None]] = []
    report = sync_source(conn, "hb", index, emb, state, progress=lambda *a: seen.append(a))
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.md"))
    assert sorted(report.added) == files and not report.failed and report.ok
    assert index.document_ids() == {f"hb:{f}" for f in files}
    ids = all_ids(index)
    assert len(ids) == len(set(ids)) == report.chunks_written
    for doc_id, chunks in index.docs.items():
        assert [c.id for c in chunks] == [f"{doc_id}#{i}" for i in range(len(chunks))]
        for c in chunks:
            assert c.embedding is not None and len(c.embedding) == emb.dimension
            assert c.language == "en"
            if doc_id.startswith("hb:runbooks/"):
                assert c.access == ("group:sre",) and c.classification == "confidential"
            else:
                assert c.access == ("group:staff",)
    # A staff member sees no runbook chunk; an SRE sees them.
    staff = SearchFilter(access_tokens=frozenset({"group:staff", "public"}))
    assert not any(
        c.document_id.startswith("hb:runbooks/") for c in index.all_chunks() if staff.admits(c)
    )
    # Progress: starts at 0 of total, ends at total of total, never goes backwards.
    assert seen[0][:2] == (0, len(files)) and seen[-1][:2] == (len(files), len(files))
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)
    counts = state.counts("hb")
    assert counts[STATUS_OK] == len(files) and counts["chunks"] == len(ids)
    shown = state.last_report("hb")
    assert shown is not None and shown["counts"]["added"] == len(files)
    # The index holds exactly what the chunker makes of each fetched document.
    doc = conn.fetch("runbooks/etcdDatabaseQuotaLowSpace.md")
    doc.language = "en"
    expect = [c.text for c in chunk_document(doc)]
    assert [c.text for c in index.chunks_of(doc.id)] == expect


def test_rerun_skips_unchanged_then_update_and_delete(root: Path, state: StateStore) -> None:
    conn = folder(root, access=["group:staff"])
    index, emb = MemoryIndex(), FakeEmbedder()
    first = sync_source(conn, "hb", index, emb, state)
    n = len(first.added)
    index.replace_calls.clear()
    calls = emb.calls

    again = sync_source(conn, "hb", index, emb, state)
    assert again.unchanged == n and not again.added and not again.updated and not again.deleted
    assert index.replace_calls == [] and emb.calls == calls

    target = root / "runbooks" / "etcdNoLeader.md"
    target.write_text("# etcdNoLeader\n\n## Meaning\n\nCompletely rewritten runbook text.\n")
    gone = root / "benefits" / "benefits-perks" / "celebrate.md"
    old_chunks = index.chunks_of("hb:benefits/benefits-perks/celebrate.md")
    assert old_chunks
    gone.unlink()
    third = sync_source(conn, "hb", index, emb, state)
    assert third.updated == ["runbooks/etcdNoLeader.md"] and third.added == []
    assert third.deleted == ["benefits/benefits-perks/celebrate.md"]
    assert third.unchanged == n - 2
    texts = [c.text for c in index.chunks_of("hb:runbooks/etcdNoLeader.md")]
    assert any("Completely rewritten" in t for t in texts)
    assert not any("etcd cluster has no leader" in t.lower() for t in texts)
    assert "hb:benefits/benefits-perks/celebrate.md" not in index.document_ids()
    assert "benefits/benefits-perks/celebrate.md" not in state.versions("hb")
    assert len(all_ids(index)) == len(set(all_ids(index)))


def test_malformed_files_fail_alone_and_are_shown(root: Path, state: StateStore) -> None:
    bad = {
        "bad/truncated.pdf": minimal_pdf(["Quarterly numbers"])[:120],
        "bad/junk.md": bytes(range(256)) * 40,
        "bad/latin1.md": "# Caf\xe9\n\nDie Pr\xfcfung der Datenbank muss jede Woche erfolgen.\n".encode(
            "latin-1"
        ),
        "bad/huge.md": b"# big\n\n" + b"lorem ipsum " * 20_000,
    }
    (root / "bad").mkdir()
    for name, data in bad.items():
        (root / name).write_bytes(data)
    (root / "bad" / "fine.pdf").write_bytes(minimal_pdf(["A perfectly fine PDF document."]))
    (root / "bad" / "empty.md").write_bytes(b"")  # nothing to index: skipped, not failed
    conn = folder(root, access=["public"], max_file_bytes=100_000)
    index = MemoryIndex()
    report = sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert set(report.failed) == set(bad)
    assert list(report.skipped) == ["bad/empty.md"]
    assert "UTF-8" in report.failed["bad/latin1.md"]
    assert "max_file_bytes" in report.failed["bad/huge.md"]
    assert "PDF" in report.failed["bad/truncated.pdf"]
    assert "hb:bad/fine.pdf" in index.document_ids()
    assert not any(i.startswith("hb:bad/") and i != "hb:bad/fine.pdf" for i in index.document_ids())
    failed = {d.external_id: d.error for d in state.documents("hb", status=STATUS_FAILED)}
    assert failed == report.failed
    shown = state.last_report("hb")
    assert shown is not None and set(shown["failed"]) == set(bad)
    # Fixing a file on disk makes the next sync pick it up; the others keep failing.
    (root / "bad" / "latin1.md").write_text(
        "# Café\n\nDie Prüfung der Datenbank muss jede Woche erfolgen.\n", encoding="utf-8"
    )
    again = sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert again.added == ["bad/latin1.md"] and set(again.failed) == set(bad) - {"bad/latin1.md"}
    assert index.chunks_of("hb:bad/latin1.md")[0].language == "de"


def test_document_that_turns_malformed_leaves_the_index(root: Path, state: StateStore) -> None:
    conn = folder(root, access=["public"])
    index = MemoryIndex()
    sync_source(conn, "hb", index, FakeEmbedder(), state)
    target = root / "runbooks" / "etcdMembersDown.md"
    target.write_bytes(b"\x00\x01junk\xff" * 50)
    report = sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert "runbooks/etcdMembersDown.md" in report.failed
    assert "hb:runbooks/etcdMembersDown.md" not in index.document_ids()


def test_revoked_access_reaches_the_index_on_next_sync(root: Path, state: StateStore) -> None:
    index = MemoryIndex()
    sync_source(folder(root, access=["group:staff"]), "hb", index, FakeEmbedder(), state)
    narrowed = folder(
        root, access=["group:staff"], rules=[{"match": "runbooks/**", "access": ["group:sre"]}]
    )
    report = sync_source(narrowed, "hb", index, FakeEmbedder(), state)
    assert report.updated and all(u.startswith("runbooks/") for u in report.updated)
    staff = SearchFilter(access_tokens=frozenset({"group:staff"}))
    assert not any(
        c.document_id.startswith("hb:runbooks/") for c in index.all_chunks() if staff.admits(c)
    )


def test_unavailable_source_changes_nothing(root: Path, tmp_path: Path, state: StateStore) -> None:
    conn = folder(root, access=["public"])
    index = MemoryIndex()
    first = sync_source(conn, "hb", index, FakeEmbedder(), state)
    before = set(index.document_ids())
    shutil.rmtree(root)  # e.g. an unmounted share: must not read as "everything deleted"
    with pytest.raises(SourceUnavailable):
        sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert index.document_ids() == before and not index.delete_calls
    assert len(state.versions("hb")) == len(first.added)
    shown = state.last_report("hb")
    assert shown is not None and shown["ok"] is False and "does not exist" in shown["error"]


def test_reconciles_index_and_state_after_partial_writes(root: Path, state: StateStore) -> None:
    conn = folder(root, access=["public"])
    index = MemoryIndex()
    sync_source(conn, "hb", index, FakeEmbedder(), state)
    # Written to the index just before a crash, never recorded, and gone from the source now.
    orphan = Chunk(
        id="hb:ghost.md#0", document_id="hb:ghost.md", source="hb", position=0, text="ghost",
        title="g", uri="", heading_path=(), language="en", access=("public",),
        classification="internal", residency="*",
    )  # fmt: skip
    index.replace_document("hb:ghost.md", [orphan])
    other = Chunk(**{**orphan.__dict__, "id": "hbx:a#0", "document_id": "hbx:a", "source": "hbx"})
    index.replace_document("hbx:a", [other])
    # The index lost one document the state believes is indexed.
    lost = "hb:runbooks/etcdNoLeader.md"
    index.delete_documents([lost])
    report = sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert report.deleted == ["ghost.md"]
    assert report.updated == [] and report.added == ["runbooks/etcdNoLeader.md"]
    assert "hb:ghost.md" not in index.document_ids() and "hbx:a" in index.document_ids()
    assert lost in index.document_ids()


def test_state_lost_rebuilds_without_duplicates(root: Path, tmp_path: Path) -> None:
    conn = folder(root, access=["public"])
    index = MemoryIndex()
    sync_source(conn, "hb", index, FakeEmbedder(), StateStore(tmp_path / "s1.db"))
    ids = sorted(all_ids(index))
    report = sync_source(conn, "hb", index, FakeEmbedder(), StateStore(tmp_path / "s2.db"))
    assert report.updated and not report.added
    assert sorted(all_ids(index)) == ids


def test_bm25_only_mode_and_records_source(tmp_path: Path, state: StateStore) -> None:
    path = tickets_head(tmp_path, rows=60)
    src = RecordsSource.model_validate(
        {
            "name": "tickets",
            "kind": "records",
            "path": path,
            "access": ["group:it-support"],
            "title_field": "title",
            "text_fields": ["body"],
            "metadata_fields": ["urgency"],
        }
    )
    index = MemoryIndex()
    opts = SyncOptions(batch_documents=7)  # several batches, several state transactions
    report = sync_source(RecordsConnector(src, path), None, index, None, state, options=opts)
    assert len(report.added) == 60 and report.source == "tickets"
    assert index.bulk_calls == 9  # one bulk index write per batch of 7 documents
    assert all(c.embedding is None for c in index.all_chunks())
    assert all(c.access == ("group:it-support",) for c in index.all_chunks())
    assert state.counts("tickets")[STATUS_OK] == 60
    again = sync_source(RecordsConnector(src, path), None, index, None, state, options=opts)
    assert again.unchanged == 60


def test_fetch_crash_is_a_document_failure(root: Path, state: StateStore) -> None:
    class Flaky(FolderConnector):
        def fetch(self, external_id: str):  # type: ignore[no-untyped-def]
            if external_id.endswith("etcdNoLeader.md"):
                raise KeyError("parser bug")
            return super().fetch(external_id)

    src = FolderSource.model_validate({"name": "hb", "kind": "folder", "path": root})
    report = sync_source(Flaky(src, root), "hb", MemoryIndex(), FakeEmbedder(), state)
    assert list(report.failed) == ["runbooks/etcdNoLeader.md"]
    assert "internal error: KeyError" in report.failed["runbooks/etcdNoLeader.md"]
    assert len(report.added) > 10


def test_embedder_failure_stops_and_resumes(root: Path, state: StateStore) -> None:
    class Broken(FakeEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            if self.calls >= 2:
                raise RuntimeError("model crashed")
            return super().embed(texts)

    conn = folder(root, access=["public"])
    index = MemoryIndex()
    opts = SyncOptions(batch_chunks=8)
    with pytest.raises(RuntimeError, match="model crashed"):
        sync_source(conn, "hb", index, Broken(), state, options=opts)
    shown = state.last_report("hb")
    assert shown is not None and "model crashed" in shown["error"]
    partial = len(state.versions("hb"))
    assert 0 < partial < len(list(conn.list()))
    report = sync_source(conn, "hb", index, FakeEmbedder(), state, options=opts)
    assert report.unchanged == partial and len(report.added) + partial == report.listed


def test_concurrent_syncs_of_one_source_serialise(root: Path, state: StateStore) -> None:
    import threading

    conn = folder(root, access=["public"])
    index = MemoryIndex()
    reports = []

    def run() -> None:
        reports.append(sync_source(conn, "hb", index, FakeEmbedder(delay=0.01), state))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    added = sorted(len(r.added) for r in reports)
    assert added[0] == 0 and added[1] == reports[0].listed  # one did the work, one found none
    assert len(index.replace_calls) == reports[0].listed


def test_new_model_or_chunking_reindexes_unchanged_documents(root: Path, state: StateStore) -> None:
    conn = folder(root, access=["public"])
    index = MemoryIndex()
    first = sync_source(conn, "hb", index, None, state)  # BM25-only
    assert all(c.embedding is None for c in index.all_chunks())
    full = sync_source(conn, "hb", index, FakeEmbedder(), state)
    assert len(full.updated) == len(first.added) and full.unchanged == 0
    assert all(c.embedding is not None for c in index.all_chunks())
    assert sync_source(conn, "hb", index, FakeEmbedder(), state).unchanged == len(first.added)
    bigger = FakeEmbedder(dimension=32)  # another model: vectors must not mix
    assert len(sync_source(conn, "hb", index, bigger, state).updated) == len(first.added)
    finer = SyncOptions(target_tokens=64)
    again = sync_source(conn, "hb", index, bigger, state, options=finer)
    assert len(again.updated) == len(first.added)
    assert all(len(c.embedding or ()) == 32 for c in index.all_chunks())


def test_state_store_upgrades_a_store_without_pipeline_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE documents (source TEXT NOT NULL, external_id TEXT NOT NULL,"
        " version TEXT NOT NULL, status TEXT NOT NULL, error TEXT,"
        " chunk_count INTEGER NOT NULL DEFAULT 0, synced_at TEXT NOT NULL,"
        " PRIMARY KEY (source, external_id)) WITHOUT ROWID;"
        "INSERT INTO documents VALUES ('s', 'a', 'v1', 'ok', NULL, 3, '2026-01-01T00:00:00');"
    )
    db.commit()
    db.close()
    store = StateStore(path)
    assert store.versions("s") == {"a": ("v1", STATUS_OK, "")}
    store.record_ok("s", [("b", "v2", 1)], pipeline="p")
    assert store.versions("s")["b"] == ("v2", STATUS_OK, "p")


@pytest.mark.parametrize("prefetch", [True, False])
def test_short_records_are_embedded_in_wide_windows_with_the_same_result(
    tmp_path: Path, prefetch: bool
) -> None:
    """The model sorts each call by length, so short records are handed over in windows of
    `embed_window` chunks (several batches merged), not one call per small batch; the vectors,
    the index and the state are what batch-by-batch embedding gives."""

    class Sizes(FakeEmbedder):
        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def embed(self, texts):  # type: ignore[no-untyped-def]
            self.sizes.append(len(texts))
            return super().embed(texts)

    path = tickets_head(tmp_path, rows=100)
    src = RecordsSource.model_validate(
        {"name": "tickets", "kind": "records", "path": path, "access": ["group:it"],
         "title_field": "title", "text_fields": ["body"]}
    )  # fmt: skip
    results = {}
    for window in (8, 40):
        emb, index = Sizes(), MemoryIndex()
        state = StateStore(tmp_path / f"state-{window}.db")
        opts = SyncOptions(batch_chunks=8, embed_window=window, prefetch=prefetch)
        report = sync_source(RecordsConnector(src, path), None, index, emb, state, options=opts)
        assert len(report.added) == 100 and state.counts("tickets")[STATUS_OK] == 100
        assert sum(emb.sizes) == report.chunks_written >= 100
        # Every call but the last holds at least a window (batches of 2 records merged).
        assert all(n >= window for n in emb.sizes[:-1]), emb.sizes
        results[window] = {c.id: c.embedding for c in index.all_chunks()}
        if window == 40:
            assert len(emb.sizes) <= 3 and index.bulk_calls == len(emb.sizes)
    assert results[8] == results[40]


def test_a_declared_source_language_labels_every_document_without_detection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sovra.ingest.pipeline as pipeline

    def no_detection(texts: object) -> list[str]:
        raise AssertionError("detection ran although the source declares its language")

    monkeypatch.setattr(pipeline, "detect_languages", no_detection)
    path = tickets_head(tmp_path, rows=30)
    src = RecordsSource.model_validate(
        {"name": "tickets", "kind": "records", "path": path, "access": ["group:it"],
         "title_field": "title", "text_fields": ["body"], "language": "en"}
    )  # fmt: skip
    state, index = StateStore(tmp_path / "state.db"), MemoryIndex()
    conn = RecordsConnector(src, path)
    opts = SyncOptions(language=src.language)
    report = sync_source(conn, None, index, None, state, options=opts)
    assert len(report.added) == 30
    assert {c.language for c in index.all_chunks()} == {"en"}
    # Another declaration is another pipeline: every document is indexed again with it.
    again = sync_source(conn, None, index, None, state, options=SyncOptions(language="de"))
    assert len(again.updated) == 30 and {c.language for c in index.all_chunks()} == {"de"}
    assert (
        sync_source(conn, None, index, None, state, options=SyncOptions(language="de")).unchanged
        == 30
    )


def test_a_source_language_must_be_an_iso_639_1_code(tmp_path: Path) -> None:
    from sovra.config import ConfigError, parse_config

    source = {"name": "t", "kind": "records", "path": "x.csv", "language": "English"}
    with pytest.raises(ConfigError, match="language"):
        parse_config({"sources": [source]}, tmp_path)
