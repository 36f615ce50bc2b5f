"""RecordsConnector on the head of the sample tickets CSV and on JSON / JSONL files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovra.config import RecordsSource
from sovra.domain import ADMIN_ONLY
from sovra.sources import (
    DocumentNotFound,
    EmptyDocument,
    MalformedDocument,
    RecordsConnector,
    SourceUnavailable,
)
from tests.support.ingest import tickets_head

TICKET_META = ("ticket_type", "category", "urgency", "impact")


def records(path: Path, **kw: object) -> RecordsConnector:
    src = RecordsSource.model_validate({"name": "tickets", "kind": "records", "path": path, **kw})
    return RecordsConnector(src, path)


def test_tickets_csv_one_record_one_document(tmp_path: Path) -> None:
    path = tickets_head(tmp_path, rows=40)
    conn = records(
        path,
        access=["group:it-support"],
        title_field="title",
        text_fields=["body"],
        metadata_fields=list(TICKET_META),
    )
    refs = list(conn.list())
    assert len(refs) == 40
    assert all(r.external_id.startswith("r-") for r in refs)
    doc = conn.fetch(refs[2].external_id)
    assert doc.title == "work experience user"
    assert doc.text.startswith("work experience user hi")
    assert set(doc.metadata) >= set(TICKET_META)
    assert doc.access == ("group:it-support",)
    # The first ticket has no title: one is made from the text instead of an empty string.
    first = conn.fetch(refs[0].external_id)
    assert first.title.startswith("hi since recruiter")


def test_content_ids_survive_inserted_rows(tmp_path: Path) -> None:
    path = tickets_head(tmp_path, rows=20)
    conn = records(path, title_field="title", text_fields=["body"])
    before = {r.external_id: r.version for r in conn.list()}
    lines = path.read_text().splitlines()
    lines.insert(1, "new ticket,brand new body text,1,1,1,1,1,1,1")
    path.write_text("\n".join(lines) + "\n")
    after = {r.external_id: r.version for r in conn.list()}
    assert set(after) - set(before) != set() and len(after) == 21
    assert all(after[k] == v for k, v in before.items())  # nothing else re-indexed


def test_id_field_json_and_access_field_and_rules(tmp_path: Path) -> None:
    path = tmp_path / "kb.json"
    path.write_text(
        json.dumps(
            [
                {"id": "K1", "title": "VPN", "body": "Reset the VPN token.", "acl": "group:it"},
                {"id": "K2", "title": "HR", "body": "Salary bands.", "acl": ""},
                {"id": "K3", "title": "Odd", "body": "x y z", "acl": "nonsense"},
                {"id": 4, "title": "Num", "body": "numeric id", "acl": None},
                "not an object",
            ]
        )
    )
    conn = records(
        path,
        id_field="id",
        title_field="title",
        text_fields=["body"],
        access_field="acl",
        access=["group:staff"],
        rules=[{"match": "K2", "access": ["group:hr"]}],
    )
    ids = [r.external_id for r in conn.list()]
    assert ids == ["K1", "K2", "K3", "4", "line-5"]
    assert conn.fetch("K1").access == ("group:it",)
    assert conn.fetch("K2").access == ("group:hr",)
    assert conn.fetch("K3").access == (ADMIN_ONLY,)
    assert conn.fetch("4").access == ("group:staff",)
    assert conn.permissions("K2") == ("group:hr",)
    with pytest.raises(MalformedDocument, match="not a JSON object"):
        conn.fetch("line-5")
    with pytest.raises(DocumentNotFound):
        conn.fetch("K9")


def test_jsonl_bad_line_fails_alone_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"id": "a", "text": "alpha"}\n'
        "{broken json\n"
        '{"id": "b", "text": ""}\n'
        '{"id": "a", "text": "second a"}\n'
        '{"text": "no id"}\n'
    )
    conn = records(path, id_field="id", text_fields=["text"], access=["public"])
    ids = [r.external_id for r in conn.list()]
    assert ids == ["a", "line-2", "b", "line-4", "line-5"]
    assert conn.fetch("a").text == "alpha"
    with pytest.raises(MalformedDocument, match="invalid JSON"):
        conn.fetch("line-2")
    with pytest.raises(EmptyDocument):
        conn.fetch("b")
    with pytest.raises(MalformedDocument, match="duplicate id"):
        conn.fetch("line-4")
    with pytest.raises(MalformedDocument, match="no value in id field"):
        conn.fetch("line-5")


def test_identical_records_without_id_get_distinct_ids(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("title,body\nx,same\nx,same\ny,other\n")
    ids = [r.external_id for r in records(path, text_fields=["body"]).list()]
    assert len(set(ids)) == 3 and ids[1] == ids[0] + "~2"


def test_default_text_is_all_unmapped_fields(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,name,note,team\n1,Printer,Jams daily,ops\n")
    conn = records(path, id_field="id", title_field="name", metadata_fields=["team"])
    doc = conn.fetch(next(conn.list()).external_id)
    assert doc.text == "note: Jams daily"
    assert doc.title == "Printer" and doc.metadata["team"] == "ops"


def test_unreadable_file_is_source_unavailable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[{oops")
    with pytest.raises(SourceUnavailable):
        list(records(bad).list())
    with pytest.raises(SourceUnavailable, match="not found"):
        list(records(tmp_path / "missing.csv").list())
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,b\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(SourceUnavailable, match="encoding"):
        list(records(latin).list())
    assert len(list(records(latin, encoding="latin-1").list())) == 1


def test_one_hostile_record_fails_alone(tmp_path: Path) -> None:
    """A record nested too deep for the JSON parser, or a CSV field above csv's limit, is one
    failed record — not a crash, and not the whole source unavailable."""
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        '{"id": "a", "text": "alpha"}\n' + "[" * 100_000 + '\n{"id": "b", "text": "beta"}\n'
    )
    conn = records(jsonl, id_field="id", text_fields=["text"], access=["public"])
    assert [r.external_id for r in conn.list()] == ["a", "line-2", "b"]
    with pytest.raises(MalformedDocument, match="nested too deep"):
        conn.fetch("line-2")
    assert conn.fetch("b").text == "beta"
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("id,body\n1,ok\n2," + "y" * 200_000 + "\n3,fine\n")
    conn = records(csv_path, id_field="id", text_fields=["body"], access=["public"])
    ids = [r.external_id for r in conn.list()]
    assert "1" in ids and "3" in ids and len(ids) == 3
    bad = next(i for i in ids if i.startswith("line-"))
    with pytest.raises(MalformedDocument, match="field larger"):
        conn.fetch(bad)
