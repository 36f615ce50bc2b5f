"""Per-app state and the request dependencies every protected route uses."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from sovra.server.accounts import AccountStore
from sovra.server.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    ApiError,
    Authenticator,
    Identity,
    RateLimiter,
    unauthorized,
)
from sovra.server.metrics import Metrics
from sovra.server.oidc import PendingLogins
from sovra.server.settings import ServerSettings
from sovra.server.slots import ModelSlots
from sovra.workspace import Workspace

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass
class AppState:
    settings: ServerSettings
    ws: Workspace
    slots: ModelSlots
    accounts: AccountStore
    auth: Authenticator
    limiter: RateLimiter
    login_limiter: RateLimiter
    metrics: Metrics
    oidc_pending: PendingLogins = field(default_factory=PendingLogins)
    """Browser sign-ins through the identity provider started and not yet finished."""


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.sovra
    return state


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def optional_identity(request: Request) -> Identity | None:
    """The caller, or None; bad credentials are a 401, never anonymous."""
    st = app_state(request)
    try:
        ident = await run_in_threadpool(st.auth.identify, request)
    except ApiError:
        st.metrics.denials.labels("authentication").inc()
        raise
    if ident is None:
        return None
    wait = st.limiter.check("p:" + ident.principal.id)
    if wait:
        st.metrics.denials.labels("rate_limit").inc()
        raise ApiError(
            429, "rate_limited", "too many requests", {"Retry-After": str(int(wait) + 1)}
        )
    if ident.method == "session" and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent and request.headers.get("content-type", "").startswith(FORM_TYPES):
            field = (await request.form()).get(CSRF_FIELD)
            sent = field if isinstance(field, str) else ""
        if not (ident.csrf and hmac.compare_digest(sent, ident.csrf)):
            st.metrics.denials.labels("csrf").inc()
            raise ApiError(403, "csrf", "missing or wrong CSRF token")
    request.state.principal_id = ident.principal.id
    return ident


async def identity(request: Request) -> Identity:
    ident = await optional_identity(request)
    if ident is None:
        app_state(request).metrics.denials.labels("authentication").inc()
        raise unauthorized()
    return ident
