"""Audit fixtures: every log test runs against SQLite and against PostgreSQL.

The PostgreSQL leg uses $SOVRA_TEST_POSTGRES_URL (set by .ci/run) and a fresh schema per test;
without the URL it is skipped locally but fails under CI=true, so CI cannot silently drop it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.audit import EventMaker, LogFactory, make_event


@pytest.fixture(params=["sqlite", "postgres"])
def logs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogFactory]:
    factory = LogFactory(request.param, tmp_path)
    yield factory
    factory.cleanup()


@pytest.fixture
def sqlite_logs(tmp_path: Path) -> Iterator[LogFactory]:
    factory = LogFactory("sqlite", tmp_path)
    yield factory
    factory.cleanup()


@pytest.fixture
def event() -> EventMaker:
    return make_event
