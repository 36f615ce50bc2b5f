"""The authorisation matrix: every route × every kind of caller → the expected status, and
no response to a caller who may not read a document leaks its title, text or existence."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from sovra.server import ServerSettings, create_app
from sovra.server.accounts import SCOPES, AccountStore
from sovra.workspace import Workspace
from tests.support.server import ISSUER_AUDIENCE, PEOPLE_PAGE, RUNBOOK, Issuer, Site, bearer

QUESTION = "what should I do when etcd database quota is low?"
RUNBOOK_MARKERS = ("etcdDatabaseQuotaLowSpace", "total existing DB size")
PEOPLE_MARKERS = ("Background Check Policy", "background-check-policy")

# Callers: who they are → Authorization header (None = no credential).
Caller = Callable[[Site, Issuer], str | None]
CALLERS: dict[str, Caller] = {
    "anonymous": lambda s, i: None,
    "alice": lambda s, i: s.keys["alice"],
    "bob": lambda s, i: s.keys["bob"],
    "carol": lambda s, i: s.keys["carol"],
    "dana": lambda s, i: s.keys["dana"],
    "root": lambda s, i: s.keys["root"],
    "alice-search-only": lambda s, i: s.keys["alice-search"],
    "oidc-sre": lambda s, i: i.token("olivia", ("staff", "sre")),
    "oidc-staff": lambda s, i: i.token("oscar", ("staff",)),
    "oidc-admin": lambda s, i: i.token("ada", ("staff", "idp-admins")),  # mapped to admins
    "expired": lambda s, i: i.token("olivia", ("sre",), exp_in=-600),
    "wrong-audience": lambda s, i: i.token("olivia", ("sre",), aud="another-app"),
    "alg-none": lambda s, i: jwt.encode(
        {"iss": i.url, "aud": "sovra-test", "sub": "root", "exp": int(time.time()) + 300},
        None,
        algorithm="none",
        headers={"kid": "rsa-1"},
    ),
    "forged": lambda s, i: i.token(
        "root",
        ("admins", "sre"),
        key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ),
    "revoked-or-unknown-key": lambda s, i: "sovra_abcdefabcdef_" + "x" * 43,
}
BAD = ("expired", "wrong-audience", "alg-none", "forged", "revoked-or-unknown-key")
SCOPED = ("alice", "bob", "carol", "dana", "root", "oidc-sre", "oidc-staff", "oidc-admin")
ADMINS = ("root", "oidc-admin")
SRE = ("alice", "oidc-sre")

# Route → (method, path, body).
ROUTES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "search": ("POST", "/api/v1/search", {"query": "etcd database quota low space"}),
    "ask": ("POST", "/api/v1/ask", {"question": QUESTION, "extractive": True}),
    "doc-runbook": ("GET", f"/api/v1/documents/{RUNBOOK}", None),
    "doc-people": ("GET", f"/api/v1/documents/{PEOPLE_PAGE}", None),
    "doc-missing": ("GET", "/api/v1/documents/runbooks:no/such.md", None),
    "sources": ("GET", "/api/v1/sources", None),
    "endpoints": ("GET", "/api/v1/endpoints", None),
    "audit-events": ("GET", "/api/v1/audit/events", None),
    "audit-receipt-missing": ("GET", "/api/v1/audit/entries/999999999/receipt", None),
    "audit-public-key": ("GET", "/api/v1/audit/public-key", None),
    "audit-verify": ("POST", "/api/v1/audit/verify-receipt", {"receipt": {"index": 0}}),
    "feedback-missing": (
        "POST",
        "/api/v1/feedback",
        {"answer_index": 999999999, "rating": "up"},
    ),
    "models": ("GET", "/v1/models", None),
    "chat": (
        "POST",
        "/v1/chat/completions",
        {"model": "sovra-extractive", "messages": [{"role": "user", "content": QUESTION}]},
    ),
    "policy-check": (
        "POST",
        "/api/v1/policy/check",
        {"user": "carol", "action": "search", "resource": f"document:{RUNBOOK}"},
    ),
    "mcp-fetch-runbook": (
        "POST",
        "/mcp",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "fetch_document", "arguments": {"document_id": RUNBOOK}},
        },
    ),
    "healthz": ("GET", "/healthz", None),
    "readyz": ("GET", "/readyz", None),
    "metrics": ("GET", "/metrics", None),
}
PUBLIC = ("healthz", "readyz", "metrics")
# Streamable HTTP wants both media types; the Host passes the loopback DNS-rebinding check.
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
    "Host": "127.0.0.1:8750",
}


def readable(route: str, caller: str) -> bool:
    """Routes whose output may name documents regardless of read access: the audit log shows
    administrators every event's resources by id (that is what an audit log is for), and policy
    check echoes the resource id an administrator asked about."""
    return route in PUBLIC or (route in ("audit-events", "policy-check") and caller in ADMINS)


def expected(route: str, caller: str) -> int:
    if route in PUBLIC:
        return 200
    if caller == "anonymous" or caller in BAD:
        return 401
    if caller == "alice-search-only":
        return (
            200
            if route
            in (
                "search",
                "sources",
                "endpoints",
                "models",
                "audit-public-key",
                "audit-verify",
                "mcp-fetch-runbook",  # the call is answered; the tool refuses the scope
            )
            else 403
        )
    if route == "policy-check":
        # root's key has no `admin` scope: only the signed-in administrator may check policies
        return 200 if caller == "oidc-admin" else 403
    if route == "audit-events":
        return 200 if caller in ADMINS else 403
    if route == "mcp-fetch-runbook":
        return 200  # a JSON-RPC result; the tool itself refuses (see test_mcp_tool_results)
    if route in ("doc-missing", "audit-receipt-missing", "feedback-missing"):
        return 404
    if route == "doc-runbook":
        return 200 if caller in SRE else 404
    if route == "doc-people":
        return 200 if caller == "dana" else 404
    return 200


def matrix_settings(issuer: Issuer) -> ServerSettings:
    """The issuer on, `idp-admins` mapped to sovra's admins, no rate limit in the way."""
    return ServerSettings(
        oidc_issuer=issuer.url,
        oidc_audience=ISSUER_AUDIENCE,
        oidc_admin_groups=("idp-admins",),
        secure_cookies=False,
        rate_limit_per_minute=100_000,
        rate_limit_burst=10_000,
    )


