"""`sovra init`, `sovra user …` and `sovra group …`: the data directory and its local directory of users and groups."""

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


def _revoke_credentials(ctx: typer.Context, user_id: str, what: str, json_out: bool) -> None:
    from sovra.server.accounts import AccountStore

    accounts = AccountStore.in_home(state(ctx).config.home)
    try:
        keys, sessions = accounts.revoke_user(user_id)
    finally:
        accounts.close()
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
