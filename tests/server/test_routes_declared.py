"""Every route of the app declares who may call it: exactly one rule dependency (`Needs`,
`Public`, `MaybeSignedIn`), so a new page or API route cannot be added without a scope.
Routes that are not FastAPI routes (the MCP gate, static files, the schema) are listed here
with what protects them, and the list must match the app exactly."""

from __future__ import annotations

from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from sovra.server import create_app
from sovra.server.deps import AuthRule, Needs
from sovra.workspace import Workspace
from tests.server.conftest import settings_for
from tests.support.server import Issuer

NOT_API_ROUTES = {
    "/mcp": "bearer only (API key or OIDC token), per-tool scopes in McpGate",
    "/static": "public static files",
    "/openapi.json": "public schema",
}


def rules(dependant: Dependant) -> list[AuthRule]:
    found = [d.call for d in dependant.dependencies if isinstance(d.call, AuthRule)]
    for sub in dependant.dependencies:
        found += rules(sub)
    return found


def app_routes(workspace: Workspace, issuer: Issuer) -> list[Any]:
    """Every route with its effective path (included routers' prefixes applied)."""
    app = create_app(workspace.config, settings_for(issuer), workspace)
    return list(iter_route_contexts(app.routes))


def test_every_route_declares_exactly_one_rule(workspace: Workspace, issuer: Issuer) -> None:
    undeclared, others = [], set()
    for route in app_routes(workspace, issuer):
        if isinstance(route.original_route, APIRoute):
            if len(rules(route.dependant)) != 1:
                undeclared.append(f"{sorted(route.methods)} {route.path}")
        else:
            others.add(getattr(route, "path", repr(route)))
    assert undeclared == []
    assert others == set(NOT_API_ROUTES)


def test_pages_and_admin_routes_declare_what_the_issue_names(
    workspace: Workspace, issuer: Issuer
) -> None:
    """The routes the security review found open to any key, with the rule each now has."""
    declared = {
        (method, route.path): rules(route.dependant)[0]
        for route in app_routes(workspace, issuer)
        if isinstance(route.original_route, APIRoute)
        for method in route.methods
    }
    assert declared[("GET", "/admin/audit")] == Needs("audit", admin=True, page=True)
    assert declared[("GET", "/admin/users")] == Needs("admin", admin=True, page=True)
    assert declared[("GET", "/admin/policies")] == Needs("admin", admin=True, page=True)
    assert declared[("POST", "/admin/policies")] == Needs("admin", admin=True, page=True)
    assert declared[("GET", "/receipts/{index}")] == Needs("audit", page=True)
    assert declared[("GET", "/sources")] == Needs("search", page=True)
    assert declared[("GET", "/flows")] == Needs("flows", page=True)
    assert declared[("GET", "/flows/runs/{run_id}")] == Needs("flows", page=True)
    assert declared[("POST", "/api/v1/policy/check")] == Needs("admin", admin=True)


def test_the_unprotected_login_form_route_is_gone(client: TestClient) -> None:
    """`/auth/login-form` took a cross-site form post without a token (login CSRF)."""
    resp = client.post("/auth/login-form", data={"username": "carol", "password": "x" * 10})
    assert resp.status_code in (404, 405)
    assert "sovra_session" not in resp.headers.get("set-cookie", "")
