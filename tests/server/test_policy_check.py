"""`policy check` over HTTP for administrators: the REST route and the admin page's form give
the Cedar engine's decision with the deciding policies, like `sovra policy check`."""

from __future__ import annotations

import re
from typing import get_args

from fastapi.testclient import TestClient

from sovra.policy.engine import ACTIONS
from sovra.server.policy_check import Action
from tests.support.server import RUNBOOK, Site, bearer, password

DOC = f"document:{RUNBOOK}"


def check(client: TestClient, key: str, **body: object) -> tuple[int, dict[str, object]]:
    resp = client.post("/api/v1/policy/check", json=body, headers=bearer(key))
    return resp.status_code, resp.json()


def test_actions_are_the_engines() -> None:
    assert set(get_args(Action)) == set(ACTIONS)


def test_rest_policy_check_explains_decisions(client: TestClient, site: Site) -> None:
    root = site.keys["root-admin"]
    status, allowed = check(client, root, user="alice", action="search", resource=DOC)
    assert status == 200, allowed
    assert allowed["decision"] == "allow" and allowed["policy_ids"] == ["read-by-access"]
    assert allowed["policies"] == [
        {"id": "read-by-access", "effect": "permit", "file": "default.cedar", "line": 15}
    ]
    assert "sre" in allowed["groups"]  # alice resolved in the directory

    status, denied = check(client, root, user="carol", action="search", resource=DOC)
    assert status == 200 and denied["decision"] == "deny" and denied["default_deny"] is True

    # An ad-hoc principal: "what if olga were in sre?"
    status, what_if = check(
        client, root, user="olga", groups=["sre"], action="search", resource=DOC
    )
    assert status == 200 and what_if["decision"] == "allow" and what_if["groups"] == ["sre"]

    status, admin = check(client, root, user="root", action="administer")
    assert status == 200 and admin["policy_ids"] == ["admins-administer"]


def test_rest_policy_check_is_for_admins_only(client: TestClient, site: Site) -> None:
    body = {"user": "alice", "action": "search", "resource": DOC}
    assert check(client, site.keys["alice"], **body)[0] == 403
    assert client.post("/api/v1/policy/check", json=body).status_code == 401


def test_rest_policy_check_names_what_is_wrong(client: TestClient, site: Site) -> None:
    root = site.keys["root-admin"]
    status, body = check(client, root, user="nobody-here", action="search")
    assert status == 422 and "nobody-here" in str(body["detail"])
    status, body = check(client, root, user="alice", action="search", resource="document:x:y")
    assert status == 422 and "unknown source 'x'" in str(body["detail"])
    status, body = check(client, root, user="alice", action="fly")
    assert status == 422 and body["error"] == "invalid_request"
    status, body = check(client, root, user="alice", action="send_to_endpoint")
    assert status == 422 and "endpoint" in str(body["detail"])


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, name
    return match.group(1)


def sign_in(c: TestClient, user: str) -> str:
    c.cookies.clear()
    form = c.get("/login")
    resp = c.post(
        "/login",
        data={
            "username": user,
            "password": password(user),
            "csrf_token": hidden(form.text, "csrf_token"),
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    return hidden(c.get("/").text, "csrf_token")


def test_admin_policies_page_and_check_form(client: TestClient) -> None:
    csrf = sign_in(client, "root")
    page = client.get("/admin/policies")
    assert page.status_code == 200
    assert "read-by-access" in page.text and "default.cedar:15" in page.text
    form = {"user": "carol", "action": "search", "resource": DOC, "csrf_token": csrf}
    denied = client.post("/admin/policies", data=form)
    assert denied.status_code == 200
    assert "<strong>DENY</strong>" in denied.text and "default deny" in denied.text
    allowed = client.post("/admin/policies", data={**form, "groups": "sre, staff"})
    assert "<strong>ALLOW</strong>" in allowed.text and "read-by-access" in allowed.text
    bad = client.post("/admin/policies", data={**form, "user": "nobody-here"})
    assert bad.status_code == 422 and "nobody-here" in bad.text
    no_csrf = client.post(
        "/admin/policies", data={k: v for k, v in form.items() if k != "csrf_token"}
    )
    assert no_csrf.status_code == 403
    client.cookies.clear()


def test_admin_policies_page_is_for_admins_only(client: TestClient) -> None:
    csrf = sign_in(client, "alice")
    assert client.get("/admin/policies").status_code == 403
    form = {"user": "carol", "action": "search", "resource": DOC, "csrf_token": csrf}
    resp = client.post("/admin/policies", data=form)
    assert resp.status_code == 403 and "DENY" not in resp.text
    client.cookies.clear()
