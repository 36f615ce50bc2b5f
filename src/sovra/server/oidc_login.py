"""Browser sign-in through the identity provider: OAuth 2 authorization code + PKCE (authlib).

`GET /login/oidc` starts it: a random `state`, `nonce` and PKCE `code_verifier` (S256
challenge) are kept server-side under the state, and the state is bound to this browser by a
short-lived HttpOnly cookie. `GET /auth/callback` accepts the code only when the returned state
equals the cookie's and is still pending (single use, 10 minutes), exchanges it with the
verifier, and validates the ID token with the same `OidcVerifier` as bearer tokens (JWKS,
asymmetric algorithms, `iss`, `exp`, `nbf`) with `aud` = our client id and the `nonce` we sent.
Only then is a normal session cookie issued, carrying the token's user and groups. Any failure
is a 401 page and no session.
"""

from __future__ import annotations

import hmac
import html
import logging
import secrets
import time
from typing import Annotated

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client  # type: ignore[import-untyped]
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sovra.config import ConfigError
from sovra.server.auth import ApiError, set_session_cookie
from sovra.server.deps import AppState, Public, app_state, client_address
from sovra.server.oidc import (
    PENDING_TTL_S,
    OidcVerifier,
    Pending,
    TokenError,
    TokenIdentity,
)
from sovra.server.text import safe_next_path

log = logging.getLogger("sovra.server.oidc_login")

STATE_COOKIE = "sovra_oidc_state"
CALLBACK_PATH = "/auth/callback"

router = APIRouter(include_in_schema=False)
Starting = Annotated[None, Depends(Public("starts a sign-in; rate-limited per client"))]
Returning = Annotated[
    None, Depends(Public("state = cookie = a pending sign-in, then PKCE and ID-token checks"))
]


class LoginFailed(Exception):
    """The sign-in cannot complete; the message is safe to show."""


def _verifier(st: AppState) -> OidcVerifier:
    oidc = st.auth.oidc
    if oidc is None or not st.settings.oidc_login_enabled:
        raise ApiError(404, "not_found", "sign-in through an identity provider is not configured")
    return oidc


def _endpoints(oidc: OidcVerifier) -> tuple[str, str]:
    """The issuer's authorization and token endpoints, from its discovery document."""
    try:
        meta = oidc.jwks.discovery()
    except (httpx.HTTPError, ValueError):
        raise LoginFailed("the identity provider cannot be reached") from None
    issuer = oidc.settings.oidc_issuer.rstrip("/")
    if str(meta.get("issuer", "")).rstrip("/") != issuer:
        raise LoginFailed("the identity provider's discovery document names another issuer")
    auth_url, token_url = meta.get("authorization_endpoint"), meta.get("token_endpoint")
    if not isinstance(auth_url, str) or not isinstance(token_url, str):
        raise LoginFailed("the identity provider does not offer the authorization code flow")
    return auth_url, token_url


def _redirect_uri(request: Request, st: AppState) -> str:
    base = st.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return base + CALLBACK_PATH


def _client(st: AppState, redirect_uri: str) -> AsyncOAuth2Client:
    secret = st.settings.oidc_client_secret()
    return AsyncOAuth2Client(
        client_id=st.settings.oidc_client_id,
        client_secret=secret,
        scope=" ".join(st.settings.oidc_scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
        timeout=10.0,
        follow_redirects=False,
    )


@router.get("/login/oidc")
async def start(request: Request, _rule: Starting, next: str = "/") -> Response:
    st = app_state(request)
    oidc = _verifier(st)
    # Each start holds server memory for 10 minutes: limited per client like password logins.
    if st.login_limiter.check("oidc:" + client_address(request)):
        st.metrics.denials.labels("rate_limit").inc()
        raise ApiError(429, "rate_limited", "too many sign-in attempts", {"Retry-After": "60"})
    try:
        auth_url, _ = await run_in_threadpool(_endpoints, oidc)
    except LoginFailed as exc:
        return _failed(request, st, str(exc))
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    redirect_uri = _redirect_uri(request, st)
    try:
        client = _client(st, redirect_uri)
    except ConfigError as exc:
        log.error("oidc sign-in misconfigured: %s", exc)
        return _failed(request, st, "sign-in is misconfigured on the server")
    async with client:
        url, _ = client.create_authorization_url(
            auth_url, state=state, code_verifier=verifier, nonce=nonce
        )
    try:
        st.oidc_pending.add(
            state, Pending(nonce, verifier, redirect_uri, safe_next_path(next), time.time())
        )
    except TokenError as exc:
        return _failed(request, st, str(exc))
    response = RedirectResponse(str(url), status_code=303)
    # Lax, not Strict: the identity provider's redirect back is a cross-site navigation.
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=int(PENDING_TTL_S),
        httponly=True,
        secure=st.settings.secure_cookies,
        samesite="lax",
        path=CALLBACK_PATH,
    )
    return response


