"""`[workspace] database_url`: the one switch that puts every shared store on PostgreSQL.

Every shared store follows it; a store without PostgreSQL support would make a workspace with
the switch set refuse to open and name it (issue 18 §2: none may silently stay local)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovra.config import ConfigError, load_config
from sovra.workspace import LOCAL_ONLY_STORES, Workspace


def _config(tmp_path: Path, ref: str) -> Path:
    p = tmp_path / "sovra.toml"
    p.write_text(f'[workspace]\nhome = "data"\ndatabase_url = "{ref}"\n', encoding="utf-8")
    return p


def test_literal_url_in_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"workspace\.database_url.*env:"):
        load_config(_config(tmp_path, "postgresql://u:secret@db/sovra"))


def test_unset_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOVRA_TEST_DB_REF", raising=False)
    cfg = load_config(_config(tmp_path, "env:SOVRA_TEST_DB_REF"))
    with pytest.raises(ConfigError, match=r"workspace\.database_url names \$SOVRA_TEST_DB_REF"):
        cfg.shared_database_url()


def test_non_postgres_url_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVRA_TEST_DB_REF", "sqlite:///x.db")
    cfg = load_config(_config(tmp_path, "env:SOVRA_TEST_DB_REF"))
    with pytest.raises(ConfigError, match=r"postgresql://"):
        cfg.shared_database_url()


def test_empty_switch_keeps_local_files(tmp_path: Path) -> None:
    p = tmp_path / "sovra.toml"
    p.write_text('[workspace]\nhome = "data"\n', encoding="utf-8")
    cfg = load_config(p)
    assert cfg.shared_database_url() is None
    Workspace.open(cfg).close()


def test_every_store_follows_the_switch() -> None:
    from sovra.workspace import SHARED_STORES

    assert LOCAL_ONLY_STORES == ()
    for store in (
        "accounts/API keys/sessions",
        "pending OIDC logins",
        "rate-limit counters",
        "directory",
        "sync state",
        "usage ledger",
        "flows (DBOS)",
        "audit log",
    ):
        assert store in SHARED_STORES


def test_workspace_refuses_and_names_local_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard stays for any store added later without PostgreSQL support."""
    import sovra.workspace

    monkeypatch.setattr(sovra.workspace, "LOCAL_ONLY_STORES", ("a future local store",))
    monkeypatch.setenv("SOVRA_TEST_DB_REF", "postgresql://postgres@127.0.0.1:1/none")
    cfg = load_config(_config(tmp_path, "env:SOVRA_TEST_DB_REF"))
    assert cfg.shared_database_url() == "postgresql://postgres@127.0.0.1:1/none"
    with pytest.raises(ConfigError, match="a future local store"):
        Workspace.open(cfg)
    assert not (tmp_path / "data").exists(), "refused before creating any local store"
