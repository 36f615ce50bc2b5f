"""A fresh PostgreSQL database on the test cluster ($SOVRA_TEST_POSTGRES_URL) for the stores
that follow `[workspace] database_url`; dropped afterwards. Without the URL the PostgreSQL
legs skip locally and fail under CI=true, so CI cannot silently drop them."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url, text

PG_ENV = "SOVRA_TEST_POSTGRES_URL"


def base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {PG_ENV} is not set: the shared-store tests must run")
        pytest.skip(f"{PG_ENV} not set (start PostgreSQL as .ci/run does)")
    return url


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty database; yields its `postgresql://` URL (the form operators write)."""
    base = make_url(base_url())
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(drivername="postgresql", database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