@router.get(CALLBACK_PATH)
async def callback(request: Request, _rule: Returning) -> Response:
    st = app_state(request)
    oidc = _verifier(st)
    params = request.query_params
    state = params.get("state", "")
    cookie = request.cookies.get(STATE_COOKIE, "")
    if not state or not cookie or not hmac.compare_digest(state.encode(), cookie.encode()):
        return _failed(request, st, "the sign-in does not match this browser; start again")
    pending = st.oidc_pending.take(state)
    if pending is None:
        return _failed(request, st, "the sign-in expired or was already used; start again")
    if params.get("error"):
        return _failed(request, st, "the identity provider refused the sign-in")
    code = params.get("code", "")
    if not code or len(code) > 2048:
        return _failed(request, st, "the identity provider sent no authorization code")
    try:
        claims, access_token = await _exchange(st, oidc, pending, code)
    except LoginFailed as exc:
        return _failed(request, st, str(exc))
    principal = claims.principal
    token, _ = st.accounts.create_session(
        principal.id,
        st.settings.session_ttl_s,
        groups=tuple(sorted(principal.groups)),
        display_name=principal.display_name,
        idp_token=access_token,
    )
    request.state.principal_id = principal.id
    # A page, not a redirect: the session cookie is SameSite=Strict, and a browser does not
    # send it on a redirect chain that began at the identity provider (another site).
    target = html.escape(pending.next_path, quote=True)
    response = HTMLResponse(
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<meta http-equiv=refresh content='0;url={target}'><title>Signed in</title>"
        f"<p>Signed in. <a href='{target}'>Continue</a></p></html>"
    )
    set_session_cookie(
        response, token, max_age=st.settings.session_ttl_s, secure=st.settings.secure_cookies
    )
    response.delete_cookie(STATE_COOKIE, path=CALLBACK_PATH)
    return response


async def _exchange(
    st: AppState, oidc: OidcVerifier, pending: Pending, code: str
) -> tuple[TokenIdentity, str | None]:
    """The verified ID token and the access token (kept to re-ask the IdP for groups)."""
    _, token_url = await run_in_threadpool(_endpoints, oidc)
    client = _client(st, pending.redirect_uri)
    try:
        async with client:
            token = await client.fetch_token(
                token_url,
                grant_type="authorization_code",
                code=code,
                code_verifier=pending.code_verifier,
                redirect_uri=pending.redirect_uri,
            )
    except Exception as exc:  # authlib raises OAuthError, httpx errors, or JSON errors
        log.warning("oidc code exchange failed: %s", type(exc).__name__)
        raise LoginFailed("the identity provider did not accept the sign-in") from None
    id_token = token.get("id_token") if isinstance(token, dict) else None
    if not isinstance(id_token, str):
        raise LoginFailed("the identity provider returned no ID token")
    try:
        verified = await run_in_threadpool(
            lambda: oidc.verify(id_token, audience=st.settings.oidc_client_id)
        )
    except TokenError as exc:
        raise LoginFailed(f"ID token rejected: {exc}") from None
    nonce = verified.claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(
        nonce.encode(), pending.nonce.encode()
    ):
        raise LoginFailed("ID token rejected: nonce does not match this sign-in")
    access = token.get("access_token")
    return verified, access if isinstance(access, str) and len(access) <= 8192 else None


def _failed(request: Request, st: AppState, reason: str) -> Response:
    st.metrics.denials.labels("login").inc()
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Sign-in failed</title>"
        "<link rel=stylesheet href='/static/sovra.css'><main><h1>Sign-in failed</h1>"
        f"<p role=alert>{html.escape(reason)}</p><p><a href='/login'>Back to sign in</a></p>"
        "</main></html>"
    )
    response = HTMLResponse(body, status_code=401)
    response.delete_cookie(STATE_COOKIE, path=CALLBACK_PATH)
    return response
