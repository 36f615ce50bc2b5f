"""SCIM 2.0 (RFC 7643/7644) at `/scim/v2`: identity providers (Entra ID, Okta, Keycloak) push
users and groups into sovra's directory.

- Authentication: a bearer token of its own (`sovra directory scim-token create`), checked
  against its SHA-256 in the directory; no session, OIDC token or API key is accepted here.
- Resource ids are sovra's: a User's id is its `userName`, a Group's id is the sovra group its
  `displayName` maps to (`[directory.group_map]`; role groups only by explicit mapping).
- Deprovisioning (`active: false` or DELETE) disables/removes the user and revokes its API keys
  and sessions in the same request; the permission filter sees it on the next query.
- PATCH accepts the RFC forms and the ones Entra ID and Okta send: op names in any case,
  `active` as "False", a path-less `replace` with an object value, `members[value eq "id"]`.
Schemas and payloads are validated and rendered with `scim2-models`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    Error,
    ETag,
    Filter,
    Group,
    GroupMember,
    GroupMembership,
    ListResponse,
    Meta,
    Patch,
    ResourceType,
    ServiceProviderConfig,
    Sort,
    User,
)

from sovra.directory import Directory, DirectoryConflict, DirectoryError
from sovra.directory import Group as DirGroup
from sovra.directory import User as DirUser
from sovra.errors import NotFound
from sovra.server.deps import AppState, AuthRule, app_state

SCIM_TYPE = "application/scim+json"
MAX_RESULTS = 200
ScimUser = User[EnterpriseUser]
router = APIRouter(prefix="/scim/v2", include_in_schema=False)
State = Annotated[AppState, Depends(app_state)]


class ScimFail(Exception):
    """A SCIM error response (RFC 7644 §3.12)."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type


def error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ScimFail)
    body = Error(status=exc.status, detail=exc.detail, scim_type=exc.scim_type).model_dump()
    headers = {"WWW-Authenticate": 'Bearer realm="sovra-scim"'} if exc.status == 401 else None
    return JSONResponse(body, exc.status, headers=headers, media_type=SCIM_TYPE)


@dataclass(frozen=True)
class ScimBearer(AuthRule):
    """Only a live SCIM provisioning token (its own credential, its own `scim` scope)."""

    async def __call__(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not app_state(request).ws.directory.scim_token_valid(
            token.strip()
        ):
            app_state(request).metrics.denials.labels("authentication").inc()
            raise ScimFail(401, "a valid SCIM bearer token is required")

    def describe(self) -> str:
        return "scope scim (a SCIM provisioning token only)"


Provisioner = Annotated[None, Depends(ScimBearer())]


def scim_json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status, media_type=SCIM_TYPE)


@contextmanager
def directory_errors() -> Iterator[None]:
    """Directory refusals as SCIM errors: conflicts are 409 `uniqueness`, bad values 400."""
    try:
        yield
    except DirectoryConflict as exc:
        raise ScimFail(409, exc.message, "uniqueness") from None
    except NotFound as exc:
        raise ScimFail(404, str(exc)) from None
    except DirectoryError as exc:
        raise ScimFail(400, exc.message, "invalidValue") from None


async def body_of(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise ScimFail(400, "the request body is not JSON", "invalidSyntax") from None
    if not isinstance(data, dict):
        raise ScimFail(400, "the request body must be a JSON object", "invalidSyntax")
    return data


def _location(request: Request, kind: str, rid: str) -> str:
    return str(request.url_for("scim_root")).rstrip("/") + f"/{kind}/{rid}"


def user_resource(request: Request, user: DirUser) -> dict[str, Any]:
    resource = ScimUser(
        id=user.id,
        user_name=user.id,
        external_id=user.external_id,
        display_name=user.display_name or None,
        active=not user.disabled,
        groups=[
            GroupMembership(value=g, display=g, ref=None, type=None) for g in sorted(user.groups)
        ]
        or None,
        meta=Meta(resource_type="User", location=_location(request, "Users", user.id)),
    )
    return resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)


def group_resource(request: Request, group: DirGroup, members: bool = True) -> dict[str, Any]:
    resource = Group(
        id=group.name,
        display_name=group.display_name or group.name,
        external_id=group.external_id,
        members=[GroupMember(value=m, display=m, ref=None, type=None) for m in group.members]
        if members and group.members
        else None,
        meta=Meta(resource_type="Group", location=_location(request, "Groups", group.name)),
    )
    return resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)


