"""Authentication: local logins (argon2) with CSRF-protected sessions, scoped revocable API
keys, and OIDC bearer tokens checked against a real JWKS served on loopback."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from pydantic import ValidationError

from sovra.server import ServerSettings, create_app
from sovra.server.accounts import AccountStore
from sovra.workspace import Workspace
from tests.support.server import RUNBOOK, Issuer, Site, bearer, password

QUERY = {"query": "etcd database quota low space", "k": 5}


def sources_of(resp: Any) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {h["source"] for h in resp.json()["hits"]}


# ---------------------------------------------------------------------- local logins
def login(client: TestClient, user: str, pw: str | None = None) -> str:
    resp = client.post("/auth/login", json={"username": user, "password": pw or password(user)})
    assert resp.status_code == 200, resp.text
    csrf: str = resp.json()["csrf_token"]
    return csrf


def test_login_sets_a_strict_httponly_cookie(workspace: Workspace, issuer: Issuer) -> None:
    from tests.support.server import ISSUER_AUDIENCE

    app = create_app(
        workspace.config,
        ServerSettings(oidc_issuer=issuer.url, oidc_audience=ISSUER_AUDIENCE),
        workspace,
    )
    with TestClient(app) as c:
        resp = c.post("/auth/login", json={"username": "alice", "password": password("alice")})
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie


def test_session_login_search_and_csrf(client: TestClient) -> None:
    client.cookies.clear()
    csrf = login(client, "alice")
    try:
        # A state-changing request on a cookie session needs the CSRF token.
        denied = client.post("/api/v1/search", json=QUERY)
        assert denied.status_code == 403 and denied.json()["error"] == "csrf"
        wrong = client.post("/api/v1/search", json=QUERY, headers={"X-CSRF-Token": "x" + csrf})
        assert wrong.status_code == 403
        ok = client.post("/api/v1/search", json=QUERY, headers={"X-CSRF-Token": csrf})
        assert "runbooks" in sources_of(ok)
        out = client.post("/auth/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 204
        after = client.post("/api/v1/search", json=QUERY, headers={"X-CSRF-Token": csrf})
        assert after.status_code == 401
    finally:
        client.cookies.clear()


def test_wrong_password_and_unknown_user_look_the_same(client: TestClient) -> None:
    wrong = client.post("/auth/login", json={"username": "alice", "password": "nope-nope"})
    unknown = client.post("/auth/login", json={"username": "mallory", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers


def test_passwords_are_argon2_hashes(site: Site) -> None:
    accounts = AccountStore.in_home(site.root / "data")
    try:
        with accounts.engine.connect() as db:
            row = db.exec_driver_sql("SELECT hash FROM passwords WHERE user_id='alice'").first()
            keys = db.exec_driver_sql("SELECT hash FROM api_keys").all()
    finally:
        accounts.close()
    assert row is not None and row[0].startswith("$argon2id$") and password("alice") not in row[0]
    assert all(k[0].startswith("$argon2id$") for k in keys)
    assert not any(site.keys["alice"] in k[0] for k in keys)


def test_short_password_refused(site: Site) -> None:
    from sovra.server.accounts import AccountError

    accounts = AccountStore.in_home(site.root / "data")
    try:
        with pytest.raises(AccountError, match="too short"):
            accounts.set_password("bob", "short")
    finally:
        accounts.close()


# ---------------------------------------------------------------------- API keys
def test_api_key_search_and_scope(client: TestClient, site: Site) -> None:
    assert "runbooks" in sources_of(
        client.post("/api/v1/search", json=QUERY, headers=bearer(site.keys["alice"]))
    )
    only_search = bearer(site.keys["alice-search"])
    assert client.post("/api/v1/search", json=QUERY, headers=only_search).status_code == 200
    denied = client.post("/api/v1/ask", json={"question": "etcd quota"}, headers=only_search)
    assert denied.status_code == 403 and "scope" in denied.json()["detail"]


def test_api_key_revocation_and_last_used(client: TestClient, site: Site) -> None:
    accounts = AccountStore.in_home(site.root / "data")
    try:
        secret, key = accounts.create_key("bob", "to-revoke", ("search",))
        assert client.post("/api/v1/search", json=QUERY, headers=bearer(secret)).status_code == 200
        used = next(k for k in accounts.keys("bob") if k.id == key.id)
        assert used.last_used_at is not None
        accounts.revoke_key(key.id)  # another process's store: the server checks the database
        resp = client.post("/api/v1/search", json=QUERY, headers=bearer(secret))
        assert resp.status_code == 401
    finally:
        accounts.close()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sovra_000000000000_wrongwrongwrong",
        "Bearer sovra_garbage",
        "Basic YWxpY2U6cGFzcw==",
        "Bearer",
        "Bearer not.a.jwt",
    ],
)
def test_bad_credentials_are_401_never_anonymous(client: TestClient, header: str) -> None:
    resp = client.post("/api/v1/search", json=QUERY, headers={"Authorization": header})
    assert resp.status_code == 401
    assert resp.json()["error"] == "unauthorized"


def test_tampered_api_key_refused(client: TestClient, site: Site) -> None:
    key = site.keys["alice"]
    tampered = key[:-2] + ("AA" if not key.endswith("AA") else "BB")
    assert client.post("/api/v1/search", json=QUERY, headers=bearer(tampered)).status_code == 401


# ---------------------------------------------------------------------- OIDC
def test_oidc_token_groups_from_claim(client: TestClient, issuer: Issuer) -> None:
    sre = bearer(issuer.token("olivia", ("staff", "sre")))
    staff = bearer(issuer.token("oscar", ("staff",)))
    assert "runbooks" in sources_of(client.post("/api/v1/search", json=QUERY, headers=sre))
    assert "runbooks" not in sources_of(client.post("/api/v1/search", json=QUERY, headers=staff))
    doc = client.get(f"/api/v1/documents/{RUNBOOK}", headers=staff)
    assert doc.status_code == 404


def test_oidc_es256_accepted(client: TestClient, issuer: Issuer) -> None:
    token = issuer.token(alg="ES256", kid="ec-1")
    assert client.post("/api/v1/search", json=QUERY, headers=bearer(token)).status_code == 200


def _b64(data: dict[str, Any]) -> str:
    return jwt.utils.base64url_encode(json.dumps(data).encode()).decode()


def rejected(client: TestClient, token: str) -> str:
    resp = client.post("/api/v1/search", json=QUERY, headers=bearer(token))
    assert resp.status_code == 401, resp.text
    detail: str = resp.json()["detail"]
    return detail


def test_oidc_rejects_expired_wrong_audience_issuer_and_not_yet_valid(
    client: TestClient, issuer: Issuer
) -> None:
    assert "expired" in rejected(client, issuer.token(exp_in=-3600))
    assert "audience" in rejected(client, issuer.token(aud="someone-else"))
    assert "issuer" in rejected(client, issuer.token(iss="http://127.0.0.1:1/evil"))
    assert "not yet valid" in rejected(client, issuer.token(nbf_in=3600))


def test_oidc_rejects_alg_none(client: TestClient, issuer: Issuer) -> None:
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": "sovra-test", "sub": "root", "groups": ["admins"]}
    claims |= {"exp": now + 300}
    token = _b64({"alg": "none", "typ": "JWT", "kid": "rsa-1"}) + "." + _b64(claims) + "."
    assert "algorithm" in rejected(client, token)


def test_oidc_rejects_hs256_signed_with_the_public_key(client: TestClient, issuer: Issuer) -> None:
    pem = issuer.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": "sovra-test", "sub": "root", "exp": now + 300}
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
    body = _b64(claims)
    import hashlib
    import hmac

    sig = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}." + jwt.utils.base64url_encode(sig).decode()
    assert "algorithm" in rejected(client, token)


def test_oidc_rejects_forged_signature(client: TestClient, issuer: Issuer) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "invalid" in rejected(client, issuer.token("root", ("admins",), key=other))
    # A valid token with one claim changed after signing.
    good = issuer.token("carol", ("staff",))
    head, _, rest = good.partition(".")
    body, _, sig = rest.partition(".")
    claims = json.loads(jwt.utils.base64url_decode(body))
    claims["groups"] = ["admins"]
    assert "invalid" in rejected(client, f"{head}.{_b64(claims)}.{sig}")


def test_oidc_rejects_rs_token_presented_with_ec_kid(client: TestClient, issuer: Issuer) -> None:
    assert rejected(client, issuer.token(alg="RS256", kid="ec-1"))


def test_oidc_missing_exp_refused(client: TestClient, issuer: Issuer) -> None:
    claims = {"iss": issuer.url, "aud": "sovra-test", "sub": "olivia"}
    token = jwt.encode(claims, issuer.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert rejected(client, token)


def test_oidc_unknown_kid_refreshes_the_jwks(client: TestClient, issuer: Issuer) -> None:
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = issuer.token(kid="rsa-2", key=new_key)
    assert "unknown key" in rejected(client, token)
    before = issuer.fetches
    issuer.add_key("rsa-2", new_key)  # the issuer rotates its keys
    assert client.post("/api/v1/search", json=QUERY, headers=bearer(token)).status_code == 200
    assert issuer.fetches > before


def test_settings_refuse_symmetric_algorithms() -> None:
    with pytest.raises(ValidationError, match="HS256"):
        ServerSettings(oidc_algorithms=("RS256", "HS256"))
    with pytest.raises(ValidationError):
        ServerSettings(oidc_algorithms=("none",))


def test_bearer_jwt_refused_without_identity_provider(workspace: Workspace, issuer: Issuer) -> None:
    app = create_app(workspace.config, ServerSettings(secure_cookies=False), workspace)
    with TestClient(app) as c:
        resp = c.post("/api/v1/search", json=QUERY, headers=bearer(issuer.token()))
    assert resp.status_code == 401


# ---------------------------------------------------------------------- limits
def test_rate_limit_per_principal(workspace: Workspace, site: Site) -> None:
    settings = ServerSettings(rate_limit_per_minute=1, rate_limit_burst=2, secure_cookies=False)
    app = create_app(workspace.config, settings, workspace)
    with TestClient(app) as c:
        statuses = [
            c.get("/api/v1/sources", headers=bearer(site.keys["carol"])).status_code
            for _ in range(4)
        ]
        other = c.get("/api/v1/sources", headers=bearer(site.keys["dana"])).status_code
    assert statuses[:2] == [200, 200] and statuses[-1] == 429
    assert other == 200


def test_request_size_limit(client: TestClient, site: Site) -> None:
    big = {"query": "x" * 1500, "pad": "y" * 1_200_000}
    resp = client.post("/api/v1/search", json=big, headers=bearer(site.keys["alice"]))
    assert resp.status_code == 413 and resp.json()["error"] == "too_large"


def test_account_store_reopens_after_close(site: Site) -> None:
    accounts = AccountStore.in_home(site.root / "data")
    accounts.close()
    assert accounts.has_password("alice")  # a second app lifespan on the same store
    accounts.close()
