"""The `[audit]` table of sovra.toml: where the log lives, its key and retention."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sovra.audit import AuditError, AuditEvent
from sovra.config import ConfigError, load_config
from sovra.workspace import open_audit_log


def _config(tmp_path: Path, audit_table: str) -> Path:
    path = tmp_path / "sovra.toml"
    path.write_text(f'[workspace]\nhome = "data"\n\n[audit]\n{audit_table}\n', encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_audit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SOVRA_AUDIT_") or name == "SOVRA_HOME":
            monkeypatch.delenv(name)


def test_key_path_and_retention_come_from_the_config(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, 'key_path = "keys/audit.key"\nretention_days = 400'))
    with open_audit_log(config) as log:
        log.append(AuditEvent(actor="user:alice", action="search"))
        assert log.retention_days == 400
    key = tmp_path / "keys" / "audit.key"
    assert key.is_file() and (key.stat().st_mode & 0o077) == 0
    assert not (tmp_path / "data" / "audit" / "keys" / "log.key").exists()


def test_named_url_variable_that_is_unset_refuses_instead_of_falling_back(
    tmp_path: Path,
) -> None:
    config = load_config(_config(tmp_path, 'database_url_env = "SOVRA_TEST_UNSET_AUDIT_URL"'))
    with pytest.raises(AuditError, match=r"\$SOVRA_TEST_UNSET_AUDIT_URL"):
        open_audit_log(config)
    assert not (tmp_path / "data" / "audit" / "log.sqlite").exists()


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(_config(tmp_path, "retention_days = 400"))
    monkeypatch.setenv("SOVRA_AUDIT_RETENTION_DAYS", "500")
    with open_audit_log(config) as log:
        assert log.retention_days == 500


@pytest.mark.parametrize(
    ("table", "field"),
    [("retention_days = 30", "retention_days"), ('pg_schema = "x; drop"', "pg_schema")],
)
def test_bad_values_name_the_field(tmp_path: Path, table: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(_config(tmp_path, table))
