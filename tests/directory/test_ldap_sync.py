"""`sovra directory sync` against a real slapd: users, groups, nested groups, disabled
accounts, removals, conflicts — and a permission change in LDAP reaching search results on the
next query after the sync."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sovra.cli import app
from sovra.config import load_config
from sovra.directory import Directory
from sovra.directory.ldap import is_disabled, transitive_members
from sovra.server.accounts import AccountStore
from sovra.workspace import Workspace
from tests.directory.conftest import LDAP_PASSWORD_ENV
from tests.support.slapd import ADMIN_PASSWORD, Slapd

runner = CliRunner()


@pytest.fixture(autouse=True)
def _ldap_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LDAP_PASSWORD_ENV, ADMIN_PASSWORD)


def sovra(site: Path, *args: str, code: int = 0) -> Any:
    result = runner.invoke(app, ["--config", str(site / "sovra.toml"), *args])
    assert result.exit_code == code, result.output
    return result


def sync(site: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(sovra(site, "directory", "sync", "--json").output)
    return out


def search(site: Path, user: str) -> list[dict[str, Any]]:
    result = sovra(
        site, "search", "etcd database quota low space", "--as", user, "--json", "--no-group"
    )
    hits: list[dict[str, Any]] = json.loads(result.output)["hits"]
    return hits


def directory(site: Path) -> Directory:
    return Directory.in_home(site / "data")


def test_nested_groups_resolve_transitively_and_cycles_end() -> None:
    direct = {"g:a": {"g:b", "u:1"}, "g:b": {"g:c", "u:2"}, "g:c": {"g:a", "u:3"}}
    got = transitive_members(direct, {"u:1", "u:2", "u:3"})
    assert got["g:a"] == got["g:b"] == got["g:c"] == {"u:1", "u:2", "u:3"}


def test_active_directory_disabled_flag_is_bit_two() -> None:
    assert is_disabled("userAccountControl", ["514"])  # NORMAL_ACCOUNT | ACCOUNTDISABLE
    assert not is_disabled("userAccountControl", ["512"])
    assert not is_disabled("userAccountControl", ["66048"])  # DONT_EXPIRE_PASSWORD, enabled
    assert is_disabled("employeeType", ["Disabled"])
    assert not is_disabled("employeeType", ["contractor"])


def test_a_group_removal_in_ldap_reaches_search_on_the_next_query(site: Path, slapd: Slapd) -> None:
    ann = slapd.add_user("ann", "Ann Lee")
    oncall = slapd.add_group("oncall", [ann])
    sre = slapd.add_group("sre", [oncall])  # nested: ann is in sre through oncall
    report = sync(site)
    assert "ann" in report["added"]
    assert directory(site).principal("ann").groups >= {"sre", "oncall"}
    assert any(h["source"] == "runbooks" for h in search(site, "ann"))

    slapd.set_members(oncall, [])  # ann leaves oncall, so also sre
    sync(site)
    assert "sre" not in directory(site).principal("ann").groups
    assert not any(h["source"] == "runbooks" for h in search(site, "ann"))
    # Every membership change is in the directory history and in the audit log.
    actions = [(c.action, c.group) for c in directory(site).history(200, "ann")]
    assert ("member.remove", "sre") in actions
    ws = Workspace.open(load_config(site / "sovra.toml"))
    try:
        audited = [
            e.view for e in ws.audit.events() if e.view["action"] == "directory.member.remove"
        ]
    finally:
        ws.close()
    assert any(v["details"]["group"] == "sre" and v["actor"] == "directory:ldap" for v in audited)
    slapd.delete(sre)
    slapd.delete(oncall)


def test_disabled_and_deleted_accounts_lose_access_and_credentials(
    site: Path, slapd: Slapd
) -> None:
    slapd.add_user("ben", "Ben Ode")
    gone = slapd.add_user("cat", "Cat Ode")
    team = slapd.add_group("ops", [f"uid=ben,{gone.split(',', 1)[1]}", gone])
    sync(site)
    accounts = AccountStore.in_home(site / "data")
    try:
        key = accounts.create_key("ben", "bot", ("search",))[0]
        assert accounts.authenticate_key(key) is not None
        slapd.set_disabled("ben", True)
        slapd.delete(gone)
        report = sync(site)
        assert report["disabled"] == ["ben"] and report["removed"] == ["cat"]
        assert accounts.authenticate_key(key) is None
    finally:
        accounts.close()
    assert directory(site).user("ben").disabled  # type: ignore[union-attr]
    assert directory(site).user("cat") is None
    sovra(site, "search", "etcd", "--as", "ben", code=2)
    slapd.set_disabled("ben", False)
    assert sync(site)["enabled"] == ["ben"]
    assert "ops" in directory(site).principal("ben").groups
    slapd.delete(team)


def test_role_group_and_two_origin_user_are_refused_unless_mapped(site: Path, slapd: Slapd) -> None:
    dee = slapd.add_user("dee", "Dee Ode")
    admins = slapd.add_group("admins", [dee])
    result = sovra(site, "directory", "sync", code=2)
    assert "collides with sovra's role group 'admins'" in result.output
    assert "[directory.group_map]" in result.output
    assert directory(site).user("dee") is None  # nothing written
    slapd.delete(admins)
    # The configured mapping "LDAP Admins" = "admins" grants the role explicitly.
    mapped = slapd.add_group("LDAP Admins", [dee])
    sync(site)
    assert "admins" in directory(site).principal("dee").groups
    slapd.delete(mapped)
    sync(site)
    assert "admins" not in directory(site).principal("dee").groups

    directory(site).add_user("eve", ["staff"])  # a local user ...
    eve = slapd.add_user("eve", "Eve Ode")  # ... that LDAP also knows
    result = sovra(site, "directory", "sync", code=2)
    assert "user 'eve' already exists from origin 'local'" in result.output
    assert "adopt_users" in result.output
    assert directory(site).user("eve").origin == "local"  # type: ignore[union-attr]
    slapd.delete(eve)
    slapd.delete(dee)
    sync(site)
