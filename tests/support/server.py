"""Shared pieces of the server tests: the demo site's document ids, passwords and API keys,
the OIDC issuer type. The site itself is `tests.support.demo_site` with SERVER_FILES."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

RUNBOOK = "runbooks:alerts/cluster-etcd-operator/etcdDatabaseQuotaLowSpace.md"
PEOPLE_PAGE = "handbook:content/departments/people-talent/background-check-policy.md"
PUBLIC_PAGE = "handbook:content/departments/engineering/demo-day.md"
ISSUER_AUDIENCE = "sovra-test"
CLIENT_ID = "sovra-web"
CLIENT_SECRET = "web-client-secret-for-tests"
CLIENT_SECRET_ENV = "SOVRA_TEST_OIDC_CLIENT_SECRET"


def password(user: str) -> str:
    return f"{user}-password-1"


@dataclass
class Site:
    root: Path
    keys: dict[str, str] = field(default_factory=dict)
    """user → API key with all scopes; plus "alice-search" with the search scope only."""


# ---------------------------------------------------------------------- a real OIDC issuer
@dataclass
class Issuer:
    url: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    jwks: dict[str, Any]
    fetches: int = 0
    # Browser sign-in (authorization code + PKCE): who /authorize signs in next, and knobs
    # that make the issued ID token wrong in one way (aud, nonce) for the negative tests.
    login: dict[str, Any] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    userinfo: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Access token issued at /token → the claims /userinfo answers with (edit to change a
    user's groups at the IdP; delete to make the IdP refuse the token)."""

    def token(
        self,
        sub: str = "olivia",
        groups: tuple[str, ...] = ("staff", "sre"),
        *,
        alg: str = "RS256",
        kid: str | None = "rsa-1",
        aud: str = ISSUER_AUDIENCE,
        iss: str | None = None,
        exp_in: int = 300,
        nbf_in: int = 0,
        key: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": iss or self.url,
            "aud": aud,
            "sub": sub,
            "groups": list(groups),
            "iat": now,
            "nbf": now + nbf_in,
            "exp": now + exp_in,
            **(extra or {}),
        }
        signing = (
            key if key is not None else (self.ec_key if alg.startswith("ES") else self.rsa_key)
        )
        headers = {"kid": kid} if kid else {}
        return jwt.encode(claims, signing, algorithm=alg, headers=headers)

    def add_key(self, kid: str, key: rsa.RSAPrivateKey) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.jwks["keys"].append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