# ---------------------------------------------------------------------- filtering
_CLAUSE = re.compile(r'^\s*([A-Za-z.:]+)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)


def parse_filter(text: str | None) -> list[tuple[str, str]]:
    """`attr eq "value"` clauses joined by `and` — what provisioning clients send."""
    if not text:
        return []
    clauses = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _CLAUSE.match(part)
        if match is None:
            raise ScimFail(
                400,
                f'unsupported filter {text!r}; use attribute eq "value" clauses joined by and'
                " (userName, externalId, displayName, id, members)",
                "invalidFilter",
            )
        clauses.append((match.group(1).lower(), match.group(2).replace('\\"', '"')))
    return clauses


def _user_value(user: DirUser, attr: str) -> list[str] | None:
    values: dict[str, list[str]] = {
        "username": [user.id.lower()],
        "id": [user.id.lower()],
        "externalid": [(user.external_id or "").lower()],
        "displayname": [user.display_name.lower()],
        "active": [str(not user.disabled).lower()],
    }
    return values.get(attr)


def _group_value(group: DirGroup, attr: str) -> list[str] | None:
    values: dict[str, list[str]] = {
        "displayname": [(group.display_name or group.name).lower()],
        "id": [group.name.lower()],
        "externalid": [(group.external_id or "").lower()],
        "members": [m.lower() for m in group.members],
        "members.value": [m.lower() for m in group.members],
    }
    return values.get(attr)


def _matches(values_of: Any, item: Any, clauses: list[tuple[str, str]]) -> bool:
    for attr, want in clauses:
        have = values_of(item, attr)
        if have is None:
            raise ScimFail(400, f"filtering on {attr!r} is not supported", "invalidFilter")
        if want.lower() not in have:
            return False
    return True


def list_response(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    try:
        start = max(1, int(request.query_params.get("startIndex", "1")))
        count = min(MAX_RESULTS, max(0, int(request.query_params.get("count", "100"))))
    except ValueError:
        raise ScimFail(400, "startIndex and count must be integers", "invalidValue") from None
    page = items[start - 1 : start - 1 + count]
    body = ListResponse[ScimUser | Group](
        total_results=len(items), start_index=start, items_per_page=len(page)
    ).model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    body["Resources"] = page
    return scim_json(body)


# ---------------------------------------------------------------------- discovery
@router.get("", name="scim_root")
async def scim_root(_: Provisioner) -> JSONResponse:
    return scim_json({"resources": ["Users", "Groups"]})


@router.get("/ServiceProviderConfig")
async def service_provider_config(_: Provisioner) -> JSONResponse:
    config = ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="SCIM bearer token",
                description="A token from `sovra directory scim-token create`",
            )
        ],
    )
    return scim_json(config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


@router.get("/ResourceTypes")
async def resource_types(request: Request, _: Provisioner) -> JSONResponse:
    types = [ResourceType.from_resource(ScimUser), ResourceType.from_resource(Group)]
    items = [t.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE) for t in types]
    return list_response(request, items)


@router.get("/Schemas")
async def schemas(request: Request, _: Provisioner) -> JSONResponse:
    found = [User.to_schema(), EnterpriseUser.to_schema(), Group.to_schema()]
    items = [s.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE) for s in found]
    return list_response(request, items)


# ---------------------------------------------------------------------- users
def _deprovision(st: AppState, user_id: str, remove: bool) -> None:
    """Disable or remove the user and revoke its keys and sessions, in this request."""
    if remove:
        st.ws.directory.remove_user(user_id, origin="scim")
    else:
        st.ws.directory.disable_user(user_id, origin="scim")
    st.accounts.revoke_user(user_id)


def _scim_user(directory: Directory, user_id: str) -> DirUser:
    user = directory.user(user_id)
    if user is None:
        raise ScimFail(404, f"no user {user_id!r}")
    return user


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ScimFail(400, f"active must be a boolean, not {value!r}", "invalidValue")


@router.get("/Users")
async def list_users(request: Request, st: State, _: Provisioner) -> JSONResponse:
    clauses = parse_filter(request.query_params.get("filter"))
    users = [u for u in st.ws.directory.users() if _matches(_user_value, u, clauses)]
    return list_response(request, [user_resource(request, u) for u in users])


@router.get("/Users/{user_id}")
async def get_user(request: Request, user_id: str, st: State, _: Provisioner) -> JSONResponse:
    return scim_json(user_resource(request, _scim_user(st.ws.directory, user_id)))


def _parse(model: Any, body: dict[str, Any], ctx: Context) -> Any:
    """The body as a scim2-models resource; a bad one is a 400 naming the first problem."""
    try:
        return model.model_validate(body, scim_ctx=ctx)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ScimFail(
            400, f"not a valid SCIM {model.__name__}: {where}: {first['msg']}", "invalidValue"
        ) from None