@pytest.fixture(scope="module")
def responses(workspace: Workspace, site: Site, issuer: Issuer) -> dict[tuple[str, str], Any]:
    settings = matrix_settings(issuer)
    out: dict[tuple[str, str], Any] = {}
    with TestClient(create_app(workspace.config, settings, workspace)) as client:
        for caller, make in CALLERS.items():
            token = make(site, issuer)
            headers = bearer(token) if token else {}
            for route, (method, path, body) in ROUTES.items():
                extra = MCP_HEADERS if path == "/mcp" else {}
                out[(route, caller)] = client.request(
                    method, path, json=body, headers={**headers, **extra}
                )
    return out


@pytest.mark.parametrize("caller", list(CALLERS))
def test_every_route_gives_the_expected_status(
    responses: dict[tuple[str, str], Any], caller: str
) -> None:
    got = {route: responses[(route, caller)].status_code for route in ROUTES}
    want = {route: expected(route, caller) for route in ROUTES}
    assert got == want


@pytest.mark.parametrize("caller", [c for c in CALLERS if c not in (*SRE, "alice-search-only")])
def test_no_route_leaks_the_runbook(responses: dict[tuple[str, str], Any], caller: str) -> None:
    for route in ROUTES:
        if readable(route, caller):
            continue
        text = responses[(route, caller)].text
        for marker in RUNBOOK_MARKERS:
            assert marker not in text, (route, caller, marker)


@pytest.mark.parametrize("caller", [c for c in CALLERS if c != "dana"])
def test_no_route_leaks_the_people_page(responses: dict[tuple[str, str], Any], caller: str) -> None:
    for route in ROUTES:
        if readable(route, caller):
            continue
        for marker in PEOPLE_MARKERS:
            assert marker not in responses[(route, caller)].text, (route, caller, marker)


def test_forbidden_document_is_byte_identical_to_missing(
    responses: dict[tuple[str, str], Any],
) -> None:
    for caller in SCOPED:
        if caller not in SRE:
            forbidden = responses[("doc-runbook", caller)]
            missing = responses[("doc-missing", caller)]
            assert forbidden.content == missing.content
            assert forbidden.headers["content-length"] == missing.headers["content-length"]


