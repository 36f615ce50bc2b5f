"""FolderConnector on copies of the sample handbook and runbooks: listing, versions, labels."""

from __future__ import annotations

import os
from pathlib import Path

import docx
import pytest

from sovra.config import AccessRule, FolderSource, parse_config
from sovra.domain import ADMIN_ONLY
from sovra.sources import (
    DocumentTooLarge,
    EmptyDocument,
    FolderConnector,
    MalformedDocument,
    SourceUnavailable,
    connector_for,
    glob_match,
)
from tests.support.ingest import copy_tree, minimal_pdf


def folder(root: Path, **kw: object) -> FolderConnector:
    src = FolderSource.model_validate({"name": "docs", "kind": "folder", "path": root, **kw})
    return FolderConnector(src, root)


@pytest.fixture
def handbook(tmp_path: Path) -> Path:
    root = tmp_path / "handbook"
    copy_tree("handbook/content/benefits-pay-perks", root / "benefits")
    copy_tree("handbook/content/departments/people-talent", root / "people", limit=12)
    return root


def test_lists_every_markdown_file_with_stable_ids_and_versions(handbook: Path) -> None:
    conn = folder(handbook, access=["group:staff"])
    refs = list(conn.list())
    files = sorted(p.relative_to(handbook).as_posix() for p in handbook.rglob("*.md"))
    assert sorted(r.external_id for r in refs) == files
    assert len(refs) > 30
    assert refs == list(conn.list())  # same content → same versions


def test_version_changes_on_edit_and_label_change_but_not_on_touch(handbook: Path) -> None:
    conn = folder(handbook, access=["group:staff"])
    before = {r.external_id: r.version for r in conn.list()}
    target = handbook / "benefits" / "benefits-perks" / "benefits.md"
    os.utime(target, (1, 1))
    assert {r.external_id: r.version for r in conn.list()} == before
    target.write_text(target.read_text() + "\nOne more line.\n")
    after = {r.external_id: r.version for r in conn.list()}
    changed = [k for k in before if before[k] != after[k]]
    assert changed == ["benefits/benefits-perks/benefits.md"]
    # Narrowing access through a rule must re-index the files it touches (revocation).
    ruled = folder(
        handbook, access=["group:staff"], rules=[{"match": "people/**", "access": ["group:people"]}]
    )
    relabelled = {r.external_id: r.version for r in ruled.list()}
    assert {k for k in after if after[k] != relabelled[k]} == {
        k for k in after if k.startswith("people/")
    }


def test_fetch_gives_title_text_labels_and_uri(handbook: Path) -> None:
    conn = folder(handbook, access=["group:staff"], classification="internal", residency="eu")
    doc = conn.fetch("benefits/benefits-perks/benefits.md")
    assert doc.title == "Health benefits at Sourcegraph"
    assert "## Eligibility" in doc.text
    assert doc.access == ("group:staff",)
    assert doc.classification == "internal" and doc.residency == "eu"
    assert doc.id == "docs:benefits/benefits-perks/benefits.md"
    assert Path(doc.uri).is_file() and doc.mime_type == "text/markdown"
    assert doc.modified_at is not None


def test_rules_later_win_access_replaces_add_access_appends(handbook: Path) -> None:
    conn = folder(
        handbook,
        access=["group:staff"],
        rules=[
            {"match": "people/**", "access": ["group:people"], "classification": "confidential"},
            {"match": "people/**/background-check*.md", "add_access": ["user:dana"]},
            {"match": "benefits/**", "add_access": ["group:contractors"], "residency": "eu-de"},
        ],
    )
    people = [r.external_id for r in conn.list() if r.external_id.startswith("people/")]
    check = "people/background-check-policy.md"
    assert check in people
    assert conn.permissions(check) == ("group:people", "user:dana")
    other = next(p for p in people if p != check)
    assert conn.permissions(other) == ("group:people",)
    assert conn.fetch(other).classification == "confidential"
    ben = conn.fetch("benefits/benefits-perks/benefits.md")
    assert ben.access == ("group:contractors", "group:staff") and ben.residency == "eu-de"


def test_trusted_front_matter_overrides_rules(tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "plan.md").write_text(
        "---\ntitle: The Plan\naccess: [user:alice, group:board]\nclassification: restricted\n"
        "residency: eu-de\nowner: alice\n---\n# Heading\n\nBody text.\n"
    )
    conn = folder(
        tmp_path,
        access=["public"],
        rules=[{"match": "secret/**", "access": ["group:x"]}],
        trust_front_matter=True,
    )
    doc = conn.fetch("secret/plan.md")
    assert doc.title == "The Plan"
    assert doc.access == ("group:board", "user:alice")
    assert doc.classification == "restricted" and doc.residency == "eu-de"
    assert doc.text.startswith("# Heading")  # front matter is not indexed text
    assert doc.metadata["owner"] == "alice"
    assert conn.permissions("secret/plan.md") == ("group:board", "user:alice")


