"""SCIM 2.0 provisioning as identity providers send it: the request sequence Entra ID's
provisioning service documents (find by filter, create, patch, group member add/remove,
`active` "False", DELETE) and Okta's PUT/path-less PATCH style. Deprovisioning ends access,
API keys and sessions at once; a membership change reaches search on the next query."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sovra.directory import IdentityMapping
from sovra.server.accounts import AccountStore
from sovra.workspace import Workspace
from tests.support.server import RUNBOOK, Site, bearer

SCIM = "/scim/v2"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
QUERY = {"query": "etcd database quota low space", "k": 5}


@pytest.fixture
def token(workspace: Workspace) -> Iterator[str]:
    secret, token_id = workspace.directory.create_scim_token("entra")
    yield secret
    workspace.directory.revoke_scim_token(token_id)


def scim(client: TestClient, token: str, method: str, path: str, body: Any = None) -> Any:
    headers = {**bearer(token), "Content-Type": "application/scim+json"}
    return client.request(method, SCIM + path, json=body, headers=headers)


def patch(ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": ops}


def entra_user(user_name: str) -> dict[str, Any]:
    """The POST body of Entra ID's provisioning service (its SCIM tutorial's example)."""
    return {
        "schemas": [CORE_USER, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": user_name,
        "active": True,
        "displayName": "Test User",
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        "roles": [],
        ENTERPRISE: {"department": "SRE"},
    }


def can_search(client: TestClient, key: str) -> tuple[int, bool]:
    resp = client.post("/api/v1/search", json=QUERY, headers=bearer(key))
    hits = resp.json().get("hits", []) if resp.status_code == 200 else []
    return resp.status_code, any(h["document_id"] == RUNBOOK for h in hits)


def credentials(site: Site, user: str) -> tuple[str, str]:
    accounts = AccountStore.in_home(site.root / "data")
    try:
        key = accounts.create_key(user, "bot", ("search",))[0]
        session, _ = accounts.create_session(user, 3600)
    finally:
        accounts.close()
    return key, session


def key_revoked(site: Site, user: str) -> list[bool]:
    accounts = AccountStore.in_home(site.root / "data")
    try:
        return [k.revoked_at is not None for k in accounts.keys(user)]
    finally:
        accounts.close()


def test_only_a_scim_token_is_accepted(client: TestClient, site: Site, token: str) -> None:
    assert client.get(SCIM + "/Users").status_code == 401
    # An admin's API key (every scope) is not a provisioning credential.
    assert client.get(SCIM + "/Users", headers=bearer(site.keys["root-admin"])).status_code == 401
    assert scim(client, token + "x", "GET", "/Users").status_code == 401
    resp = scim(client, token, "GET", "/ServiceProviderConfig")
    assert resp.status_code == 200 and resp.json()["patch"]["supported"] is True
    assert resp.headers["content-type"].startswith("application/scim+json")
    types = scim(client, token, "GET", "/ResourceTypes").json()
    assert {r["name"] for r in types["Resources"]} == {"User", "Group"}
    schemas = scim(client, token, "GET", "/Schemas").json()
    assert CORE_USER in {s["id"] for s in schemas["Resources"]}


def test_entra_id_provisioning_flow(
    client: TestClient,
    site: Site,
    workspace: Workspace,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = f"pat{time.monotonic_ns()}@contoso.com"
    # 1. Entra looks the user up by its matching attribute, finds none, creates it.
    found = scim(client, token, "GET", f'/Users?filter=userName eq "{user}"').json()
    assert found["totalResults"] == 0 and found["Resources"] == []
    created = scim(client, token, "POST", "/Users", entra_user(user))
    assert created.status_code == 201, created.text
    uid = created.json()["id"]
    assert created.json()["active"] is True
    assert scim(client, token, "POST", "/Users", entra_user(user)).status_code == 409
    found = scim(client, token, "GET", f'/Users?filter=userName eq "{user.upper()}"').json()
    assert [r["id"] for r in found["Resources"]] == [uid]
    by_ext = scim(
        client, token, "GET", '/Users?filter=externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"'
    ).json()
    assert uid in [r["id"] for r in by_ext["Resources"]]
    renamed = scim(
        client,
        token,
        "PATCH",
        f"/Users/{uid}",
        patch(
            [
                {"op": "Replace", "path": "displayName", "value": "Pat Doe"},
                {"op": "Add", "path": 'emails[type eq "work"].value', "value": user},
            ]
        ),
    )
    assert renamed.status_code == 200 and renamed.json()["displayName"] == "Pat Doe"

    # 2. A group, looked up without members, created empty, then members added. The
    # runbooks are for `sre`; Entra's "SRE Team" becomes sre only by the explicit mapping.
    monkeypatch.setattr(workspace.directory, "mapping", IdentityMapping({"SRE Team": "sre"}))
    none = scim(
        client, token, "GET", '/Groups?excludedAttributes=members&filter=displayName eq "SRE Team"'
    )
    assert none.json()["totalResults"] == 0
    group = scim(
        client,
        token,
        "POST",
        "/Groups",
        {
            "schemas": [CORE_GROUP],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "SRE Team",
            "members": [],
            "meta": {"resourceType": "Group"},
        },
    )
    assert group.status_code == 201, group.text
    gid = group.json()["id"]
    assert gid == "sre"
    key, _ = credentials(site, uid)
    assert can_search(client, key) == (200, False)
    add = scim(
        client,
        token,
        "PATCH",
        f"/Groups/{gid}",
        patch([{"op": "Add", "path": "members", "value": [{"$ref": None, "value": uid}]}]),
    )
    assert add.status_code == 200 and uid in [m["value"] for m in add.json()["members"]]
    assert can_search(client, key) == (200, True)  # the next query sees the membership
    remove = scim(
        client,
        token,
        "PATCH",
        f"/Groups/{gid}",
        patch([{"op": "Remove", "path": "members", "value": [{"$ref": None, "value": uid}]}]),
    )
    assert remove.status_code == 200
    assert uid not in [m["value"] for m in remove.json().get("members", [])]
    assert "alice" in [m["value"] for m in remove.json()["members"]]  # local members stay
    assert can_search(client, key) == (200, False)

    # 3. Disable (Entra sends the boolean as the string "False"): access ends at once.
    key, session = credentials(site, uid)
    off = scim(
        client,
        token,
        "PATCH",
        f"/Users/{uid}",
        patch([{"op": "Replace", "path": "active", "value": "False"}]),
    )
    assert off.status_code == 200 and off.json()["active"] is False
    assert can_search(client, key)[0] == 401
    client.cookies.clear()
    by_session = client.get("/api/v1/sources", headers={"Cookie": f"sovra_session={session}"})
    assert by_session.status_code == 401
    assert set(key_revoked(site, uid)) == {True}
    # Re-enabling gives the id back, never the old credentials.
    on = scim(
        client,
        token,
        "PATCH",
        f"/Users/{uid}",
        patch([{"op": "Replace", "path": "active", "value": True}]),
    )
    assert on.json()["active"] is True
    assert can_search(client, key)[0] == 401

    # 4. Delete: the user is gone, history and audit keep the changes.
    assert scim(client, token, "DELETE", f"/Users/{uid}").status_code == 204
    assert scim(client, token, "GET", f"/Users/{uid}").status_code == 404
    actions = [c.action for c in workspace.directory.history(500, uid)]
    assert {"user.add", "member.add", "member.remove", "user.disable", "user.remove"} <= set(
        actions
    )
    audited = {e.view["action"] for e in workspace.audit.events()}
    assert {"directory.user.disable", "directory.user.remove"} <= audited
    # sre is a local group that SCIM joined by mapping: SCIM may not delete it.
    assert scim(client, token, "DELETE", f"/Groups/{gid}").status_code == 409
    assert "sre" in workspace.directory.principal("alice").groups


def test_okta_put_and_pathless_patch(client: TestClient, site: Site, token: str) -> None:
    user = f"okta{time.monotonic_ns()}"
    body = {
        "schemas": [CORE_USER],
        "userName": user,
        "active": True,
        "name": {"givenName": "O", "familyName": "K"},
        "displayName": "O K",
    }
    uid = scim(client, token, "POST", "/Users", body).json()["id"]
    group = scim(
        client,
        token,
        "POST",
        "/Groups",
        {"schemas": [CORE_GROUP], "displayName": f"okta-{user}", "members": [{"value": uid}]},
    )
    gid = group.json()["id"]
    assert [m["value"] for m in group.json()["members"]] == [uid]
    # Okta removes one member by a value filter in the path, and renames by value object.
    gone = scim(
        client,
        token,
        "PATCH",
        f"/Groups/{gid}",
        patch([{"op": "remove", "path": f'members[value eq "{uid}"]'}]),
    )
    assert gone.status_code == 200 and "members" not in gone.json()
    same = scim(
        client,
        token,
        "PATCH",
        f"/Groups/{gid}",
        patch([{"op": "replace", "value": {"id": gid, "displayName": f"okta-{user}"}}]),
    )
    assert same.status_code == 200
    back = scim(
        client,
        token,
        "PUT",
        f"/Groups/{gid}",
        {"schemas": [CORE_GROUP], "displayName": f"okta-{user}", "members": [{"value": uid}]},
    )
    assert [m["value"] for m in back.json()["members"]] == [uid]
    member = scim(client, token, "GET", f'/Groups?filter=members eq "{uid}"').json()
    assert [g["id"] for g in member["Resources"]] == [gid]
    key, _ = credentials(site, uid)
    put = scim(client, token, "PUT", f"/Users/{uid}", {**body, "active": False})
    assert put.status_code == 200 and put.json()["active"] is False
    assert can_search(client, key)[0] == 401
    assert key_revoked(site, uid) == [True]
    okta_off = scim(
        client,
        token,
        "PATCH",
        f"/Users/{uid}",
        patch([{"op": "replace", "value": {"active": False}}]),
    )
    assert okta_off.json()["active"] is False
    scim(client, token, "DELETE", f"/Users/{uid}")
    scim(client, token, "DELETE", f"/Groups/{gid}")


def test_conflicts_need_an_explicit_mapping(client: TestClient, token: str) -> None:
    # `alice` is a local user: SCIM may not take her over implicitly.
    taken = scim(client, token, "POST", "/Users", {"schemas": [CORE_USER], "userName": "alice"})
    assert taken.status_code == 409 and "adopt_users" in taken.json()["detail"]
    # An IdP group called like a role group is refused, with the mapping that would allow it.
    role = scim(
        client, token, "POST", "/Groups", {"schemas": [CORE_GROUP], "displayName": "Admins"}
    )
    assert role.status_code == 409
    assert "collides with sovra's role group 'admins'" in role.json()["detail"]
    assert "[directory.group_map]" in role.json()["detail"]
    # An existing local group is not joined silently either.
    local = scim(client, token, "POST", "/Groups", {"schemas": [CORE_GROUP], "displayName": "sre"})
    assert local.status_code == 409 and "group_map" in local.json()["detail"]


def test_pagination_and_bad_filters(client: TestClient, token: str) -> None:
    page = scim(client, token, "GET", "/Users?startIndex=2&count=2").json()
    assert page["startIndex"] == 2 and page["itemsPerPage"] == len(page["Resources"]) <= 2
    everyone = scim(client, token, "GET", "/Users?count=200").json()
    assert page["totalResults"] == everyone["totalResults"] >= 4
    assert [r["id"] for r in page["Resources"]] == [r["id"] for r in everyone["Resources"]][1:3]
    bad = scim(client, token, "GET", '/Users?filter=userName co "a"')
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidFilter"