def test_the_matrix_sees_what_it_should(responses: dict[tuple[str, str], Any]) -> None:
    """Guard against a vacuous matrix: the readers do get the restricted content."""
    assert RUNBOOK_MARKERS[0] in responses[("doc-runbook", "alice")].text
    assert RUNBOOK_MARKERS[0] in responses[("search", "oidc-sre")].text
    assert PEOPLE_MARKERS[0] in responses[("doc-people", "dana")].text


def test_mcp_tool_results(responses: dict[tuple[str, str], Any]) -> None:
    """Over MCP the tool answers: the runbook for sre readers, the same refusal for the rest."""
    refusals = set()
    for caller in (*SCOPED, "alice-search-only"):
        result = responses[("mcp-fetch-runbook", caller)].json()["result"]
        if caller in SRE:
            assert not result.get("isError") and result["structuredContent"]["id"] == RUNBOOK
        else:
            assert result["isError"] is True, caller
            if caller != "alice-search-only":
                refusals.add(result["content"][0]["text"])
    assert len(refusals) == 1  # one refusal text for every reader who may not see it


# ---------------------------------------------------------------------- scopes on every route
# Every route that reads or changes something × every scope × every kind of caller. The table
# below is written independently of the app's declarations: route → (method, path, body, form,
# scope the route needs, administrators only, status when allowed).
Web = tuple[str, str, dict[str, Any] | None, dict[str, str] | None, str | None, bool, int]
SCOPE_ROUTES: dict[str, Web] = {
    "page-home": ("GET", "/", None, None, "ask", False, 200),
    "page-ask": (
        "POST",
        "/ask",
        None,
        {"question": QUESTION, "extractive": "true"},
        "ask",
        False,
        200,
    ),
    "page-search": ("GET", "/search?q=etcd+quota", None, None, "search", False, 200),
    "page-document-missing": (
        "GET",
        "/documents/runbooks:no/such.md",
        None,
        None,
        "documents",
        False,
        404,
    ),
    "page-receipt-missing": ("GET", "/receipts/999999999", None, None, "audit", False, 404),
    "page-sources": ("GET", "/sources", None, None, "search", False, 200),
    "page-audit": ("GET", "/admin/audit", None, None, "audit", True, 200),
    "page-audit-verify": ("GET", "/admin/audit?verify=true", None, None, "audit", True, 200),
    "page-users": ("GET", "/admin/users", None, None, "admin", True, 200),
    "page-policies": ("GET", "/admin/policies", None, None, "admin", True, 200),
    "page-policies-check": (
        "POST",
        "/admin/policies",
        None,
        {"user": "carol", "action": "search"},
        "admin",
        True,
        200,
    ),
    "page-flows": ("GET", "/flows", None, None, "flows", False, 200),
    "page-flow-run-missing": ("GET", "/flows/runs/no-such-run", None, None, "flows", False, 404),
    "api-search": ("POST", "/api/v1/search", {"query": "etcd quota"}, None, "search", False, 200),
    "api-ask": (
        "POST",
        "/api/v1/ask",
        {"question": QUESTION, "extractive": True},
        None,
        "ask",
        False,
        200,
    ),
    "api-chat": (
        "POST",
        "/v1/chat/completions",
        {"model": "sovra-extractive", "messages": [{"role": "user", "content": QUESTION}]},
        None,
        "ask",
        False,
        200,
    ),
    "api-document-missing": (
        "GET",
        "/api/v1/documents/runbooks:no/such.md",
        None,
        None,
        "documents",
        False,
        404,
    ),
    "api-sources": ("GET", "/api/v1/sources", None, None, "search", False, 200),
    "api-endpoints": ("GET", "/api/v1/endpoints", None, None, None, False, 200),
    "api-audit-events": ("GET", "/api/v1/audit/events", None, None, "audit", True, 200),
    "api-receipt-missing": (
        "GET",
        "/api/v1/audit/entries/999999999/receipt",
        None,
        None,
        "audit",
        False,
        404,
    ),
    "api-feedback-missing": (
        "POST",
        "/api/v1/feedback",
        {"answer_index": 999999999, "rating": "up"},
        None,
        "feedback",
        False,
        404,
    ),
    "api-policy-check": (
        "POST",
        "/api/v1/policy/check",
        {"user": "carol", "action": "search"},
        None,
        "admin",
        True,
        200,
    ),
    "api-flows": ("GET", "/api/v1/flows", None, None, "flows", False, 200),
    "api-flow-run-missing": (
        "GET",
        "/api/v1/flows/runs/no-such-run",
        None,
        None,
        "flows",
        False,
        404,
    ),
}
ALL_SCOPES = frozenset(SCOPES)