def test_unknown_access_is_admin_only(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nno labels anywhere\n")
    (tmp_path / "b.md").write_text("---\naccess: sre\n---\n# B\n\nbad access entry\n")
    (tmp_path / "c.md").write_text("---\nclassification: top-secret\n---\n# C\n\nodd label\n")
    conn = folder(tmp_path)  # the source itself names no access
    assert conn.fetch("a.md").access == (ADMIN_ONLY,)
    b = conn.fetch("b.md")
    assert b.access == (ADMIN_ONLY,) and "admins only" in b.metadata["label_warnings"]
    labelled = folder(tmp_path, access=["public"])
    assert labelled.fetch("b.md").access == (ADMIN_ONLY,)  # a broken claim never widens
    c = labelled.fetch("c.md")
    assert c.classification == "restricted"  # unknown label → strictest known


def test_formats_html_pdf_docx_txt(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        "<html><head><title>Page T</title><style>.x{color:red}</style>"
        "<script>var secret = 1;</script></head><body><h1>Top</h1><p>Intro <b>bold</b> text."
        "</p><ul><li>one</li><li>two</li></ul><table><tr><th>k</th><th>v</th></tr>"
        "<tr><td>a</td><td>1</td></tr></table><h2>Sub</h2><p>More.</p></body></html>"
    )
    (tmp_path / "doc.pdf").write_bytes(minimal_pdf(["Annual report", "Revenue grew."], "Rep"))
    d = docx.Document()
    d.add_heading("Onboarding", level=1)
    d.add_paragraph("Welcome to the team.")
    d.add_paragraph("Laptop", style="List Bullet")
    d.add_heading("Accounts", level=2)
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "system", "owner"
    table.cell(1, 0).text, table.cell(1, 1).text = "vpn", "it"
    d.save(str(tmp_path / "guide.docx"))
    (tmp_path / "notes.txt").write_text("plain notes\n")
    conn = folder(tmp_path, access=["public"])
    assert {r.external_id for r in conn.list()} == {
        "page.html",
        "doc.pdf",
        "guide.docx",
        "notes.txt",
    }
    html = conn.fetch("page.html")
    assert html.title == "Page T"
    assert "secret" not in html.text and "color" not in html.text
    assert "# Top" in html.text and "- one\n- two" in html.text and "| a | 1 |" in html.text
    pdf = conn.fetch("doc.pdf")
    assert "Revenue grew." in pdf.text and pdf.title == "Rep"
    guide = conn.fetch("guide.docx")
    assert guide.title == "Onboarding"
    assert "# Onboarding" in guide.text and "## Accounts" in guide.text
    assert "- Laptop" in guide.text and "| vpn | it |" in guide.text
    assert conn.fetch("notes.txt").title == "Notes"


@pytest.mark.parametrize(
    ("name", "data", "error", "reason"),
    [
        ("trunc.pdf", minimal_pdf(["some text here"])[:150], MalformedDocument, "PDF"),
        ("junk.md", bytes(range(256)) * 20, MalformedDocument, "binary"),
        ("latin.md", "Caf\xe9 \xfcber alles\n".encode("latin-1"), MalformedDocument, "UTF-8"),
        ("empty.md", b"", EmptyDocument, "no text"),
        ("blank.txt", b"\n\n   \n", EmptyDocument, "no text"),
        ("huge.md", b"word " * 4000, DocumentTooLarge, "max_file_bytes"),
        ("broken.docx", b"PK\x03\x04 not really a zip", MalformedDocument, "DOCX"),
        ("bad-fm.md", b"---\ntitle: [unclosed\n---\nbody\n", MalformedDocument, "front matter"),
    ],
)
def test_malformed_files_raise_a_document_error(
    tmp_path: Path, name: str, data: bytes, error: type[Exception], reason: str
) -> None:
    (tmp_path / name).write_bytes(data)
    conn = folder(tmp_path, access=["public"], max_file_bytes=10_000)
    refs = list(conn.list())  # listing never fails because of one bad file
    assert [r.external_id for r in refs] == [name]
    with pytest.raises(error) as info:
        conn.fetch(name)
    assert reason in str(info.value)


def test_include_exclude_hidden_and_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "keep").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "keep" / "a.md").write_text("# a\n")
    (root / "keep" / "draft.md").write_text("# draft\n")
    (root / ".git" / "x.md").write_text("# hidden\n")
    (root / ".hidden.md").write_text("# hidden\n")
    (root / "image.png").write_bytes(b"\x89PNG")
    outside = tmp_path / "outside.md"
    outside.write_text("# secret outside the source\n")
    (root / "link.md").symlink_to(outside)
    (root / "inner-link.md").symlink_to(root / "keep" / "a.md")
    os.mkfifo(root / "pipe.md")  # reading it would block the sync forever
    conn = folder(root, exclude=["**/draft.md"])
    assert sorted(r.external_id for r in conn.list()) == ["inner-link.md", "keep/a.md"]


def test_missing_folder_is_source_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="does not exist"):
        list(folder(tmp_path / "nope").list())


def test_connector_for_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "x.md").write_text("# x\n\ntext\n")
    cfg = parse_config(
        {"sources": [{"name": "kb", "kind": "folder", "path": "kb", "access": ["public"]}]},
        tmp_path,
    )
    conn = connector_for(cfg.sources[0], cfg)
    assert isinstance(conn, FolderConnector)
    assert [r.external_id for r in conn.list()] == ["x.md"]


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("a.md", "**/*.md", True),
        ("x/y/a.md", "**/*.md", True),
        ("x/a.md", "*.md", False),
        ("runbooks/x/y.md", "runbooks/**", True),
        ("runbooksx/y.md", "runbooks/**", False),
        ("people/a.md", "people/*", True),
        ("people/x/a.md", "people/*", False),
        ("a/b/c.md", "a/**/c.md", True),
        ("a/c.md", "a/**/c.md", True),
        ("a1.md", "a[0-9].md", True),
    ],
)
def test_glob_semantics(path: str, pattern: str, expected: bool) -> None:
    assert glob_match(path, pattern) is expected


def test_access_rule_validation_is_config_level() -> None:
    with pytest.raises(ValueError):
        AccessRule(match="**", access=("sre",))
