"""Front matter is a ceiling: it may narrow what sovra.toml grants a document, never widen it."""

from __future__ import annotations

from pathlib import Path

from sovra.config import FolderSource
from sovra.domain import ADMIN_ONLY
from sovra.ingest.pipeline import sync_source
from sovra.ingest.state import StateStore
from sovra.sources import FolderConnector
from tests.support.ingest import MemoryIndex


def folder(root: Path, **kw: object) -> FolderConnector:
    src = FolderSource.model_validate({"name": "docs", "kind": "folder", "path": root, **kw})
    return FolderConnector(src, root)


def _write(root: Path, name: str, front: str) -> None:
    (root / name).write_text(f"---\n{front}\n---\n# {name}\n\nSome body text for {name}.\n")


def test_front_matter_cannot_widen_access_classification_or_residency(tmp_path: Path) -> None:
    _write(tmp_path, "wide.md", "access: public\nclassification: public\nresidency: '*'")
    _write(tmp_path, "new.md", "access: [group:staff, user:mallory]")
    conn = folder(tmp_path, access=["group:staff"], classification="confidential", residency="eu")
    wide = conn.fetch("wide.md")
    assert wide.access == ("group:staff",)
    assert wide.classification == "confidential"
    assert wide.residency == "eu"
    refused = wide.metadata["labels_refused"]
    assert "public" in refused and "classification" in refused and "residency" in refused
    new = conn.fetch("new.md")
    assert new.access == ("group:staff",)  # no new principal
    assert "user:mallory" in new.metadata["labels_refused"]
    assert conn.permissions("wide.md") == ("group:staff",)


def test_front_matter_may_narrow(tmp_path: Path) -> None:
    _write(tmp_path, "n.md", "access: [group:board]\nclassification: restricted\nresidency: eu-de")
    _write(tmp_path, "none.md", "access: [group:other]")
    conn = folder(
        tmp_path, access=["group:board", "group:staff"], classification="internal", residency="eu"
    )
    doc = conn.fetch("n.md")
    assert doc.access == ("group:board",)
    assert doc.classification == "restricted" and doc.residency == "eu-de"
    assert "labels_refused" not in doc.metadata
    # Nothing of the claim is granted: the intersection is empty, so admins only (never wider).
    assert conn.fetch("none.md").access == (ADMIN_ONLY,)
    # Under a public grant any named audience is a narrowing.
    pub = folder(tmp_path, access=["public"])
    assert pub.fetch("none.md").access == ("group:other",)


def test_trust_front_matter_restores_replacement(tmp_path: Path) -> None:
    _write(tmp_path, "wide.md", "access: public\nclassification: public\nresidency: '*'")
    conn = folder(
        tmp_path,
        access=["group:staff"],
        classification="confidential",
        residency="eu",
        trust_front_matter=True,
    )
    doc = conn.fetch("wide.md")
    assert doc.access == ("public",) and doc.classification == "public" and doc.residency == "*"


def test_widening_attempts_are_in_the_sync_report(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    _write(root, "wide.md", "access: public")
    _write(root, "fine.md", "classification: restricted")
    conn = folder(root, access=["group:staff"])
    index = MemoryIndex()
    state = StateStore(tmp_path / "state.sqlite")
    try:
        report = sync_source(conn, None, index, None, state)
        assert set(report.added) == {"wide.md", "fine.md"}
        assert list(report.labels_refused) == ["wide.md"]
        assert "public" in report.labels_refused["wide.md"]
        stored = state.last_report("docs")
        assert stored is not None and "wide.md" in stored["labels_refused"]
        assert stored["counts"]["labels_refused"] == 1
        # The refusal is not part of the indexed chunk metadata readers see.
        chunks = index.chunks_of("docs:wide.md")
        assert chunks and all(c.access == ("group:staff",) for c in chunks)
    finally:
        index.close()
        state.close()


def test_source_show_lists_refused_labels_and_links(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sovra.cli import app

    root = tmp_path / "docs"
    root.mkdir()
    _write(root, "wide.md", "access: public")
    (tmp_path / "outside.md").write_text("# outside\n\nnot in the source\n")
    (root / "out.md").symlink_to(tmp_path / "outside.md")
    cfg = tmp_path / "sovra.toml"
    cfg.write_text(
        f'[workspace]\nhome = "{tmp_path / "data"}"\n\n[[sources]]\nname = "docs"\n'
        f'kind = "folder"\npath = "{root}"\naccess = ["group:staff"]\n'
    )
    runner = CliRunner()
    for args in (["source", "sync", "docs", "--bm25-only"], ["source", "show", "docs"]):
        result = runner.invoke(app, ["--config", str(cfg), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "labels refused wide.md: access public not granted" in text
    assert "link refused out.md" in text
