"""`sovra user set-password` and `sovra apikey create|list|revoke`, mounted the way the root
CLI mounts them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from sovra.cli import serve as server_cli
from sovra.cli.kit import CliState
from sovra.directory import Directory
from sovra.server.accounts import AccountStore

app = typer.Typer()


@app.callback()
def _root(ctx: typer.Context, config: Annotated[Path, typer.Option("--config")]) -> None:
    ctx.obj = CliState(config_path=config)


app.command("set-password")(server_cli.set_password_command)
app.command("serve")(server_cli.serve_command)
app.add_typer(server_cli.apikey_app, name="apikey")
runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "sovra.toml").write_text('[workspace]\nhome = "data"\n', encoding="utf-8")
    Directory.in_home(tmp_path / "data").add_user("alice", ["staff"])
    return tmp_path


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["--config", str(home / "sovra.toml"), *args], env=env)
    return result.exit_code, result.output


def test_set_password(home: Path) -> None:
    code, out = run(home, "set-password", "alice", env={"SOVRA_PASSWORD": "correct horse"})
    assert code == 0, out
    accounts = AccountStore.in_home(home / "data")
    try:
        assert accounts.check_password("alice", "correct horse")
        assert not accounts.check_password("alice", "wrong horse")
    finally:
        accounts.close()
    code, out = run(home, "set-password", "mallory", env={"SOVRA_PASSWORD": "correct horse"})
    assert code != 0 and "unknown user 'mallory'" in out


def test_apikey_lifecycle(home: Path) -> None:
    code, out = run(
        home, "apikey", "create", "alice", "--name", "bot", "--scope", "search", "--json"
    )
    assert code == 0, out
    created = json.loads(out)
    assert created["key"].startswith("sovra_") and created["scopes"] == ["search"]
    code, out = run(home, "apikey", "list", "--json")
    listed = json.loads(out)
    assert [k["id"] for k in listed] == [created["id"]]
    assert created["key"] not in out  # never shown again
    code, out = run(home, "apikey", "revoke", created["id"], "--json")
    assert code == 0 and json.loads(out)["revoked"] is True
    accounts = AccountStore.in_home(home / "data")
    try:
        assert accounts.authenticate_key(created["key"]) is None
    finally:
        accounts.close()
    assert run(home, "apikey", "revoke", "nope")[0] != 0
    assert run(home, "apikey", "create", "alice", "--scope", "root")[0] != 0
    assert run(home, "apikey", "create", "ghost")[0] != 0


def test_serve_sets_demo_logins_and_runs_uvicorn_on_loopback(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    seen: dict[str, object] = {}

    def fake_run(app: object, **kwargs: object) -> None:
        seen.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    code, out = run(home, "serve", "--port", "8999", "--demo-logins")
    assert code == 0, out
    assert "demo login: alice / alice-demo" in out
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8999
    assert seen["access_log"] is False
    code, out = run(home, "serve", "--demo-logins")
    assert "demo login: alice / alice-demo" in out  # still the demo password: still shown


def test_serve_reads_the_server_table_and_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    config = home / "sovra.toml"
    config.write_text(
        config.read_text(encoding="utf-8") + '\n[server]\nport = 8123\nhost = "127.0.0.2"\n',
        encoding="utf-8",
    )
    code, out = run(home, "serve")
    assert code == 0, out
    assert (seen["host"], seen["port"]) == ("127.0.0.2", 8123)
    assert "http://127.0.0.2:8123/" in out
    code, out = run(home, "serve", env={"SOVRA_SERVER_PORT": "8124"})
    assert code == 0 and seen["port"] == 8124
    code, out = run(home, "serve", "--port", "8125", env={"SOVRA_SERVER_PORT": "8124"})
    assert code == 0 and seen["port"] == 8125
    code, out = run(home, "serve", env={"SOVRA_SERVER_OIDC_ALGORITHMS": '["HS256"]'})
    assert code != 0 and "oidc_algorithms" in out and "asymmetric" in out
