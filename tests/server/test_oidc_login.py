"""Browser sign-in through a real local OIDC issuer: authorization code + PKCE (S256), state,
nonce and audience checked, groups from the ID token, then the normal session cookie. Every
broken variant ends without a session."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from sovra.server import ServerSettings, create_app
from sovra.server.accounts import AccountStore
from sovra.workspace import Workspace
from tests.support.server import CLIENT_ID, RUNBOOK, Issuer

SESSION = "sovra_session"


@pytest.fixture()
def issuer_login(issuer: Issuer) -> Iterator[Issuer]:
    issuer.login = {"sub": "olivia", "groups": ["staff", "sre"]}
    yield issuer
    issuer.login = {}


def browser(live_url: str) -> httpx.Client:
    return httpx.Client(base_url=live_url, timeout=60, follow_redirects=False)


def start(http: httpx.Client, next_path: str = "/search") -> str:
    """GET /login/oidc → the issuer's authorize URL."""
    resp = http.get("/login/oidc", params={"next": next_path})
    assert resp.status_code == 303, resp.text
    return resp.headers["location"]


def authorize(url: str) -> str:
    """The issuer signs in at once and redirects back: → our callback URL with code + state."""
    resp = httpx.get(url, timeout=30, follow_redirects=False)
    assert resp.status_code == 302, resp.text
    return resp.headers["location"]


def callback(http: httpx.Client, url: str) -> httpx.Response:
    parts = urlsplit(url)
    return http.get(parts.path + "?" + parts.query)


def test_code_flow_with_pkce_signs_in_with_the_tokens_groups(
    live_url: str, issuer_login: Issuer
) -> None:
    with browser(live_url) as http:
        authorize_url = start(http)
        params = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        assert authorize_url.startswith(issuer_login.url + "/authorize?")
        assert params["client_id"] == CLIENT_ID and params["response_type"] == "code"
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
        assert len(params["state"]) >= 32 and len(params["nonce"]) >= 32
        assert params["redirect_uri"] == live_url + "/auth/callback"
        state_cookie = http.cookies.get("sovra_oidc_state")
        assert state_cookie == params["state"]
        assert SESSION not in http.cookies

        done = callback(http, authorize(authorize_url))
        assert done.status_code == 200, done.text
        assert "url=/search" in done.text  # continues to `next` from our own page
        assert http.cookies.get(SESSION)
        set_cookie = done.headers.get_list("set-cookie")
        assert any(
            "sovra_session=" in c and "HttpOnly" in c and "SameSite=strict" in c for c in set_cookie
        )
        # The verifier the server sent matches the challenge it sent.
        form = issuer_login.token_requests[-1]
        digest = hashlib.sha256(form["code_verifier"].encode()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == params["code_challenge"]

        # The session carries olivia's groups from the ID token: sre may read the runbook.
        doc = http.get(f"/api/v1/documents/{RUNBOOK}")
        assert doc.status_code == 200 and doc.json()["id"] == RUNBOOK
        page = http.get("/search", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "olivia" in page.text.lower()
        # The state is single use: replaying the callback does not sign in again.
        http.cookies.set("sovra_oidc_state", state_cookie, path="/auth/callback")
        again = http.get("/auth/callback", params={"state": params["state"], "code": "x"})
        assert again.status_code == 401


def test_groups_come_from_the_token(live_url: str, issuer_login: Issuer) -> None:
    issuer_login.login = {"sub": "oscar", "groups": ["staff"]}
    with browser(live_url) as http:
        assert callback(http, authorize(start(http))).status_code == 200
        assert http.get(f"/api/v1/documents/{RUNBOOK}").status_code == 404


def no_session(resp: httpx.Response, http: httpx.Client) -> None:
    assert resp.status_code == 401, resp.text
    assert "Sign-in failed" in resp.text
    assert SESSION not in http.cookies
    assert not any(
        "sovra_session=" in c and "Max-Age=0" not in c for c in resp.headers.get_list("set-cookie")
    )
    assert http.get(f"/api/v1/documents/{RUNBOOK}").status_code == 401


def test_state_mismatch_gives_no_session(live_url: str, issuer_login: Issuer) -> None:
    with browser(live_url) as http:
        back = authorize(start(http))
        forged = back.replace("state=", "state=x", 1)
        no_session(callback(http, forged), http)
    # A callback from a browser that never started the sign-in (no state cookie).
    with browser(live_url) as other, browser(live_url) as victim:
        back = authorize(start(victim))
        no_session(callback(other, back), other)


def test_code_with_another_browsers_verifier_gives_no_session(
    live_url: str, issuer_login: Issuer
) -> None:
    # An attacker injects a victim's code into their own sign-in: the attacker's state is
    # valid, but the code was issued for the victim's PKCE challenge.
    with browser(live_url) as victim, browser(live_url) as attacker:
        victims_code = parse_qs(urlsplit(authorize(start(victim))).query)["code"][0]
        attackers_back = authorize(start(attacker))
        attackers_state = parse_qs(urlsplit(attackers_back).query)["state"][0]
        resp = attacker.get(
            "/auth/callback", params={"code": victims_code, "state": attackers_state}
        )
        no_session(resp, attacker)
    assert issuer_login.token_requests[-1]["code"] == victims_code  # the issuer refused it


def test_wrong_nonce_gives_no_session(live_url: str, issuer_login: Issuer) -> None:
    issuer_login.login = {"sub": "olivia", "groups": ["sre"], "nonce": "replayed-nonce"}
    with browser(live_url) as http:
        resp = callback(http, authorize(start(http)))
        no_session(resp, http)
        assert "nonce" in resp.text


def test_wrong_audience_gives_no_session(live_url: str, issuer_login: Issuer) -> None:
    # An ID token minted for another client (here: the API audience) is not a sign-in.
    issuer_login.login = {"sub": "olivia", "groups": ["sre"], "aud": "sovra-test"}
    with browser(live_url) as http:
        resp = callback(http, authorize(start(http)))
        no_session(resp, http)
        assert "audience" in resp.text


def test_identity_provider_error_gives_no_session(live_url: str, issuer_login: Issuer) -> None:
    with browser(live_url) as http:
        back = authorize(start(http))
        state = parse_qs(urlsplit(back).query)["state"][0]
        resp = http.get("/auth/callback", params={"error": "access_denied", "state": state})
        no_session(resp, http)


def test_next_is_never_an_open_redirect(live_url: str, issuer_login: Issuer) -> None:
    for target in ("https://evil.example/x", "//evil.example/x", "/\\evil.example"):
        with browser(live_url) as http:
            done = callback(http, authorize(start(http, target)))
            assert done.status_code == 200
            assert "url=/'" in done.text and "evil" not in done.text


def test_identity_provider_sessions_end_when_it_is_switched_off(
    client: TestClient, workspace: Workspace
) -> None:
    accounts = AccountStore.in_home(workspace.config.home)
    try:
        token, _ = accounts.create_session("olivia", 600, groups=("sre", "staff"))
    finally:
        accounts.close()
    cookie = {"Cookie": f"sovra_session={token}"}
    with_idp = client.get(f"/api/v1/documents/{RUNBOOK}", headers=cookie)
    assert with_idp.status_code == 200  # the session's groups from the token: sre
    app = create_app(workspace.config, ServerSettings(secure_cookies=False), workspace)
    with TestClient(app) as without_idp:
        resp = without_idp.get(f"/api/v1/documents/{RUNBOOK}", headers=cookie)
    assert resp.status_code == 401
