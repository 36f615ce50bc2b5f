"""Local user sign-in and sign-out: a password checked with argon2, an HttpOnly, SameSite=Strict
session cookie, and the CSRF token the browser sends back on state-changing requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from sovra.server.auth import SESSION_COOKIE, ApiError, Identity, set_session_cookie
from sovra.server.deps import AppState, Needs, Public, app_state, client_address

router = APIRouter()
State = Annotated[AppState, Depends(app_state)]
# A JSON body cannot be sent cross-site without a CORS preflight (which this app never grants),
# so this sign-in is not open to login CSRF; the form sign-in is `POST /login` with its token.
JsonSignIn = Annotated[None, Depends(Public("JSON only (no cross-site form); rate-limited"))]
SignedIn = Annotated[Identity, Depends(Needs(None))]


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


@router.post("/auth/login", tags=["auth"])
async def login(body: LoginRequest, request: Request, st: State, _rule: JsonSignIn) -> JSONResponse:
    """Local user login: sets an HttpOnly, SameSite=Strict session cookie and returns the
    CSRF token to send as `X-CSRF-Token` on state-changing requests."""
    return await _login(st, request, body.username, body.password)


async def _login(st: AppState, request: Request, username: str, password: str) -> JSONResponse:
    wait = st.login_limiter.check("login:" + client_address(request))
    if wait:
        st.metrics.denials.labels("rate_limit").inc()
        raise ApiError(429, "rate_limited", "too many login attempts", {"Retry-After": "60"})
    ok = await run_in_threadpool(st.accounts.check_password, username, password)
    if not ok or st.auth.local_principal(username) is None:
        st.metrics.denials.labels("login").inc()
        raise ApiError(401, "unauthorized", "wrong user name or password")
    token, session = st.accounts.create_session(username, st.settings.session_ttl_s)
    resp = JSONResponse({"user": username, "csrf_token": session.csrf})
    set_session_cookie(
        resp, token, max_age=st.settings.session_ttl_s, secure=st.settings.secure_cookies
    )
    return resp


@router.post("/auth/logout", tags=["auth"])
async def logout(request: Request, st: State, _rule: SignedIn) -> Response:
    # The rule authenticates and CSRF-checks the session like any state-changing request.
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        st.accounts.end_session(token)
    resp = Response(status_code=204)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp
