"""Typed errors become HTTP statuses by kind in the app's one handler, with the usual JSON
error shape, and a 5xx body never carries the error's own (internal) message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sovra.config import load_config
from sovra.directory import UnknownUser
from sovra.errors import Conflict, Forbidden, Invalid, NotFound, SovraError, Unavailable
from sovra.server import ServerSettings, create_app
from sovra.workspace import Workspace

RAISED: dict[str, SovraError] = {
    "invalid": Invalid("k must be between 1 and 50"),
    "not-found": NotFound("no document 'x'"),
    "unknown-user": UnknownUser("unknown user 'mallory'"),
    "forbidden": Forbidden("administrators only"),
    "conflict": Conflict("already decided"),
    "unavailable": Unavailable("cannot connect to postgresql://sovra:secret@db.internal/audit"),
    "bare": SovraError("raised without a kind"),
}


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    (tmp_path / "sovra.toml").write_text('[workspace]\nhome = "data"\n', encoding="utf-8")
    config = load_config(tmp_path / "sovra.toml")
    ws = Workspace.open(config)
    app = create_app(config, ServerSettings(secure_cookies=False), ws)

    @app.get("/api/v1/raise/{name}")
    async def raise_it(name: str) -> None:
        raise RAISED[name]

    @app.get("/v1/raise/{name}")
    async def raise_openai(name: str) -> None:
        raise RAISED[name]

    # No lifespan (no `with`): these routes need no model warm-up.
    yield TestClient(app, raise_server_exceptions=False)
    ws.close()


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("invalid", 400, "bad_request"),
        ("not-found", 404, "not_found"),
        ("unknown-user", 404, "not_found"),
        ("forbidden", 403, "forbidden"),
        ("conflict", 409, "conflict"),
    ],
)
def test_client_errors_carry_their_message(
    client: TestClient, name: str, status: int, code: str
) -> None:
    resp = client.get(f"/api/v1/raise/{name}")
    assert resp.status_code == status
    assert resp.json() == {"error": code, "detail": str(RAISED[name])}


@pytest.mark.parametrize(("name", "status"), [("unavailable", 503), ("bare", 500)])
def test_server_errors_hide_their_message(client: TestClient, name: str, status: int) -> None:
    resp = client.get(f"/api/v1/raise/{name}")
    assert resp.status_code == status
    assert str(RAISED[name]) not in resp.text and "secret" not in resp.text
    assert resp.json()["error"] in ("unavailable", "internal")


def test_openai_paths_get_the_openai_error_shape(client: TestClient) -> None:
    resp = client.get("/v1/raise/not-found")
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {"message": "no document 'x'", "type": "not_found", "code": 404}
    }