def _parse_user(body: dict[str, Any], ctx: Context) -> Any:
    return _parse(ScimUser, body, ctx)


def _apply_user(st: AppState, user_id: str, parsed: Any) -> DirUser:
    """Bring an existing user in line with a full resource (POST adoption, PUT)."""
    directory = st.ws.directory
    with directory_errors():
        user = directory.update_user(
            user_id,
            origin="scim",
            display_name=parsed.display_name or "",
            external_id=parsed.external_id,
        )
        if parsed.active is False and not user.disabled:
            _deprovision(st, user_id, remove=False)
        elif parsed.active is not False and user.disabled:
            directory.add_user(user_id, origin="scim")
    return _scim_user(directory, user_id)


@router.post("/Users")
async def create_user(request: Request, st: State, _: Provisioner) -> JSONResponse:
    parsed = _parse_user(await body_of(request), Context.RESOURCE_CREATION_REQUEST)
    directory = st.ws.directory
    user_id = parsed.user_name
    existing = directory.user(user_id)
    if existing is not None and existing.origin == "scim":
        raise ScimFail(409, f"user {user_id!r} already exists", "uniqueness")
    with directory_errors():
        directory.add_user(
            user_id, [], parsed.display_name or "", origin="scim", external_id=parsed.external_id
        )
    user = _apply_user(st, user_id, parsed)
    return scim_json(user_resource(request, user), 201)


@router.put("/Users/{user_id}")
async def replace_user(request: Request, user_id: str, st: State, _: Provisioner) -> JSONResponse:
    parsed = _parse_user(await body_of(request), Context.RESOURCE_REPLACEMENT_REQUEST)
    _scim_user(st.ws.directory, user_id)
    if parsed.user_name and parsed.user_name != user_id:
        raise ScimFail(400, "userName is sovra's user id and cannot change", "mutability")
    return scim_json(user_resource(request, _apply_user(st, user_id, parsed)))


def _operations(body: dict[str, Any]) -> list[dict[str, Any]]:
    ops = body.get("Operations")
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
        raise ScimFail(400, "a PatchOp needs an Operations list", "invalidSyntax")
    for op in ops:
        if str(op.get("op", "")).lower() not in ("add", "replace", "remove"):
            raise ScimFail(400, f"unknown PATCH op {op.get('op')!r}", "invalidSyntax")
    return ops


@router.patch("/Users/{user_id}")
async def patch_user(request: Request, user_id: str, st: State, _: Provisioner) -> Response:
    directory = st.ws.directory
    user = _scim_user(directory, user_id)
    changes: dict[str, Any] = {}
    for op in _operations(await body_of(request)):
        kind, path = str(op["op"]).lower(), op.get("path")
        value = op.get("value")
        if kind == "remove" and path:
            changes[str(path).lower()] = None
            continue
        items = value.items() if not path and isinstance(value, dict) else [(path, value)]
        for key, item in items:
            changes[str(key).lower()] = item
    with directory_errors():
        if "username" in changes and changes["username"] != user_id:
            raise ScimFail(400, "userName is sovra's user id and cannot change", "mutability")
        if "displayname" in changes or "externalid" in changes:
            directory.update_user(
                user_id,
                origin="scim",
                display_name=changes.get("displayname") or "",
                external_id=changes.get("externalid"),
            )
        if "active" in changes:
            active = _as_bool(changes["active"])
            if not active and not user.disabled:
                _deprovision(st, user_id, remove=False)
            elif active and user.disabled:
                directory.add_user(user_id, origin="scim")
    # Other attributes (emails, name.*, title, enterprise extension) are accepted and not kept:
    # sovra's directory holds only what the permission filter and the UI need.
    return scim_json(user_resource(request, _scim_user(directory, user_id)))


@router.delete("/Users/{user_id}")
async def delete_user(user_id: str, st: State, _: Provisioner) -> Response:
    _scim_user(st.ws.directory, user_id)
    with directory_errors():
        _deprovision(st, user_id, remove=True)
    return Response(status_code=204)


# ---------------------------------------------------------------------- groups
def _scim_group(directory: Directory, group_id: str) -> DirGroup:
    group = directory.group(group_id)
    if group is None:
        raise ScimFail(404, f"no group {group_id!r}")
    return group


