"""Fixtures for the index conformance suite: every backend runs every test.

A new backend (e.g. the scale-out one) joins by adding its name to BACKENDS in
`sovra.index` and to `open_index`; the suite then runs against it unchanged.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovra.index import BACKENDS, Index, open_index
from tests.support.index import Opener


def _available(backend: str) -> bool:
    if backend == "lance":
        return importlib.util.find_spec("lancedb") is not None
    return True


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if not _available(name):
        pytest.skip(f"backend {name} needs a package that is not installed")
    return name


@pytest.fixture
def opener(backend: str, tmp_path: Path) -> Iterator[Opener]:
    """Opens the index at one temp directory (call again after close() to reopen)."""
    opened: list[Index] = []

    def open_(dimension: int = 8, path: Path | None = None) -> Index:
        idx = open_index(path or tmp_path / "index", dimension=dimension, backend=backend)
        opened.append(idx)
        return idx

    yield open_
    for idx in opened:
        idx.close()
