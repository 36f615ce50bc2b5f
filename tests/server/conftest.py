"""Server fixtures: a small synced workspace (real model, real index), demo users with
passwords and API keys, a real local OIDC issuer (keypairs + JWKS on loopback), the app in a
TestClient and the app on a real loopback port (uvicorn) for HTTP clients."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from sovra.config import load_config
from sovra.server import ServerSettings, create_app
from sovra.server.accounts import AccountStore
from sovra.workspace import Workspace
from tests.support.demo_site import DEMO_USERS, SERVER_FILES, sync_site, write_site
from tests.support.server import (
    CLIENT_ID,
    CLIENT_SECRET,
    CLIENT_SECRET_ENV,
    ISSUER_AUDIENCE,
    Issuer,
    Site,
    free_port,
    password,
)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Site:
    root = tmp_path_factory.mktemp("server-site")
    sync_site(write_site(root, SERVER_FILES, company=shared_data / "company"))
    accounts = AccountStore.in_home(root / "data")
    out = Site(root)
    try:
        for user in DEMO_USERS:
            accounts.set_password(user, password(user))
            out.keys[user] = accounts.create_key(
                user, "tests", ("search", "ask", "documents", "audit", "feedback")
            )[0]
        out.keys["alice-search"] = accounts.create_key("alice", "search-only", ("search",))[0]
        # Administration (policy check, admin pages) needs its own scope on a key.
        out.keys["root-admin"] = accounts.create_key("root", "admin", ("admin",))[0]
    finally:
        accounts.close()
    return out


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    jwks: dict[str, Any] = {
        "keys": [
            {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
            {**ec_jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"},
        ]
    }
    holder: dict[str, Issuer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            iss = holder["issuer"]
            path, _, query = self.path.partition("?")
            if path == "/.well-known/openid-configuration":
                body = {
                    "issuer": iss.url,
                    "jwks_uri": iss.url + "/jwks.json",
                    "authorization_endpoint": iss.url + "/authorize",
                    "token_endpoint": iss.url + "/token",
                    "userinfo_endpoint": iss.url + "/userinfo",
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                }
            elif path == "/jwks.json":
                iss.fetches += 1
                body = iss.jwks
            elif path == "/authorize":
                self.authorize(iss, dict(parse_qsl(query)))
                return
            elif path == "/userinfo":
                scheme, _, access = self.headers.get("Authorization", "").partition(" ")
                claims = iss.userinfo.get(access) if scheme == "Bearer" else None
                if claims is None:
                    self.reply(401, {"error": "invalid_token"})
                    return
                body = claims
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.reply(200, body)

        def authorize(self, iss: Issuer, params: dict[str, str]) -> None:
            """Signs in `iss.login` at once and redirects back with a code (no login page)."""
            iss.authorize_requests.append(params)
            ok = (
                params.get("response_type") == "code"
                and params.get("client_id") == CLIENT_ID
                and params.get("code_challenge_method") == "S256"
                and params.get("code_challenge")
                and "openid" in params.get("scope", "").split()
            )
            if not ok:
                self.reply(400, {"error": "invalid_request"})
                return
            code = secrets.token_urlsafe(24)
            iss.codes[code] = {**params, "login": dict(iss.login)}
            target = (
                params["redirect_uri"]
                + "?"
                + urlencode({"code": code, "state": params.get("state", "")})
            )
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            iss = holder["issuer"]
            if self.path != "/token":
                self.reply(404, {"error": "not_found"})
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            form = dict(parse_qsl(raw))
            iss.token_requests.append(form)
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.reply(401, {"error": "invalid_client"})
                return
            grant = iss.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            if (
                form.get("grant_type") != "authorization_code"
                or grant is None
                or form.get("redirect_uri") != grant["redirect_uri"]
                or not verifier
                or challenge != grant["code_challenge"]
            ):
                self.reply(400, {"error": "invalid_grant"})
                return
            login = grant["login"]
            id_token = iss.token(
                login.get("sub", "olivia"),
                tuple(login.get("groups", ("staff", "sre"))),
                aud=login.get("aud", CLIENT_ID),
                extra={"nonce": login.get("nonce", grant.get("nonce", "")), "name": "Olivia"},
            )
            access = secrets.token_urlsafe(24)
            iss.userinfo[access] = {
                "sub": login.get("sub", "olivia"),
                "groups": list(login.get("groups", ("staff", "sre"))),
            }
            self.reply(
                200,
                {"access_token": access, "token_type": "Bearer", "id_token": id_token},
            )

        def reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    holder["issuer"] = Issuer(url, rsa_key, ec_key, jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder["issuer"]
    server.shutdown()


# ---------------------------------------------------------------------- the app
@pytest.fixture(scope="session")
def workspace(site: Site) -> Iterator[Workspace]:
    ws = Workspace.open(load_config(site.root / "sovra.toml"))
    yield ws
    ws.close()


def settings_for(issuer: Issuer, **extra: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "oidc_issuer": issuer.url,
        "oidc_audience": ISSUER_AUDIENCE,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret_env": CLIENT_SECRET_ENV,
        "jwks_min_refresh_s": 0.0,
        "secure_cookies": False,
        "rate_limit_per_minute": 100_000,
        "rate_limit_burst": 10_000,
        "login_attempts_per_minute": 1000,
        **extra,
    }
    return ServerSettings(**values)


@pytest.fixture(scope="session")
def client(workspace: Workspace, issuer: Issuer) -> Iterator[TestClient]:
    app = create_app(workspace.config, settings_for(issuer), workspace)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def live_url(workspace: Workspace, issuer: Issuer) -> Iterator[str]:
    """The app on a real loopback port, for real HTTP clients (openai, SSE readers)."""
    app = create_app(workspace.config, settings_for(issuer), workspace)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The browser sign-in tests' client secret, by reference as in production.
os.environ[CLIENT_SECRET_ENV] = CLIENT_SECRET
