"""OIDC bearer tokens: JWT validation against the issuer's JWKS.

- Keys come from the JWKS (cached; refetched when a token names an unknown `kid`, at most once
  per `jwks_min_refresh_s`, so a flood of forged kids cannot hammer the issuer).
- Only asymmetric algorithms are accepted; the algorithm comes from the allow-list and must match
  the key (`none` and HS* are refused before any key is touched, so an RSA public key can never
  be used as an HMAC secret).
- `iss`, `aud`, `exp` are required and checked, `nbf`/`iat` checked when present, with a small
  leeway. Groups come from a configurable claim.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt import PyJWK
from sqlalchemy import Engine, delete, func, insert, select

from sovra.domain import ADMIN_GROUP, Principal
from sovra.server.accounts import oidc_pending_t
from sovra.server.settings import ServerSettings


class TokenError(Exception):
    """The token is not acceptable; the message is safe to return to the caller."""


@dataclass(frozen=True)
class TokenIdentity:
    principal: Principal
    claims: dict[str, Any]


class JwksCache:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._keys: dict[str, tuple[PyJWK, str | None]] = {}
        self._fetched_at = 0.0
        self._lock = threading.Lock()
        self._jwks_url = settings.oidc_jwks_url
        self._discovery: dict[str, Any] | None = None

    def discovery(self, client: httpx.Client | None = None) -> dict[str, Any]:
        """The issuer's `/.well-known/openid-configuration` (fetched once, then cached)."""
        if self._discovery is None:
            issuer = self.settings.oidc_issuer.rstrip("/")
            if client is None:
                with httpx.Client(timeout=5.0, follow_redirects=False) as own:
                    resp = own.get(issuer + "/.well-known/openid-configuration")
            else:
                resp = client.get(issuer + "/.well-known/openid-configuration")
            resp.raise_for_status()
            data = resp.json()
            if not isinstance(data, dict):
                raise ValueError("discovery document is not a JSON object")
            self._discovery = data
        return self._discovery

    def _url(self, client: httpx.Client) -> str:
        if not self._jwks_url:
            self._jwks_url = str(self.discovery(client)["jwks_uri"])
        return self._jwks_url

    def _fetch(self) -> None:
        with httpx.Client(timeout=5.0, follow_redirects=False) as client:
            resp = client.get(self._url(client))
            resp.raise_for_status()
            data = resp.json()
        keys: dict[str, tuple[PyJWK, str | None]] = {}
        for raw in data.get("keys", []):
            if raw.get("use", "sig") != "sig" or raw.get("kty") == "oct":
                continue
            try:
                key = PyJWK.from_dict(raw)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue
            alg = raw.get("alg")
            keys[str(raw.get("kid", ""))] = (key, alg if isinstance(alg, str) else None)
        self._keys = keys
        self._fetched_at = time.monotonic()

    def key(self, kid: str | None) -> tuple[PyJWK, str | None]:
        """The key for `kid` and the algorithm its JWK pins (if any)."""
        with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = not self._keys or age > self.settings.jwks_cache_s
            unknown = (kid or "") not in self._keys and age > self.settings.jwks_min_refresh_s
            if stale or unknown:
                try:
                    self._fetch()
                except (httpx.HTTPError, ValueError, KeyError, json.JSONDecodeError):
                    if not self._keys:
                        raise TokenError("identity provider keys unavailable") from None
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            found = self._keys.get(kid or "")
        if found is None:
            raise TokenError("token signed with an unknown key")
        return found


