"""Ingestion limits: archive size/entry limits, XML entity bombs, symlinks at any path component."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import docx
import pytest

from sovra.config import FolderSource
from sovra.ingest.pipeline import sync_source
from sovra.ingest.state import StateStore
from sovra.sources import DocumentNotFound, FolderConnector, MalformedDocument
from tests.support.ingest import MemoryIndex


def folder(root: Path, **kw: object) -> FolderConnector:
    src = FolderSource.model_validate({"name": "docs", "kind": "folder", "path": root, **kw})
    return FolderConnector(src, root)


def _docx(text: str = "Quarterly numbers are fine.") -> bytes:
    d = docx.Document()
    d.add_paragraph(text)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _with_entries(
    data: bytes, extra: dict[str, bytes], replace: dict[str, bytes] | None = None
) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in src.infolist():
            body = (replace or {}).get(info.filename, src.read(info.filename))
            zf.writestr(info.filename, body)
        for name, body in extra.items():
            zf.writestr(name, body)
    return out.getvalue()


def test_docx_over_the_unpacked_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    bomb = _with_entries(_docx(), {"word/media/zeros.bin": b"\0" * 5_000_000})
    assert len(bomb) < 100_000  # small on disk, large unpacked
    (tmp_path / "bomb.docx").write_bytes(bomb)
    (tmp_path / "ok.docx").write_bytes(_docx())
    conn = folder(tmp_path, max_unpacked_bytes=2_000_000)
    with pytest.raises(MalformedDocument, match="unpacked"):
        conn.fetch("bomb.docx")
    assert "Quarterly" in conn.fetch("ok.docx").text


def test_docx_with_too_many_entries_is_refused(tmp_path: Path) -> None:
    many = _with_entries(_docx(), {f"customXml/extra{i}.xml": b"<a/>" for i in range(50)})
    (tmp_path / "many.docx").write_bytes(many)
    conn = folder(tmp_path, max_archive_entries=40)
    with pytest.raises(MalformedDocument, match="entries"):
        conn.fetch("many.docx")


BILLION_LAUGHS = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<!DOCTYPE w:document [
 <!ENTITY a "haha">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
]>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">
<w:body><w:p><w:r><w:t>&g;</w:t></w:r></w:p></w:body></w:document>
"""


def test_docx_with_an_entity_declaration_is_refused(tmp_path: Path) -> None:
    bomb = _with_entries(_docx(), {}, replace={"word/document.xml": BILLION_LAUGHS})
    (tmp_path / "laughs.docx").write_bytes(bomb)
    with pytest.raises(MalformedDocument, match="DTD"):
        folder(tmp_path).fetch("laughs.docx")


def _root_and_outside(tmp_path: Path, inside: str, outside: str) -> tuple[Path, Path]:
    """A source root holding `inside`, and a folder beside it holding `outside` (a secret)."""
    root, secret = tmp_path / "root", tmp_path / "outside"
    for base, rel in ((root, inside), (secret, outside)):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(f"# {rel}\n\n{'harmless' if base == root else 'secret hunter2'}\n")
    return root, secret


def test_a_folder_swapped_for_a_link_after_listing_is_not_followed(tmp_path: Path) -> None:
    root, secret = _root_and_outside(tmp_path, "sub/a.md", "a.md")
    conn = folder(root, access=["public"])
    assert [r.external_id for r in conn.list()] == ["sub/a.md"]
    # Between list() and fetch() someone replaces the folder with a link out of the root.
    (root / "sub" / "a.md").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(secret)
    with pytest.raises((DocumentNotFound, MalformedDocument)):
        conn.fetch("sub/a.md")
    with pytest.raises((DocumentNotFound, MalformedDocument)):
        conn.permissions("sub/a.md")


def test_links_out_of_the_root_are_refused_and_reported(tmp_path: Path) -> None:
    root, outside = _root_and_outside(tmp_path, "keep/a.md", "s.md")
    (root / "file-link.md").symlink_to(outside / "s.md")
    (root / "dir-link").symlink_to(outside)
    (root / "rel-link.md").symlink_to("../outside/s.md")
    (root / "keep" / "inner.md").symlink_to("../keep/a.md")
    (root / "keep" / "loop.md").symlink_to("loop.md")
    conn = folder(root, access=["public"])
    index = MemoryIndex()
    state = StateStore(tmp_path / "state.sqlite")
    try:
        report = sync_source(conn, None, index, None, state)
    finally:
        state.close()
    assert sorted(report.added) == ["keep/a.md", "keep/inner.md"]
    assert set(report.refused_links) == {"file-link.md", "dir-link", "rel-link.md", "keep/loop.md"}
    assert all(reason for reason in report.refused_links.values())
    texts = " ".join(c.text for c in index.all_chunks())
    assert "secret" not in texts
    assert os.path.islink(root / "dir-link")
