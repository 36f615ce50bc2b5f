"""The directory store: lossless one-time migration of `directory.json`, history and audit
events for every change, origins and conflicts, and the same behaviour on PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sovra.directory import Change, Directory, DirectoryConflict, IdentityMapping
from sovra.directory.store import DIRECTORY_FILENAME


def test_directory_json_is_migrated_once_and_losslessly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = {
        "users": [
            {
                "id": "alice",
                "groups": ["sre", "staff"],
                "display_name": "Alice A",
                "disabled": False,
                "since": 1700000000.5,
            },
            {
                "id": "bob",
                "groups": ["staff"],
                "display_name": "",
                "disabled": True,
                "since": 1600000000.0,
            },
        ],
        "groups": {"sre": "site reliability", "empty": ""},
    }
    (tmp_path / "directory.json").write_text(json.dumps(legacy), encoding="utf-8")
    with caplog.at_level(logging.WARNING, "sovra.directory"):
        d = Directory.in_home(tmp_path)
    assert "migrated 2 user(s) and 2 group(s)" in caplog.text
    assert not (tmp_path / "directory.json").exists()
    assert (tmp_path / "directory.json.migrated").exists()
    assert (tmp_path / DIRECTORY_FILENAME).exists()
    alice, bob = d.users()
    assert (alice.id, alice.groups, alice.display_name, alice.since, alice.disabled) == (
        "alice",
        {"sre", "staff"},
        "Alice A",
        1700000000.5,
        False,
    )
    assert (bob.disabled, bob.since) == (True, 1600000000.0)
    assert d.groups() == {"empty": [], "sre": ["alice"], "staff": ["alice", "bob"]}
    assert d.group("sre").description == "site reliability"  # type: ignore[union-attr]
    assert [c.action for c in d.history()] == ["migrate"]
    # A second open does not migrate again (the file is gone; a restored copy adds no dupes).
    (tmp_path / "directory.json").write_text(json.dumps(legacy), encoding="utf-8")
    again = Directory.in_home(tmp_path)
    assert len(again.users()) == 2 and again.user("alice").since == 1700000000.5  # type: ignore[union-attr]


def test_every_change_is_history_and_reaches_the_listener(tmp_path: Path) -> None:
    heard: list[Change] = []
    d = Directory.in_home(tmp_path, on_change=heard.append)
    d.add_user("alice", ["staff", "sre"])
    d.set_membership("alice", "sre", False)
    d.set_membership("alice", "sre", False)  # no change, no event
    d.disable_user("alice")
    d.add_user("alice")
    d.remove_user("alice")
    got = [(c.action, c.group) for c in heard]
    assert got == [
        ("user.add", None),
        ("member.add", "sre"),
        ("member.add", "staff"),
        ("member.remove", "sre"),
        ("user.disable", None),
        ("user.enable", None),
        ("user.remove", None),
    ]
    assert [c.seq for c in d.history()] == [c.seq for c in heard]


def test_second_origin_and_role_groups_need_explicit_mapping(tmp_path: Path) -> None:
    d = Directory.in_home(tmp_path)
    d.add_user("alice", ["staff"])
    with pytest.raises(DirectoryConflict, match=r"origin 'local'.*adopt_users"):
        d.add_user("alice", [], origin="scim")
    with pytest.raises(DirectoryConflict, match="role group 'auditors'"):
        d.mapping.group_name("Auditors")
    adopting = Directory.in_home(
        tmp_path, mapping=IdentityMapping({"Auditors": "auditors"}, frozenset({"alice"}))
    )
    assert adopting.mapping.group_name("Auditors") == "auditors"
    assert adopting.add_user("alice", [], origin="scim").origin == "scim"
    assert [c.action for c in adopting.history()][-1] == "user.adopt"


def test_cli_changes_are_audit_events(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sovra.cli import app
    from sovra.config import load_config
    from sovra.workspace import Workspace

    cfg = tmp_path / "sovra.toml"
    cfg.write_text('[workspace]\nhome = "data"\n', encoding="utf-8")
    runner = CliRunner()
    for args in (["user", "add", "zed", "-g", "staff"], ["group", "remove-member", "staff", "zed"]):
        result = runner.invoke(app, ["--config", str(cfg), *args])
        assert result.exit_code == 0, result.output
    history = runner.invoke(app, ["--config", str(cfg), "directory", "history", "--json"])
    assert [c["action"] for c in json.loads(history.output)] == [
        "user.add",
        "member.add",
        "member.remove",
    ]
    ws = Workspace.open(load_config(cfg))
    try:
        views = [e.view for e in ws.audit.events()]
    finally:
        ws.close()
    assert [(v["actor"], v["action"], v["details"]["group"]) for v in views] == [
        ("directory:local", "directory.user.add", None),
        ("directory:local", "directory.member.add", "staff"),
        ("directory:local", "directory.member.remove", "staff"),
    ]
    assert all(v["personal"] == {"user": "zed"} for v in views)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    base = os.environ.get("SOVRA_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("SOVRA_TEST_POSTGRES_URL is not set (CI starts PostgreSQL; see .ci/run)")
    url = make_url(base).set(drivername="postgresql+psycopg")
    name = f"sovra_dir_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_the_same_store_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    (tmp_path / "directory.json").write_text(
        json.dumps({"users": [{"id": "alice", "groups": ["sre"], "since": 5.0}]}),
        encoding="utf-8",
    )
    d = Directory.in_home(tmp_path, engine=postgres_url)
    assert not (tmp_path / DIRECTORY_FILENAME).exists()  # nothing local when given a URL
    assert d.principal("alice").groups == {"sre"}
    other = Directory(postgres_url)  # a second process sees the change at once
    d.set_membership("alice", "sre", False)
    assert other.principal("alice").groups == frozenset()
    token, _ = d.create_scim_token("okta")
    assert other.scim_token_valid(token) and not other.scim_token_valid(token + "x")
    assert [c.action for c in other.history()] == ["migrate", "member.remove", "scim_token.create"]
    assert d.erase_subject("alice") >= 2  # deletes, then VACUUM of the directory's tables
    assert other.user("alice") is None and other.history(user_id="alice") == []
    d.close()
    other.close()


def test_erasure_removes_the_subject_from_history_and_the_old_json(tmp_path: Path) -> None:
    (tmp_path / "directory.json").write_text(
        json.dumps({"users": [{"id": "zoe", "groups": ["hr"]}, {"id": "yan", "groups": []}]}),
        encoding="utf-8",
    )
    d = Directory.in_home(tmp_path)
    d.set_membership("zoe", "staff", True)
    assert d.erase_subject("zoe") >= 4
    assert d.user("zoe") is None and d.history(user_id="zoe") == []
    assert b"zoe" not in (tmp_path / "directory.json.migrated").read_bytes()
    assert d.user("yan") is not None
    # The directory still holds its pooled connections: no free page and no WAL frame of the
    # file keeps the erased rows.
    for path in tmp_path.glob("directory.db*"):
        assert b"zoe" not in path.read_bytes(), path.name


def test_database_url_puts_the_directory_on_postgresql(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sovra.config import load_config
    from sovra.workspace import directory_for

    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    monkeypatch.setenv("SOVRA_TEST_SHARED_DB", plain)
    cfg_path = tmp_path / "sovra.toml"
    cfg_path.write_text(
        '[workspace]\nhome = "data"\ndatabase_url = "env:SOVRA_TEST_SHARED_DB"\n', encoding="utf-8"
    )
    cfg = load_config(cfg_path)
    first = directory_for(cfg)
    first.add_user("erin", ["people"])
    assert directory_for(cfg).principal("erin").groups == {"people"}  # one directory for all
    assert not (tmp_path / "data" / DIRECTORY_FILENAME).exists()
