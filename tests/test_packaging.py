"""Packaging: the two locks split runtime from tools, and the built wheel runs on the runtime lock.

requirements.lock pins what the product (and `make demo`) needs; requirements-dev.lock pins the
test, lint, benchmark and evaluation tools. The slow test builds the wheel with `python -m build`,
installs it into a fresh venv with the runtime lock only, and runs `sovra --help` and a real
`sovra search` there, so a runtime import that only the dev lock satisfies fails here, not on a
user's machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"

# Files the product reads at run time from inside the package, not from the source tree.
PACKAGE_DATA = [
    "server/templates",
    "server/static",
    "policy/defaults",
    "flows/defaults",
    "governance/templates",
]

SITE_CONFIG = """
[workspace]
home = "data"
region = "eu-de"

[[sources]]
name = "notes"
kind = "folder"
path = "notes"
access = ["group:staff"]
classification = "internal"
residency = "eu"
"""


def pins(lock: Path) -> dict[str, str]:
    """Canonical package name -> pinned version; every line of a lock is `name==version`."""
    pinned: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.partition("==")
        assert sep and name and version, f"{lock.name}: not a pin: {line!r}"
        key = canonicalize_name(name)
        assert key not in pinned, f"{lock.name}: {name} pinned twice"
        pinned[key] = version
    return pinned


def project() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    table = data["project"]
    assert isinstance(table, dict)
    return table


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_locks_are_disjoint_and_leave_torch_to_the_makefile() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    assert not runtime.keys() & dev.keys()
    # torch is installed first and alone (its CPU build); a lock pin would pull the CUDA one.
    assert "torch" not in runtime and "torch" not in dev


def test_runtime_lock_pins_the_product_and_demo_only() -> None:
    table = project()
    extras = table["optional-dependencies"]
    assert isinstance(extras, dict)
    dependencies = table["dependencies"]
    assert isinstance(dependencies, list)
    runtime = pins(RUNTIME_LOCK).keys()
    assert names(dependencies) - {"torch"} <= runtime
    assert names(extras["demo"]) <= runtime
    tools = names(extras["dev"] + extras["bench"] + extras["eval"])
    assert tools <= pins(DEV_LOCK).keys()
    assert not tools & runtime, "a tool is pinned in the runtime lock"


def torch_pin() -> str:
    """The torch requirement the Makefile installs first (one place to change it)."""
    found = re.search(r"pip install -q (torch==\S+)", (REPO / "Makefile").read_text("utf-8"))
    assert found, "Makefile: no torch install line"
    return found.group(1)


def run(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_wheel_runs_search_on_the_runtime_lock_alone(tmp_path: Path) -> None:
    started = time.monotonic()
    # The source tree must not shadow the installed wheel.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    # Build from a copy: an in-tree build leaves build/ and *.egg-info in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, source, cwd=tmp_path, env=env)
    (wheel,) = dist.glob("sovra-*.whl")

    packaged = set(zipfile.ZipFile(wheel).namelist())
    assert "sovra/py.typed" in packaged
    for folder in PACKAGE_DATA:
        shipped = {
            "sovra/" + p.relative_to(REPO / "src/sovra").as_posix()
            for p in (REPO / "src/sovra" / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        assert shipped, folder
        assert shipped <= packaged, f"missing from the wheel: {sorted(shipped - packaged)}"

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    pip: list[str | Path] = [venv / "bin/python", "-m", "pip", "install", "-q"]
    run(*pip, torch_pin(), cwd=tmp_path, env=env)
    run(*pip, "-r", RUNTIME_LOCK, cwd=tmp_path, env=env)
    run(*pip, "--no-deps", wheel, cwd=tmp_path, env=env)
    installed_at = time.monotonic()

    # Every requirement of the installed sovra (and of its dependencies) is met by the lock.
    run(venv / "bin/python", "-m", "pip", "check", cwd=tmp_path, env=env)
    listed = run(venv / "bin/python", "-m", "pip", "list", "--format=json", cwd=tmp_path, env=env)
    present = {canonicalize_name(d["name"]) for d in json.loads(listed.stdout)}
    assert not present & pins(DEV_LOCK).keys(), "dev tools in the runtime venv"
    for tool in ("locust", "pytest", "playwright", "faker"):
        proc = subprocess.run(
            [venv / "bin/python", "-m", "pip", "show", tool],
            env=env,
            capture_output=True,
            check=False,
        )
        assert proc.returncode != 0, f"{tool} is installed"

    site = tmp_path / "site"
    (site / "notes").mkdir(parents=True)
    (site / "notes/backups.md").write_text(
        "# Nightly backups\n\nThe backup job copies the billing database to cold storage "
        "every night at two; restore drills run on the first Monday of the month.\n",
        encoding="utf-8",
    )
    (site / "notes/lunch.md").write_text(
        "# Canteen\n\nThe canteen serves soup and salad from noon; Fridays are pizza day.\n",
        encoding="utf-8",
    )
    (site / "sovra.toml").write_text(SITE_CONFIG, encoding="utf-8")
    sovra = venv / "bin/sovra"

    where = run(venv / "bin/python", "-c", "import sovra; print(sovra.__file__)", cwd=site, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv)
    assert "search" in run(sovra, "--help", cwd=site, env=env).stdout
    run(sovra, "init", cwd=site, env=env)
    run(sovra, "user", "add", "ann", "--group", "staff", cwd=site, env=env)
    synced = run(sovra, "source", "sync", "--all", cwd=site, env=env)
    assert "+2 added" in synced.stdout, synced.stdout
    found = run(
        sovra,
        "search",
        "billing database restore",
        "--as",
        "ann",
        "--json",
        "--no-group",
        cwd=site,
        env=env,
    )
    hits = json.loads(found.stdout)["hits"]
    assert hits[0]["document_id"] == "notes:backups.md"

    print(
        f"\nwheel + runtime install: {installed_at - started:.0f}s, "
        f"total: {time.monotonic() - started:.0f}s"
    )
