"""Every store in the data directory is owner-only (dirs 0700, files 0600), and doctor says so.

A workspace is built the way an operator builds one — init, sync, ask, feedback through the real
CLI, with a permissive umask (022, the usual default) — then the whole data directory is walked.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sovra.cli import app
from sovra.config import load_config
from tests.support.answer import CONFIG, DISK_PRESSURE


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _cli(cfg: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--config", str(cfg), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _too_open(home: Path) -> list[str]:
    bad: list[str] = []
    for path in [home, *home.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            bad.append(f"{path.relative_to(home.parent)} {oct(mode)}")
    return bad


def _site(tmp_path: Path) -> Path:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "disk.md").write_text(DISK_PRESSURE, encoding="utf-8")
    cfg = tmp_path / "sovra.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    return cfg


def test_data_directory_is_owner_only_after_sync_and_ask(
    tmp_path: Path, permissive_umask: None
) -> None:
    cfg = _site(tmp_path)
    _cli(cfg, "init", "--demo-directory")
    _cli(cfg, "source", "sync", "--all")
    answer = json.loads(
        _cli(cfg, "ask", "What happens on disk pressure?", "--as", "alice", "--json")
    )
    _cli(cfg, "search", "disk pressure", "--as", "alice")
    assert answer  # the ask went through and wrote its audit record
    home = tmp_path / "data"
    files = [p for p in home.rglob("*") if p.is_file()]
    assert len(files) >= 5, files  # index, state, audit, directory, ... were all created
    assert _too_open(home) == []
    from sovra.cli.doctor import file_mode_checks

    assert all(c.status == "ok" for c in file_mode_checks(home)), file_mode_checks(home)


def test_doctor_names_too_open_files_and_the_fix(tmp_path: Path, permissive_umask: None) -> None:
    cfg = _site(tmp_path)
    _cli(cfg, "init", "--demo-directory")
    home = load_config(cfg).home
    loose = home / "state.sqlite"
    loose.touch()
    loose.chmod(0o644)
    home.chmod(0o755)
    from sovra.cli.doctor import file_mode_checks

    checks = file_mode_checks(home)
    bad = [c for c in checks if c.status != "ok"]
    text = " ".join(c.detail for c in bad)
    assert f"chmod 600 {loose}" in text
    assert f"chmod 700 {home}" in text
    result = CliRunner().invoke(app, ["--config", str(cfg), "doctor", "--json"])
    data = json.loads(result.output)
    rows = [c for c in data["checks"] if c["name"] == "data file modes"]
    assert rows and rows[0]["status"] == "fail" and str(loose) in rows[0]["detail"]
