"""Who is calling: session cookie, API key, or OIDC bearer token → an Identity with a Principal.

Local logins and API keys resolve their user in the directory on every request (a removed user
or a revoked group membership applies at once) and must be newer than the user's directory
entry; OIDC principals take their groups from the token, and browser sessions of theirs ask the
IdP again every `session_recheck_s`. Either way, what the principal may read is decided by the
workspace's one permission path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from sqlalchemy import BindParameter, Engine, Executable, Float, bindparam, case, delete
from starlette.responses import Response

from sovra.directory import DirectoryError, User
from sovra.domain import Principal
from sovra.server.accounts import SCOPES, AccountStore, Session, rate_limits_t
from sovra.server.oidc import OidcVerifier, TokenError
from sovra.storage import upsert

SESSION_COOKIE = "sovra_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


def set_session_cookie(response: Response, token: str, *, max_age: int, secure: bool) -> None:
    """Issue the session cookie — the one place its attributes are set, for every sign-in path:
    HttpOnly (no script reads it), SameSite=Strict (no cross-site request carries it)."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        secure=secure,
        samesite="strict",
        path="/",
    )


class ApiError(HTTPException):
    """An error with a stable machine code; rendered as {"error": code, "detail": message}."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.code = code


def unauthorized(detail: str = "authentication required") -> ApiError:
    return ApiError(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def forbidden(detail: str = "not allowed") -> ApiError:
    return ApiError(403, "forbidden", detail)


@dataclass(frozen=True)
class Identity:
    principal: Principal
    method: str  # session | api_key | oidc
    scopes: frozenset[str]
    csrf: str | None = None
    key_id: str | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise forbidden(f"this credential lacks the {scope!r} scope")

    def require_admin(self) -> None:
        if not self.principal.is_admin:
            raise forbidden("administrators only")


@dataclass
class RateLimiter:
    """Token bucket per key (principal or client address).

    With an `engine` (the server's credential store) the buckets are rows of `rate_limits`,
    refilled and spent by one atomic INSERT … ON CONFLICT DO UPDATE … RETURNING, so replicas
    over one database share one limit; the time is the wall clock (replicas keep it by NTP; a
    clock behind the row's never refills negatively). Without one, in this process's memory.
    `scope` keeps limiters with different rates apart in the table."""

    per_minute: int
    burst: int
    engine: Engine | None = None
    scope: str = "requests"
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _checks: int = 0
    _statement: Executable | None = None

    def check(self, key: str) -> float:
        """0 when allowed, else seconds until the next request would be."""
        if self.engine is not None:
            return self._check_shared(self.engine, key)
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:
                self._buckets.clear()
        return 0.0

    def _check_shared(self, engine: Engine, key: str) -> float:
        rate = self.per_minute / 60.0
        burst = float(self.burst)
        now = time.time()
        params = {"scope": self.scope, "key": key, "now": now, "rate": rate, "burst": burst}
        with engine.begin() as conn:
            tokens, allowed = conn.execute(self._spend(engine), params).one()
            with self._lock:
                self._checks += 1
                sweep = self._checks % 1000 == 0
            if sweep:
                # A bucket untouched long enough to be full again is the same as no row.
                t = rate_limits_t
                conn.execute(
                    delete(t).where(t.c.scope == self.scope, t.c.last < now - burst / rate)
                )
        return 0.0 if allowed else (1.0 - float(tokens)) / rate

    def _spend(self, engine: Engine) -> Executable:
        """The refill-and-spend upsert, built once with its values as bind parameters: built
        per request, composing it and computing SQLAlchemy's cache key for it cost more CPU
        than the database work (a tenth of a search request's time under the interpreter lock)."""
        if self._statement is None:
            t = rate_limits_t
            now: BindParameter[float] = bindparam("now", type_=Float())
            rate: BindParameter[float] = bindparam("rate", type_=Float())
            burst: BindParameter[float] = bindparam("burst", type_=Float())
            elapsed = case((t.c.last < now, now - t.c.last), else_=0.0)
            refilled = case(
                (t.c.tokens + elapsed * rate > burst, burst), else_=t.c.tokens + elapsed * rate
            )
            self._statement = (
                upsert(engine, t, ["scope", "key"])
                .insert_values(
                    scope=bindparam("scope"),
                    key=bindparam("key"),
                    tokens=burst - 1.0,
                    last=now,
                    allowed=1,
                )
                .on_conflict_do_update(
                    index_elements=["scope", "key"],
                    set_={
                        "tokens": case((refilled >= 1.0, refilled - 1.0), else_=refilled),
                        "allowed": case((refilled >= 1.0, 1), else_=0),
                        "last": case((t.c.last < now, now), else_=t.c.last),
                    },
                )
                .returning(t.c.tokens, t.c.allowed)
            )
        return self._statement


class Authenticator:
    def __init__(
        self,
        accounts: AccountStore,
        directory_user: Callable[[str], User],
        oidc: OidcVerifier | None,
        *,
        session_recheck_s: float = 300.0,
    ) -> None:
        self.accounts = accounts
        self._user = directory_user
        self.oidc = oidc
        self.session_recheck_s = session_recheck_s

    def local_principal(self, user_id: str, issued_at: float | None = None) -> Principal | None:
        """The directory's principal for `user_id`, or None when the user is unknown, disabled,
        or — given the time a credential was `issued_at` — a later user of the same id (the
        entry's `since` stamp is after the credential: removing and re-adding an id does not
        revive the keys and sessions of the one removed)."""
        try:
            user = self._user(user_id)
        except DirectoryError:
            return None
        if issued_at is not None and issued_at < user.since:
            return None
        return Principal(id=user.id, groups=frozenset(user.groups), display_name=user.display_name)

    def _recheck(self, cookie: str, session: Session, oidc: OidcVerifier) -> Principal | None:
        """An identity-provider session past `session_recheck_s`: the IdP is asked again for
        the user's groups (userinfo, with the access token kept sealed in the session); when
        it cannot be asked or does not confirm the same user, the session ends."""
        token = self.accounts.idp_token(cookie, session)
        principal = None
        if token is not None:
            try:
                principal = oidc.userinfo(token)
            except TokenError:
                principal = None
        if principal is None or principal.id != session.user_id:
            self.accounts.end_session(cookie)
            return None
        self.accounts.rechecked(cookie, tuple(sorted(principal.groups)))
        return Principal(principal.id, principal.groups, session.display_name)

    def identify(self, request: Request) -> Identity | None:
        """The caller's identity, None when no credential was presented; raises 401 on a bad
        one (a bad credential never falls back to anonymous)."""
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise unauthorized("use 'Authorization: Bearer <API key or token>'")
            if token.startswith("sovra_"):
                key = self.accounts.authenticate_key(token)
                principal = self.local_principal(key.user_id, key.created_at) if key else None
                if key is None or principal is None:
                    raise unauthorized("API key not valid")
                return Identity(principal, "api_key", frozenset(key.scopes), key_id=key.id)
            if self.oidc is None:
                raise unauthorized("bearer tokens are not accepted: no identity provider")
            try:
                ident = self.oidc.verify(token)
            except TokenError as exc:
                raise unauthorized(str(exc)) from None
            return Identity(ident.principal, "oidc", frozenset(SCOPES))
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            session = self.accounts.session(cookie)
            if session is None:
                return None
            if session.groups is None:
                principal = self.local_principal(session.user_id, session.created_at)
            elif self.oidc is None:
                principal = None  # identity provider switched off: its sessions end
            elif time.time() - session.checked_at > self.session_recheck_s:
                principal = self._recheck(cookie, session, self.oidc)
            else:
                principal = Principal(
                    id=session.user_id,
                    groups=frozenset(session.groups),
                    display_name=session.display_name,
                )
            if principal is None:
                return None
            return Identity(principal, "session", frozenset(SCOPES), csrf=session.csrf)
        return None
