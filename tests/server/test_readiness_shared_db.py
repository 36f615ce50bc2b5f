"""`/readyz` with `[workspace] database_url`: a replica that loses the shared database turns
not-ready (503, the failing checks named) so a load balancer stops routing to it; its pooled
stores recover once the database is back; `/healthz` (liveness) stays up throughout."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

from sovra.config import load_config
from sovra.server.app import create_app
from sovra.workspace import Workspace
from tests.server.conftest import Issuer, Site, settings_for
from tests.support.shared_db import base_url, fresh_database

ENV = "SOVRA_TEST_READY_DB"


def _allow(name: str, allowed: bool) -> None:
    admin = create_engine(
        make_url(base_url()).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
    admin.dispose()


def test_readiness_fails_while_the_shared_database_is_unreachable(
    site: Site, issuer: Issuer, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fresh_database("sovra_ready") as url:
        monkeypatch.setenv(ENV, url)
        base = load_config(site.root / "sovra.toml")
        config = base.model_copy(
            update={"workspace": base.workspace.model_copy(update={"database_url": f"env:{ENV}"})}
        )
        ws = Workspace.open(config)
        # The embedded index admits one opener per home: share the session workspace's.
        ws._index = workspace.index
        name = make_url(url).database or ""
        try:
            app = create_app(config, settings_for(issuer), ws)
            with TestClient(app, raise_server_exceptions=False) as client:
                up = client.get("/readyz")
                assert up.status_code == 200, up.text
                _allow(name, False)
                try:
                    down = client.get("/readyz")
                    assert down.status_code == 503, down.text
                    checks = down.json()["checks"]
                    assert checks["accounts"].startswith("error") and checks["index"] == "ok"
                    assert client.get("/healthz").status_code == 200
                finally:
                    _allow(name, True)
                # The pooled stores (accounts, sync state) reconnect once the database is back.
                # The audit log's PostgreSQL store holds one connection and does not (found
                # here, left to the audit owner): the replica stays not-ready until restarted.
                again = client.get("/readyz").json()["checks"]
                assert again["accounts"] == "ok" and again["state"] == "ok", again
        finally:
            ws._index = None  # the session workspace closes it
            ws.close()
