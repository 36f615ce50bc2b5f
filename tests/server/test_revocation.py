"""A user who leaves takes their credentials along: `user remove` / `user disable` revoke
their API keys and end their sessions, re-adding the id does not revive them, and a sign-in
through the identity provider ends once `session_recheck_s` has passed (its groups cannot be
asked for again)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sovra.cli.directory import user_app
from sovra.cli.kit import CliState
from sovra.directory import Directory, UnknownUser
from sovra.server.accounts import AccountStore
from tests.support.server import RUNBOOK, Issuer, Site, bearer

cli = typer.Typer()


@cli.callback()
def _root(ctx: typer.Context, config: Annotated[Path, typer.Option("--config")]) -> None:
    ctx.obj = CliState(config_path=config)


cli.add_typer(user_app, name="user")


def sovra(site: Site, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(site.root / "sovra.toml"), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def leaver(site: Site) -> Iterator[tuple[str, str, str]]:
    """A fresh user with an API key and a browser session: (user, key, session cookie)."""
    user = f"leaver{time.monotonic_ns()}"
    Directory.in_home(site.root / "data").add_user(user, ["staff"])
    accounts = AccountStore.in_home(site.root / "data")
    try:
        key = accounts.create_key(user, "bot", ("search",))[0]
        token, _ = accounts.create_session(user, 3600)
    finally:
        accounts.close()
    yield user, key, token
    with contextlib.suppress(UnknownUser):  # the test may have removed it already
        Directory.in_home(site.root / "data").remove_user(user)


def works(client: TestClient, key: str, cookie: str) -> tuple[int, int]:
    by_key = client.get("/api/v1/sources", headers=bearer(key)).status_code
    client.cookies.clear()
    by_session = client.get("/api/v1/sources", headers={"Cookie": f"sovra_session={cookie}"})
    return by_key, by_session.status_code


@pytest.mark.parametrize("how", ["remove", "disable"])
def test_leaving_revokes_keys_and_sessions_for_good(
    client: TestClient, site: Site, leaver: tuple[str, str, str], how: str
) -> None:
    user, key, cookie = leaver
    assert works(client, key, cookie) == (200, 200)
    out = sovra(site, "user", how, user)
    assert "1 API key(s) revoked, 1 session(s) ended" in out
    assert works(client, key, cookie) == (401, 401)
    sovra(site, "user", "add", user, "--group", "staff")
    assert works(client, key, cookie) == (401, 401)
    accounts = AccountStore.in_home(site.root / "data")
    try:
        assert [k.revoked_at is not None for k in accounts.keys(user)] == [True]
    finally:
        accounts.close()


def test_re_adding_an_id_outside_the_cli_revives_nothing(
    client: TestClient, site: Site, leaver: tuple[str, str, str]
) -> None:
    """Even when the directory is changed without the CLI (a script, a restored file), the
    credentials are bound to the user entry they were issued for."""
    user, key, cookie = leaver
    directory = Directory.in_home(site.root / "data")
    directory.remove_user(user)
    time.sleep(0.01)
    directory.add_user(user, ["staff"])
    assert works(client, key, cookie) == (401, 401)


def oidc_session(site: Site, age_s: float) -> str:
    accounts = AccountStore.in_home(site.root / "data")
    try:
        token, _ = accounts.create_session("olivia", 3600, groups=("staff", "sre"))
    finally:
        accounts.close()
    age(site, "olivia", age_s)
    return token


def age(site: Site, user: str, seconds: float) -> None:
    """Make the user's recent sessions look `seconds` older (as if time had passed)."""
    with sqlite3.connect(site.root / "data" / "server" / "accounts.sqlite") as db:
        db.execute(
            "UPDATE sessions SET created_at = created_at - ?, checked_at = checked_at - ? "
            "WHERE user_id=? AND checked_at > ?",
            (seconds, seconds, user, time.time() - 30),
        )


def test_identity_provider_sessions_end_after_the_recheck_interval(
    client: TestClient, site: Site
) -> None:
    fresh = oidc_session(site, 0)
    client.cookies.clear()
    assert (
        client.get("/api/v1/sources", headers={"Cookie": f"sovra_session={fresh}"}).status_code
        == 200
    )
    stale = oidc_session(site, 301)  # default session_recheck_s = 300
    client.cookies.clear()
    resp = client.get("/api/v1/sources", headers={"Cookie": f"sovra_session={stale}"})
    assert resp.status_code == 401
    accounts = AccountStore.in_home(site.root / "data")
    try:
        assert accounts.session(stale) is None  # ended, not just refused once
    finally:
        accounts.close()


def test_identity_provider_is_asked_again_for_the_groups(
    live_url: str, site: Site, issuer: Issuer
) -> None:
    """Past `session_recheck_s` the IdP's userinfo decides: a group it no longer lists is gone
    at once, and a token it refuses ends the session."""
    from tests.server.test_oidc_login import authorize, browser, callback, start

    issuer.login = {"sub": "olivia", "groups": ["staff", "sre"]}
    try:
        with browser(live_url) as http:
            assert callback(http, authorize(start(http))).status_code == 200
            access = next(reversed(issuer.userinfo))
            assert http.get(f"/api/v1/documents/{RUNBOOK}").status_code == 200
            issuer.userinfo[access]["groups"] = ["staff"]  # taken out of sre at the IdP
            assert http.get(f"/api/v1/documents/{RUNBOOK}").status_code == 200  # not yet due
            age(site, "olivia", 301)
            assert http.get(f"/api/v1/documents/{RUNBOOK}").status_code == 404
            assert http.get("/api/v1/sources").status_code == 200  # still signed in
            del issuer.userinfo[access]  # the IdP ends the user's grant
            age(site, "olivia", 301)
            assert http.get("/api/v1/sources").status_code == 401
    finally:
        issuer.login = {}
