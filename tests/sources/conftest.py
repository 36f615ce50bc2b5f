"""Database fixtures of the connector tests: a database per test module on the PostgreSQL of
$SOVRA_TEST_POSTGRES_URL and on a MariaDB server this session starts (tests/support/mariadb.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from tests.support.audit import postgres_url
from tests.support.mariadb import MariaDB, running_mariadb


@dataclass
class Database:
    kind: str
    url: str
    engine: Engine

    def run(self, *statements: str, **params: object) -> None:
        with self.engine.begin() as conn:
            for stmt in statements:
                conn.execute(text(stmt), params)

    def scalar(self, stmt: str) -> object:
        with self.engine.connect() as conn:
            return conn.execute(text(stmt)).scalar()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDB]:
    with running_mariadb() as server:
        yield server


def _postgres_database() -> Iterator[Database]:
    admin_url = make_url(postgres_url()).set(drivername="postgresql+psycopg")
    name = f"sovra_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name)
    engine = create_engine(url)
    try:
        yield Database("postgres", url.render_as_string(hide_password=False), engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _mariadb_database(server: MariaDB) -> Iterator[Database]:
    name = f"sovra_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}`"))
    engine = create_engine(server.url(name))
    try:
        yield Database("mariadb", server.url(name), engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture(scope="module", params=["postgres", "mariadb"])
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh, empty database on each real server, for one test module."""
    if request.param == "postgres":
        yield from _postgres_database()
    else:
        yield from _mariadb_database(request.getfixturevalue("mariadb_server"))


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[Database]:
    yield from _postgres_database()


@pytest.fixture
def db_url_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of an environment variable the test sets to a database URL."""
    name = f"SOVRA_TEST_SQL_URL_{uuid.uuid4().hex[:6].upper()}"
    yield name
    os.environ.pop(name, None)