def _member_ids(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        member = item.get("value") if isinstance(item, dict) else None
        if not isinstance(member, str):
            raise ScimFail(400, f"a member must be {{'value': user id}}, not {item!r}")
        out.append(member)
    return out


@router.get("/Groups")
async def list_groups(request: Request, st: State, _: Provisioner) -> JSONResponse:
    clauses = parse_filter(request.query_params.get("filter"))
    groups = [g for g in st.ws.directory.group_list() if _matches(_group_value, g, clauses)]
    members = "members" not in request.query_params.get("excludedAttributes", "")
    return list_response(request, [group_resource(request, g, members) for g in groups])


@router.get("/Groups/{group_id}")
async def get_group(request: Request, group_id: str, st: State, _: Provisioner) -> JSONResponse:
    members = "members" not in request.query_params.get("excludedAttributes", "")
    return scim_json(group_resource(request, _scim_group(st.ws.directory, group_id), members))


@router.post("/Groups")
async def create_group(request: Request, st: State, _: Provisioner) -> JSONResponse:
    body = await body_of(request)
    parsed = _parse(Group, body, Context.RESOURCE_CREATION_REQUEST)
    directory = st.ws.directory
    idp_name = parsed.display_name or ""
    with directory_errors():
        name = directory.mapping.group_name(idp_name)
        existing = directory.group(name)
        if existing is not None and (
            existing.origin == "scim" or idp_name not in directory.mapping.group_map
        ):
            raise DirectoryConflict(
                f"group {name!r} already exists (origin {existing.origin}); an identity-provider"
                " group joins an existing sovra group only when sovra.toml maps it:"
                f' [directory.group_map] "{idp_name}" = "{name}"'
            )
        directory.add_group(
            name, origin="scim", external_id=parsed.external_id, display_name=idp_name
        )
        members = [m.value for m in parsed.members or [] if m.value]
        directory.set_members(name, members, origin="scim")
    return scim_json(group_resource(request, _scim_group(directory, name)), 201)


@router.put("/Groups/{group_id}")
async def replace_group(request: Request, group_id: str, st: State, _: Provisioner) -> JSONResponse:
    body = await body_of(request)
    directory = st.ws.directory
    group = _scim_group(directory, group_id)
    with directory_errors():
        _check_rename(directory, group, body.get("displayName"))
        directory.set_members(group_id, _member_ids(body.get("members") or []), origin="scim")
    return scim_json(group_resource(request, _scim_group(directory, group_id)))


def _check_rename(directory: Directory, group: DirGroup, display: Any) -> None:
    if display is None or display == (group.display_name or group.name):
        return
    if directory.mapping.group_name(str(display)) != group.name:
        raise ScimFail(
            400,
            f"renaming group {group.name!r} to {display!r} would change its sovra name (which"
            " access rules use); map the new name to the old one in [directory.group_map]",
            "mutability",
        )


_MEMBER_PATH = re.compile(r'^members\[value eq "([^"]+)"\]$', re.IGNORECASE)


@router.patch("/Groups/{group_id}")
async def patch_group(request: Request, group_id: str, st: State, _: Provisioner) -> Response:
    directory = st.ws.directory
    group = _scim_group(directory, group_id)
    members = set(group.members)
    for op in _operations(await body_of(request)):
        kind, path, value = str(op["op"]).lower(), str(op.get("path") or ""), op.get("value")
        targeted = _MEMBER_PATH.match(path)
        if targeted and kind == "remove":
            members.discard(targeted.group(1))
        elif path.lower() == "members":
            ids = _member_ids(value) if value is not None else []
            if kind == "add":
                members |= set(ids)
            elif kind == "remove":
                members = members - set(ids) if value is not None else set()
            else:
                members = set(ids)
        elif path.lower() == "displayname" or (not path and isinstance(value, dict)):
            display = value.get("displayName") if isinstance(value, dict) else value
            if isinstance(value, dict) and "members" in value:
                members = set(_member_ids(value["members"]))
            with directory_errors():
                _check_rename(directory, group, display)
        elif path.lower() not in ("externalid",):
            raise ScimFail(400, f"unsupported PATCH path {path!r} on a Group", "invalidPath")
    with directory_errors():
        directory.set_members(group_id, members, origin="scim")
    return scim_json(group_resource(request, _scim_group(directory, group_id)))


@router.delete("/Groups/{group_id}")
async def delete_group(group_id: str, st: State, _: Provisioner) -> Response:
    group = _scim_group(st.ws.directory, group_id)
    if group.origin != "scim":
        raise ScimFail(409, f"group {group_id!r} is not provisioned by SCIM ({group.origin})")
    with directory_errors():
        st.ws.directory.remove_group(group_id, origin="scim")
    return Response(status_code=204)
