"""Per-app state and the request dependencies every route uses.

Every route declares who may call it with exactly one rule dependency (`Needs`, `Public`,
`MaybeSignedIn`); `tests/server/test_routes_declared.py` fails on a route without one, so a new
page cannot forget its scope."""

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
    forbidden,
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


class LoginRequired(Exception):
    """Raised for web pages that need a signed-in user; answered with a redirect to /login."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class AuthRule:
    """Marker base of the per-route rule dependencies (what the route enumeration test looks
    for); `describe()` names the rule for docs and tests."""

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Needs(AuthRule):
    """The route needs a caller holding `scope` (None: any valid credential), and with `admin`
    a principal in the admins group. Web pages (`page`) send an anonymous browser to sign in
    instead of answering 401. Sessions and OIDC tokens hold every scope; API keys only theirs."""

    scope: str | None
    admin: bool = False
    page: bool = False

    async def __call__(self, request: Request) -> Identity:
        ident = await optional_identity(request)
        if ident is None:
            if self.page:
                raise LoginRequired(request.url.path)
            app_state(request).metrics.denials.labels("authentication").inc()
            raise unauthorized()
        if self.scope is not None and self.scope not in ident.scopes:
            app_state(request).metrics.denials.labels("scope").inc()
            raise forbidden(f"this credential lacks the {self.scope!r} scope")
        if self.admin and not ident.principal.is_admin:
            raise forbidden("administrators only")
        return ident

    def describe(self) -> str:
        who = "admins" if self.admin else "any principal"
        return f"scope {self.scope or '(any)'}, {who}"


@dataclass(frozen=True)
class Public(AuthRule):
    """Open to anyone; `why` says what protects it instead (shown in the route table)."""

    why: str

    async def __call__(self) -> None:
        return None

    def describe(self) -> str:
        return f"public: {self.why}"


@dataclass(frozen=True)
class MaybeSignedIn(AuthRule):
    """The caller if any (a bad credential is still a 401, a session POST still needs CSRF);
    for routes that behave the same for everyone, such as signing out."""

    why: str

    async def __call__(self, request: Request) -> Identity | None:
        return await optional_identity(request)

    def describe(self) -> str:
        return f"optional identity: {self.why}"