@dataclass(frozen=True)
class ScopeCaller:
    kind: str  # anonymous | session | api_key | oidc
    user: str = ""
    admin: bool = False
    scopes: frozenset[str] = ALL_SCOPES
    groups: tuple[str, ...] = ()


SCOPE_CALLERS: dict[str, ScopeCaller] = {
    "anonymous": ScopeCaller("anonymous", scopes=frozenset()),
    "session-carol": ScopeCaller("session", "carol"),
    "session-root": ScopeCaller("session", "root", admin=True),
    "key-carol-all": ScopeCaller("api_key", "carol"),
    **{
        f"key-root-{scope}": ScopeCaller("api_key", "root", admin=True, scopes=frozenset({scope}))
        for scope in SCOPES
    },
    "key-root-all": ScopeCaller("api_key", "root", admin=True),
    "oidc-staff": ScopeCaller("oidc", "oscar", groups=("staff",)),
    "oidc-mapped-admin": ScopeCaller("oidc", "ada", admin=True, groups=("staff", "idp-admins")),
    # An IdP group that happens to be called `admins` is not sovra's admins group.
    "oidc-admins-unmapped": ScopeCaller("oidc", "mallory", groups=("staff", "admins")),
}


def scope_expected(route: str, caller: ScopeCaller) -> int:
    _, path, _, _, scope, admin_only, ok = SCOPE_ROUTES[route]
    if caller.kind == "anonymous":
        return 303 if not path.startswith(("/api/", "/v1/")) else 401
    if scope is not None and scope not in caller.scopes:
        return 403
    if admin_only and not caller.admin:
        return 403
    if route == "page-flows" and caller.kind == "oidc":
        return 403  # the inbox resolves its user in the directory; these IdP users are not in it
    return ok


@pytest.fixture(scope="module")
def scope_responses(workspace: Workspace, site: Site, issuer: Issuer) -> dict[tuple[str, str], Any]:
    settings = matrix_settings(issuer)
    accounts = AccountStore.in_home(site.root / "data")
    headers: dict[str, dict[str, str]] = {}
    try:
        for name, c in SCOPE_CALLERS.items():
            if c.kind == "api_key":
                headers[name] = bearer(accounts.create_key(c.user, name, c.scopes)[0])
            elif c.kind == "session":
                token, session = accounts.create_session(c.user, 3600)
                headers[name] = {"Cookie": f"sovra_session={token}", "X-CSRF-Token": session.csrf}
            elif c.kind == "oidc":
                headers[name] = bearer(issuer.token(c.user, c.groups))
            else:
                headers[name] = {}
    finally:
        accounts.close()
    out: dict[tuple[str, str], Any] = {}
    with TestClient(create_app(workspace.config, settings, workspace)) as client:
        for name in SCOPE_CALLERS:
            for route, (method, path, body, form, *_) in SCOPE_ROUTES.items():
                out[(route, name)] = client.request(
                    method,
                    path,
                    json=body,
                    data=form,
                    headers={"Accept": "text/html", **headers[name]},
                    follow_redirects=False,
                )
    return out


@pytest.mark.parametrize("caller", list(SCOPE_CALLERS))
def test_every_route_enforces_its_scope(
    scope_responses: dict[tuple[str, str], Any], caller: str
) -> None:
    got = {route: scope_responses[(route, caller)].status_code for route in SCOPE_ROUTES}
    want = {route: scope_expected(route, SCOPE_CALLERS[caller]) for route in SCOPE_ROUTES}
    assert got == want


def test_anonymous_pages_go_to_sign_in(scope_responses: dict[tuple[str, str], Any]) -> None:
    for route in SCOPE_ROUTES:
        if route.startswith("page-"):
            location = scope_responses[(route, "anonymous")].headers["location"]
            assert location.startswith("/login?next="), route


def test_refused_pages_say_not_allowed(scope_responses: dict[tuple[str, str], Any]) -> None:
    """A browser refused a page gets the readable "Not allowed" page (the browser test looks
    for its heading), not a JSON body."""
    refused = [
        resp
        for (route, _), resp in scope_responses.items()
        if route.startswith("page-") and resp.status_code == 403
    ]
    assert refused and all("<h1>Not allowed</h1>" in r.text for r in refused)
