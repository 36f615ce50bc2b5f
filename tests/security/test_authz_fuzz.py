"""Authorization fuzz: schemathesis drives every operation of the OpenAPI schema, in process
(ASGI), once per kind of caller — anonymous, a user's and an administrator's browser session,
an API key holding each single scope, an identity-provider user and a mapped IdP
administrator. Documents the callers may not read are planted in the index and their ids, and
another user's audit entry, are fed into the generated path parameters.

Every response must be: no 5xx; no 2xx where the route's declared rule (scope, admins) does
not admit the caller; no 2xx carrying text or ids of a document the caller may not read; no
2xx receipt for someone else's audit entry. Bounded: `EXAMPLES` cases per operation and caller
(the figures are in docs/security.md)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovra.domain import Principal
from sovra.server import create_app
from sovra.server.accounts import SCOPES, AccountStore
from sovra.server.deps import Needs
from sovra.workspace import Workspace
from tests.server.conftest import issuer, settings_for, site, workspace  # noqa: F401 (fixtures)
from tests.support.server import PEOPLE_PAGE, RUNBOOK, Issuer, Site, bearer

EXAMPLES = 4
# What may not leak: the sre runbook (alice reads it) and the people page (only dana does).
SECRETS: dict[str, tuple[str, ...]] = {
    RUNBOOK: (RUNBOOK, "etcdDatabaseQuotaLowSpace", "total existing DB size"),
    PEOPLE_PAGE: (PEOPLE_PAGE, "Background Check Policy", "background-check-policy"),
}
READERS = {RUNBOOK: {"alice", "olivia"}, PEOPLE_PAGE: {"dana"}}
# Routes whose output names documents by design, for administrators: the audit log shows
# every event's resource ids, and policy check echoes the resource asked about.
ADMIN_SEES_IDS = {("GET", "/api/v1/audit/events"), ("POST", "/api/v1/policy/check")}


@dataclass(frozen=True)
class Caller:
    kind: str  # anonymous | session | api_key | oidc
    user: str = ""
    scopes: frozenset[str] = frozenset(SCOPES)
    admin: bool = False
    groups: tuple[str, ...] = ()


CALLERS: dict[str, Caller] = {
    "anonymous": Caller("anonymous", scopes=frozenset()),
    "session-user": Caller("session", "carol"),
    "session-admin": Caller("session", "root", admin=True),
    **{f"key-{s}": Caller("api_key", "alice", scopes=frozenset({s})) for s in SCOPES},
    "key-admin-all": Caller("api_key", "root", admin=True),
    "oidc-user": Caller("oidc", "oscar", groups=("staff",)),
    "oidc-admin": Caller("oidc", "ada", admin=True, groups=("staff", "idp-admins")),
}


@dataclass
class Fuzz:
    app: FastAPI
    schema: schemathesis.BaseSchema
    headers: dict[str, Callable[[], dict[str, str]]]
    rules: dict[tuple[str, str], Needs | None]
    foreign_entry: int
    """An audit entry of dana's: only administrators may have its receipt."""
    tried: dict[str, int]
    failures: list[str]


def route_rules(app: FastAPI) -> dict[tuple[str, str], Needs | None]:
    out: dict[tuple[str, str], Needs | None] = {}
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            found = [d.call for d in route.dependant.dependencies if isinstance(d.call, Needs)]
            # The schema writes `{document_id}` where the route says `{document_id:path}`.
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
            for method in route.methods or ():
                out[(method, path)] = found[0] if found else None
    return out


