"""The connector contract (docs/connectors.md), checked on every connector the same way.

Each kind supplies a `World`: a source with three items it can change, delete and make
unavailable. A new connector (Confluence, SharePoint, Jira …) adds one world and must pass.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from sovra.config import FolderSource, GitSource, RecordsSource, SqlSource
from sovra.domain import ClassificationScale, validate_access
from sovra.sources import (
    Connector,
    DocumentError,
    DocumentNotFound,
    FolderConnector,
    RecordsConnector,
    SourceUnavailable,
)
from sovra.sources.git import GitConnector
from sovra.sources.sql import SqlConnector
from tests.sources.conftest import Database
from tests.sources.gitrepo import Repo

ITEMS = {
    "alpha": "Alpha runbook: restart the queue workers.",
    "bravo": "Bravo runbook: rotate the TLS certificates.",
    "charlie": "Charlie runbook: drain the node before patching.",
}


@dataclass
class World:
    make: Callable[[tuple[str, ...]], Connector]
    """A connector of the source with this source-level access."""
    id_of: Callable[[str], str]
    change: Callable[[str, str], None]
    delete: Callable[[str], None]
    break_source: Callable[[], None]


def folder_world(tmp_path: Path) -> World:
    root = tmp_path / "docs"
    root.mkdir()
    for key, body in ITEMS.items():
        (root / f"{key}.md").write_text(f"# {key}\n\n{body}\n")

    def make(access: tuple[str, ...]) -> Connector:
        src = FolderSource(name="conf", kind="folder", path=root, access=access)
        return FolderConnector(src, root)

    return World(
        make,
        lambda key: f"{key}.md",
        lambda key, body: (root / f"{key}.md").write_text(f"# {key}\n\n{body}\n"),
        lambda key: (root / f"{key}.md").unlink(),
        lambda: shutil.rmtree(root),
    )


def records_world(tmp_path: Path) -> World:
    path = tmp_path / "items.jsonl"
    rows = {key: {"id": key, "title": key, "body": body} for key, body in ITEMS.items()}

    def write() -> None:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))

    def change(key: str, body: str) -> None:
        rows[key]["body"] = body
        write()

    def delete(key: str) -> None:
        del rows[key]
        write()

    write()

    def make(access: tuple[str, ...]) -> Connector:
        src = RecordsSource(
            name="conf", kind="records", path=path, access=access, id_field="id",
            title_field="title", text_fields=("body",),
        )  # fmt: skip
        return RecordsConnector(src, path)

    return World(make, lambda key: key, change, delete, lambda: path.unlink())


def sql_world(db: Database, monkeypatch: pytest.MonkeyPatch) -> World:
    table = f"conf_{uuid.uuid4().hex[:8]}"
    db.run(f"CREATE TABLE {table} (id VARCHAR(20) PRIMARY KEY, title VARCHAR(50), body TEXT)")
    for key, body in ITEMS.items():
        db.run(f"INSERT INTO {table} VALUES (:k, :k, :b)", k=key, b=body)
    env = f"SOVRA_CONF_{uuid.uuid4().hex[:6].upper()}"
    monkeypatch.setenv(env, db.url)

    def make(access: tuple[str, ...]) -> Connector:
        src = SqlSource(
            name="conf", kind="sql", url=f"env:{env}", table=table, id_column="id",
            title_column="title", text_columns=("body",), access=access,
        )  # fmt: skip
        return SqlConnector(src)

    return World(
        make,
        lambda key: key,
        lambda key, body: db.run(f"UPDATE {table} SET body = :b WHERE id = :k", k=key, b=body),
        lambda key: db.run(f"DELETE FROM {table} WHERE id = :k", k=key),
        lambda: db.run(f"DROP TABLE {table}"),
    )


def git_world(tmp_path: Path) -> World:
    repo = Repo(tmp_path / "repo")
    files = {f"{key}.md": f"# {key}\n\n{body}\n".encode() for key, body in ITEMS.items()}
    repo.commit(files)

    def change(key: str, body: str) -> None:
        files[f"{key}.md"] = f"# {key}\n\n{body}\n".encode()
        repo.commit(files)

    def delete(key: str) -> None:
        del files[f"{key}.md"]
        repo.commit(files)

    def make(access: tuple[str, ...]) -> Connector:
        src = GitSource(name="conf", kind="git", path=repo.path, access=access)
        return GitConnector(src, repo.path)

    return World(make, lambda key: f"{key}.md", change, delete, lambda: shutil.rmtree(repo.path))


@pytest.fixture(params=["folder", "records", "sql", "sqlite", "git"])
def world(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    if request.param == "folder":
        yield folder_world(tmp_path)
    elif request.param == "records":
        yield records_world(tmp_path)
    elif request.param == "sql":
        yield sql_world(request.getfixturevalue("postgres_database"), monkeypatch)
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'conf.db'}"
        engine = create_engine(url)
        yield sql_world(Database("sqlite", url, engine), monkeypatch)
        engine.dispose()
    else:
        yield git_world(tmp_path)


def listing(conn: Connector) -> dict[str, str]:
    refs = list(conn.list())
    ids = [r.external_id for r in refs]
    assert len(ids) == len(set(ids)), "external ids must be unique within the source"
    return {r.external_id: r.version for r in refs}


def close(conn: Any) -> None:
    if hasattr(conn, "close"):
        conn.close()


def test_list_fetch_permissions(world: World) -> None:
    conn = world.make(("group:ops",))
    assert isinstance(conn, Connector) and conn.name == "conf"
    refs = listing(conn)
    assert set(refs) == {world.id_of(k) for k in ITEMS}
    assert listing(conn) == refs, "listing twice without a change must give the same versions"
    scale = ClassificationScale()
    for key, body in ITEMS.items():
        eid = world.id_of(key)
        doc = conn.fetch(eid)
        assert (doc.source, doc.external_id, doc.version) == ("conf", eid, refs[eid])
        assert body in doc.text and doc.title and doc.uri
        assert doc.access == validate_access(doc.access) == ("group:ops",)
        scale.rank(doc.classification)
        assert conn.permissions(eid) == doc.access
    with pytest.raises(DocumentNotFound):
        conn.fetch(world.id_of("zulu"))
    close(conn)


def test_version_is_the_incremental_cursor(world: World) -> None:
    conn = world.make(("group:ops",))
    before = listing(conn)
    world.change("bravo", "Bravo runbook: renew the certificates with the ACME client.")
    world.delete("charlie")
    after = listing(conn)
    assert set(after) == {world.id_of("alpha"), world.id_of("bravo")}
    assert after[world.id_of("alpha")] == before[world.id_of("alpha")]
    assert after[world.id_of("bravo")] != before[world.id_of("bravo")]
    assert "ACME" in conn.fetch(world.id_of("bravo")).text
    with pytest.raises(DocumentError):
        conn.fetch(world.id_of("charlie"))
    close(conn)


def test_label_change_changes_every_version(world: World) -> None:
    """Revocation: a new grant in sovra.toml must re-index (and re-label) every item."""
    old, new = world.make(("group:ops",)), world.make(("group:sre",))
    a, b = listing(old), listing(new)
    assert set(a) == set(b) and all(a[k] != b[k] for k in a)
    assert new.permissions(world.id_of("alpha")) == ("group:sre",)
    close(old)
    close(new)


def test_unavailable_source_raises_instead_of_listing_nothing(world: World) -> None:
    conn = world.make(("group:ops",))
    listing(conn)
    world.break_source()
    with pytest.raises(SourceUnavailable):
        listing(conn)
    close(conn)
