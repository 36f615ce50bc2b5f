"""`sovra init`, `sovra user …`, `sovra group …` and `sovra directory …`: the data directory,
its directory of users and groups, and the identity-provider feeds into it."""

from __future__ import annotations

from typing import Annotated

import typer

from sovra.cli.kit import JsonOpt, emit_json, out, state
from sovra.directory import User

user_app = typer.Typer(help="Users of the local directory.", no_args_is_help=True)
group_app = typer.Typer(help="Groups of the local directory.", no_args_is_help=True)


DEMO_USERS: dict[str, list[str]] = {
    "alice": ["staff", "sre"],
    "bob": ["staff", "it-support"],
    "carol": ["staff"],
    "dana": ["staff", "people"],
    "erin": ["staff", "it-support"],
    "root": ["staff", "admins"],
}


def init_command(
    ctx: typer.Context,
    demo_directory: Annotated[
        bool, typer.Option("--demo-directory", help="Add the demo users alice, bob, carol, dana.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create the data directory (and the demo users)."""
    from sovra.workspace import Workspace

    ws = Workspace.open(state(ctx).config)
    added = []
    if demo_directory:
        for user, groups in DEMO_USERS.items():
            ws.directory.add_user(user, groups)
            added.append(user)
    if json_out:
        emit_json({"home": str(ws.home), "users_added": added})
    else:
        out.print(f"data directory: {ws.home}")
        if added:
            out.print(
                "demo users: " + ", ".join(f"{u} ({', '.join(DEMO_USERS[u])})" for u in added)
            )
    ws.close()


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    user_id: str,
    group: Annotated[list[str] | None, typer.Option("--group", "-g", help="Repeatable.")] = None,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Add a user (or add groups to an existing one)."""
    from sovra.workspace import directory_for

    user = directory_for(state(ctx).config).add_user(user_id, group or [], name)
    _show_user(user, json_out)


def _show_user(user: User, json_out: bool) -> None:
    if json_out:
        emit_json({"id": user.id, "groups": sorted(user.groups)})
    else:
        out.print(f"user {user.id}: groups {', '.join(sorted(user.groups)) or '(none)'}")


@user_app.command("list")
def user_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List users and their groups."""
    from sovra.workspace import directory_for

    users = directory_for(state(ctx).config).users()
    if json_out:
        emit_json([{"id": u.id, "groups": sorted(u.groups)} for u in users])
        return
    for u in users:
        out.print(f"{u.id}\t{', '.join(sorted(u.groups))}")


@user_app.command("remove")
def user_remove(ctx: typer.Context, user_id: str, json_out: JsonOpt = False) -> None:
    """Remove a user; their access ends on the next query, their API keys are revoked and
    their sessions ended (adding the id again does not bring them back)."""
    from sovra.workspace import directory_for

    directory_for(state(ctx).config).remove_user(user_id)
    _revoke_credentials(ctx, user_id, "removed", json_out)


@user_app.command("disable")
def user_disable(ctx: typer.Context, user_id: str, json_out: JsonOpt = False) -> None:
    """Disable a user (kept in the directory); revokes their API keys and ends their sessions.
    `sovra user add` enables them again, with new credentials only."""
    from sovra.workspace import directory_for

    directory_for(state(ctx).config).disable_user(user_id)
    _revoke_credentials(ctx, user_id, "disabled", json_out)


def _revoke_credentials(
    ctx: typer.Context, user_id: str, what: str, json_out: bool, *, quiet: bool = False
) -> None:
    from sovra.server.accounts import AccountStore

    accounts = AccountStore.for_config(state(ctx).config)
    try:
        keys, sessions = accounts.revoke_user(user_id)
    finally:
        accounts.close()
    if quiet:
        return
    if json_out:
        emit_json({what: user_id, "keys_revoked": keys, "sessions_ended": sessions})
    else:
        out.print(f"{what} {user_id}: {keys} API key(s) revoked, {sessions} session(s) ended")


@group_app.command("add")
def group_add(
    ctx: typer.Context,
    name: str,
    member: Annotated[list[str] | None, typer.Option("--member", "-m")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Declare a group, optionally adding existing users to it."""
    from sovra.workspace import directory_for

    directory = directory_for(state(ctx).config)
    directory.add_group(name)
    for user in member or []:
        directory.set_membership(user, name, True)
    if json_out:
        emit_json({"group": name, "members": directory.groups().get(name, [])})
    else:
        out.print(f"group {name}: {', '.join(directory.groups().get(name, [])) or '(no members)'}")


@group_app.command("remove-member")
def group_remove_member(
    ctx: typer.Context, name: str, user_id: str, json_out: JsonOpt = False
) -> None:
    """Take a user out of a group; effective on the next query."""
    from sovra.workspace import directory_for

    user = directory_for(state(ctx).config).set_membership(user_id, name, False)
    _show_user(user, json_out)


@group_app.command("list")
def group_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List groups and their members."""
    from sovra.workspace import directory_for

    groups = directory_for(state(ctx).config).groups()
    if json_out:
        emit_json(groups)
        return
    for g, members in groups.items():
        out.print(f"{g}\t{', '.join(members)}")


directory_app = typer.Typer(
    help="The directory's identity-provider feeds (LDAP sync, SCIM tokens) and its history.",
    no_args_is_help=True,
)
scim_token_app = typer.Typer(help="Bearer tokens for SCIM provisioning.", no_args_is_help=True)
directory_app.add_typer(scim_token_app, name="scim-token")


@directory_app.command("sync")
def directory_sync(
    ctx: typer.Context,
    every: Annotated[
        bool,
        typer.Option("--every", help="Keep syncing every [directory.ldap] interval_s seconds."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Pull users and groups from LDAP / Active Directory ([directory.ldap] in sovra.toml).
    Users disabled or removed there lose their API keys and sessions at once."""
    import time

    from sovra.directory.ldap import sync_ldap
    from sovra.workspace import directory_for, ldap_settings

    config = state(ctx).config
    settings = ldap_settings(config)
    while True:
        with out.status(f"syncing the directory from {settings.url}…"):
            report = sync_ldap(directory_for(config), settings)
        for user_id in report.disabled + report.removed:
            _revoke_credentials(ctx, user_id, "deprovisioned", json_out=False, quiet=True)
        if json_out:
            emit_json(report.to_dict())
        else:
            out.print(
                f"{report.users} user(s), {report.groups} group(s): {len(report.added)} added,"
                f" {len(report.disabled)} disabled, {len(report.removed)} removed,"
                f" {report.memberships_added} membership(s) added,"
                f" {report.memberships_removed} removed"
            )
        if not every:
            return
        assert config.directory.ldap is not None
        time.sleep(config.directory.ldap.interval_s)


@directory_app.command("history")
def directory_history(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's changes.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The latest directory changes (each is also an audit event)."""
    import datetime as dt

    from sovra.workspace import directory_for

    changes = directory_for(state(ctx).config).history(limit, user)
    if json_out:
        emit_json([vars(c) for c in changes])
        return
    for c in changes:
        when = dt.datetime.fromtimestamp(c.at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        out.print(f"{c.seq}\t{when}\t{c.origin}\t{c.action}\t{c.user_id or ''}\t{c.group or ''}")


@scim_token_app.command("create")
def scim_token_create(ctx: typer.Context, name: str, json_out: JsonOpt = False) -> None:
    """Create a SCIM bearer token for an identity provider (shown once; stored hashed)."""
    from sovra.workspace import directory_for

    token, token_id = directory_for(state(ctx).config).create_scim_token(name)
    if json_out:
        emit_json({"id": token_id, "name": name, "token": token})
    else:
        out.print(f"SCIM token {token_id} ({name}) — shown once, paste it into the IdP:")
        out.print(token, soft_wrap=True)


@scim_token_app.command("list")
def scim_token_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List SCIM tokens (never their secrets)."""
    from sovra.workspace import directory_for

    tokens = directory_for(state(ctx).config).scim_tokens()
    if json_out:
        emit_json(tokens)
        return
    for t in tokens:
        out.print(f"{t['id']}\t{t['name']}\t{'revoked' if t['revoked'] else 'live'}")


@scim_token_app.command("revoke")
def scim_token_revoke(ctx: typer.Context, token_id: str, json_out: JsonOpt = False) -> None:
    """Revoke a SCIM token; the identity provider's next request is refused."""
    from sovra.workspace import directory_for

    directory_for(state(ctx).config).revoke_scim_token(token_id)
    if json_out:
        emit_json({"revoked": token_id})
    else:
        out.print(f"SCIM token {token_id} revoked")