@pytest.fixture(scope="module")
def fuzz(workspace: Workspace, site: Site, issuer: Issuer) -> Iterator[Fuzz]:  # noqa: F811
    app = create_app(
        workspace.config,
        settings_for(
            issuer,
            oidc_admin_groups=("idp-admins",),
            rate_limit_per_minute=10_000_000,
            rate_limit_burst=1_000_000,
        ),
        workspace,
    )
    before = workspace.audit.size
    workspace.search(Principal("dana", frozenset({"staff", "people"})), "background check")
    foreign = next(
        e.index for e in workspace.audit.events(start=before) if e.view.get("actor") == "user:dana"
    )
    accounts = AccountStore.in_home(site.root / "data")
    headers: dict[str, Callable[[], dict[str, str]]] = {}
    try:
        for name, c in CALLERS.items():
            if c.kind == "api_key":
                key = accounts.create_key(c.user, f"fuzz-{name}", c.scopes)[0]
                headers[name] = lambda key=key: bearer(key)
            elif c.kind == "session":
                token, session = accounts.create_session(c.user, 3600)
                cookie = {"Cookie": f"sovra_session={token}", "X-CSRF-Token": session.csrf}
                headers[name] = lambda cookie=cookie: cookie
            elif c.kind == "oidc":
                headers[name] = lambda c=c: bearer(issuer.token(c.user, c.groups))
            else:
                headers[name] = dict
    finally:
        accounts.close()
    with TestClient(app):  # the lifespan: model and stores warm
        yield Fuzz(
            app,
            schemathesis.openapi.from_asgi("/openapi.json", app),
            headers,
            route_rules(app),
            foreign,
            {},
            [],
        )


def admitted(rule: Needs | None, caller: Caller) -> bool:
    if caller.kind == "anonymous":
        return rule is None
    if rule is None:
        return True
    scope_ok = rule.scope is None or rule.scope in caller.scopes
    return scope_ok and (caller.admin or not rule.admin)


def judge(fz: Fuzz, name: str, case: schemathesis.Case, status: int, text: str) -> str | None:
    """Why this response is a failure, or None."""
    caller = CALLERS[name]
    label = f"{name}: {case.method} {case.formatted_path}"
    if status >= 500:
        return f"{label} → {status}"
    if not 200 <= status < 300:
        return None
    key = (case.method.upper(), case.operation.path)
    if key not in fz.rules:
        return f"{label}: the schema's operation matches no route of the app"
    if not admitted(fz.rules[key], caller):
        return f"{label} → {status} although the route's rule refuses this caller"
    if not (caller.admin and key in ADMIN_SEES_IDS):
        for doc, markers in SECRETS.items():
            if caller.user not in READERS[doc] and any(m in text for m in markers):
                return f"{label} → {status} with text of {doc}"
    receipt = key == ("GET", "/api/v1/audit/entries/{index}/receipt")
    if (
        receipt
        and not caller.admin
        and (case.path_parameters or {}).get("index") == fz.foreign_entry
    ):
        return f"{label} → {status}: someone else's receipt"
    return None


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("name", list(CALLERS))
def test_authorization_fuzz(fuzz: Fuzz, name: str) -> None:
    probes = st.sampled_from([RUNBOOK, PEOPLE_PAGE])
    failures: list[str] = []
    tried = 0
    for result in fuzz.schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy(), doc=probes, probe=st.booleans())
        def run(case: schemathesis.Case, doc: str, probe: bool) -> None:
            nonlocal tried
            params = case.path_parameters
            if probe and params:
                if "document_id" in params:
                    params["document_id"] = doc
                if "index" in params:
                    params["index"] = fuzz.foreign_entry
            tried += 1
            resp = case.call(headers=fuzz.headers[name]())
            why = judge(fuzz, name, case, resp.status_code, resp.text)
            if why:
                failures.append(why)

        run()
    print(f"authz fuzz {name}: {tried} cases, {len(failures)} failures")
    assert tried >= EXAMPLES * 10
    assert failures == []


def test_the_fuzz_can_fail(fuzz: Fuzz) -> None:
    """The judge is not vacuous: a leak, a refused caller's 200 and a 500 are each caught."""
    op = next(
        r.ok()
        for r in fuzz.schema.get_all_operations()
        if r.ok().path == "/api/v1/documents/{document_id}"
    )
    case = op.Case(path_parameters={"document_id": PEOPLE_PAGE})
    assert judge(fuzz, "session-user", case, 200, "Background Check Policy")
    assert judge(fuzz, "key-search", case, 200, "{}")  # no `documents` scope
    assert judge(fuzz, "session-admin", case, 500, "")
    assert judge(fuzz, "session-admin", case, 404, "") is None