class OidcVerifier:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.jwks = JwksCache(settings)

    def verify(self, token: str, *, audience: str | None = None) -> TokenIdentity:
        """A bearer token for the APIs (`aud` = `oidc_audience`), or with `audience` another
        token of the issuer: the browser login's ID token (`aud` = the client id)."""
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in s.oidc_algorithms:
            raise TokenError("token algorithm not allowed")
        kid = header.get("kid")
        key, pinned = self.jwks.key(kid if isinstance(kid, str) else None)
        if pinned is not None and pinned != alg:
            raise TokenError("token algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=audience or s.oidc_audience or None,
                issuer=s.oidc_issuer,
                leeway=s.oidc_leeway_s,
                options={"require": ["exp", "iss", "aud", s.oidc_user_claim]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise TokenError("token issuer not accepted") from None
        except jwt.PyJWTError:
            raise TokenError("token signature or claims invalid") from None
        return TokenIdentity(self.principal_of(claims), claims)

    def principal_of(self, claims: dict[str, Any]) -> Principal:
        """The principal a token's (or the userinfo endpoint's) claims name."""
        s = self.settings
        user = claims.get(s.oidc_user_claim)
        if not isinstance(user, str) or not user or len(user) > 256:
            raise TokenError(f"token claim {s.oidc_user_claim!r} missing")
        groups_raw = claims.get(s.oidc_groups_claim, [])
        if isinstance(groups_raw, str):
            groups_raw = groups_raw.split()
        if not isinstance(groups_raw, list):
            groups_raw = []
        groups = admin_mapped(
            frozenset(str(g) for g in groups_raw if isinstance(g, str | int)),
            s.oidc_admin_groups,
        )
        name = claims.get("name")
        return Principal(id=user, groups=groups, display_name=name if isinstance(name, str) else "")

    def userinfo(self, access_token: str) -> Principal:
        """Ask the IdP again who the access token's user is and in which groups (its
        `userinfo_endpoint`); TokenError when it cannot or will not say."""
        try:
            url = self.jwks.discovery().get("userinfo_endpoint")
            if not isinstance(url, str):
                raise TokenError("the identity provider has no userinfo endpoint")
            with httpx.Client(timeout=5.0, follow_redirects=False) as client:
                resp = client.get(url, headers={"Authorization": f"Bearer {access_token}"})
            resp.raise_for_status()
            claims = resp.json()
        except (httpx.HTTPError, ValueError):
            raise TokenError("the identity provider did not confirm the user") from None
        if not isinstance(claims, dict):
            raise TokenError("the identity provider's userinfo is not a JSON object")
        return self.principal_of(claims)


def admin_mapped(groups: frozenset[str], admin_groups: tuple[str, ...]) -> frozenset[str]:
    """The IdP's groups with sovra's admins group only by explicit mapping: an IdP group
    called `admins` (which anyone able to create groups in the IdP could make) means nothing
    unless `oidc_admin_groups` names it."""
    mapped = groups - {ADMIN_GROUP}
    if groups & set(admin_groups):
        mapped |= {ADMIN_GROUP}
    return mapped


# ---------------------------------------------------------------------- browser sign-in
PENDING_TTL_S = 600.0
MAX_PENDING = 10_000


@dataclass(frozen=True)
class Pending:
    nonce: str
    code_verifier: str
    redirect_uri: str
    next_path: str
    created: float


class PendingLogins:
    """Sign-ins started and not yet finished, by state: in the server's credential store when
    given its `engine` (the callback may reach another replica than the start), else in this
    process's memory. Rows are keyed by the state's SHA-256; `take` is one DELETE … RETURNING,
    so a state is good for one callback even when two replicas race for it."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine
        self._items: dict[str, Pending] = {}
        self._lock = threading.Lock()

    def add(self, state: str, pending: Pending) -> None:
        if self.engine is not None:
            self._add_shared(self.engine, state, pending)
            return
        now = time.time()
        with self._lock:
            if len(self._items) >= MAX_PENDING:
                self._items = {
                    k: v for k, v in self._items.items() if now - v.created < PENDING_TTL_S
                }
                if len(self._items) >= MAX_PENDING:
                    raise TokenError("too many sign-ins in progress")
            self._items[state] = pending

    def _add_shared(self, engine: Engine, state: str, pending: Pending) -> None:
        t = oidc_pending_t
        with engine.begin() as conn:
            conn.execute(delete(t).where(t.c.created < time.time() - PENDING_TTL_S))
            if (conn.scalar(select(func.count()).select_from(t)) or 0) >= MAX_PENDING:
                raise TokenError("too many sign-ins in progress")
            conn.execute(
                insert(t).values(
                    state_sha256=_sha256(state),
                    nonce=pending.nonce,
                    code_verifier=pending.code_verifier,
                    redirect_uri=pending.redirect_uri,
                    next_path=pending.next_path,
                    created=pending.created,
                )
            )

    def take(self, state: str) -> Pending | None:
        """The pending sign-in for `state`, removed (a state is good for one callback)."""
        if self.engine is not None:
            t = oidc_pending_t
            with self.engine.begin() as conn:
                row = conn.execute(
                    delete(t)
                    .where(t.c.state_sha256 == _sha256(state))
                    .returning(
                        t.c.nonce, t.c.code_verifier, t.c.redirect_uri, t.c.next_path, t.c.created
                    )
                ).first()
            pending = None if row is None else Pending(*row)
        else:
            with self._lock:
                pending = self._items.pop(state, None)
        if pending is None or time.time() - pending.created > PENDING_TTL_S:
            return None
        return pending


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
