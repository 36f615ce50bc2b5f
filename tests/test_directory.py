from __future__ import annotations

from pathlib import Path

import pytest

from sovra.directory import Directory, DirectoryError


def test_add_list_and_revoke(tmp_path: Path) -> None:
    d = Directory.in_home(tmp_path)
    d.add_user("alice", ["staff", "sre"])
    assert d.principal("alice").groups == {"staff", "sre"}
    d.set_membership("alice", "sre", False)
    assert d.principal("alice").groups == {"staff"}
    assert d.groups() == {"staff": ["alice"]}


def test_unknown_user_is_a_clear_error(tmp_path: Path) -> None:
    d = Directory.in_home(tmp_path)
    d.add_user("alice", ["staff"])
    with pytest.raises(DirectoryError, match=r"unknown user 'mallory'.*sovra user add"):
        d.principal("mallory")
    d.remove_user("alice")
    with pytest.raises(DirectoryError):
        d.principal("alice")


def test_bad_names_and_corrupt_file(tmp_path: Path) -> None:
    d = Directory.in_home(tmp_path)
    with pytest.raises(DirectoryError, match="not allowed"):
        d.add_user("a b")
    (tmp_path / "directory.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DirectoryError, match="unreadable"):
        Directory.in_home(tmp_path)
    assert (tmp_path / "directory.json").read_text(encoding="utf-8") == "{not json"
