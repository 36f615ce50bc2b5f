"""The layers of docs/architecture.md hold: import-linter's contract passes on the tree and
fails on a copy of it with one deliberate upward import (inside a function, where a lazy import
would have hidden it before)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the project's contract on the package under `tree/src`."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "src" / "sovra",
        tmp_path / "src" / "sovra",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def test_the_tree_keeps_its_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken" in result.stdout


def test_a_lazy_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    domain = tree / "src" / "sovra" / "domain.py"
    domain.write_text(
        domain.read_text()
        + "\n\ndef _deliberate_violation() -> object:\n"
        + "    from sovra.workspace import Workspace\n\n"
        + "    return Workspace\n"
    )
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "sovra.domain -> sovra.workspace" in result.stdout


def test_a_package_outside_the_layers_breaks_the_contract(tmp_path: Path) -> None:
    """A new package must be placed in a layer (the contract is exhaustive)."""
    tree = copy_tree(tmp_path)
    (tree / "src" / "sovra" / "unplaced").mkdir()
    (tree / "src" / "sovra" / "unplaced" / "__init__.py").write_text('"""Nowhere yet."""\n')
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "sovra.unplaced" in result.stdout + result.stderr
