"""Command-line entry points of the server, mounted by the root CLI:

app.command("serve")(server_cli.serve_command)
user_app.command("set-password")(server_cli.set_password_command)
app.add_typer(server_cli.apikey_app, name="apikey")
"""

from __future__ import annotations

import getpass
import os
import time
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from sovra.cli.kit import AsOpt, JsonOpt, emit_json, fail, out, state
from sovra.config import ConfigError, find_config
from sovra.directory import DirectoryError
from sovra.server.accounts import DEFAULT_KEY_SCOPES, SCOPES, AccountError, AccountStore
from sovra.workspace import directory_for

apikey_app = typer.Typer(help="API keys for services: create, list, revoke.", no_args_is_help=True)

PASSWORD_ENV = "SOVRA_PASSWORD"


def _known_user(ctx: typer.Context, user_id: str) -> None:
    try:
        directory_for(state(ctx).config).principal(user_id)
    except DirectoryError as exc:
        fail(str(exc))


def serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8750).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Server processes, e.g. one per core (default 1; [server] workers)."),
    ] = None,
    demo_logins: Annotated[
        bool,
        typer.Option(
            "--demo-logins",
            help="Give demo users without a password the password '<user>-demo' (demo only).",
        ),
    ] = False,
) -> None:
    """Run the web server: REST /api/v1, OpenAI-compatible /v1, /metrics, /healthz."""
    import logging

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from sovra.server.app import WORKER_CONFIG_ENV, create_app
    from sovra.server.listener import WorkerListener
    from sovra.server.settings import ENV_PREFIX, ServerSettings

    try:
        config = state(ctx).config
    except ConfigError as exc:
        fail(str(exc))
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if workers is not None:
        overrides["workers"] = workers
    try:
        settings = ServerSettings.from_config(config, **overrides)
    except ValidationError as exc:
        fail(
            "server settings ([server] in sovra.toml or SOVRA_SERVER_* variables): "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        )
    if demo_logins:
        accounts = AccountStore.for_config(config)
        try:
            for user in directory_for(config).users():
                demo = f"{user.id}-demo"
                if not accounts.has_password(user.id):
                    accounts.set_password(user.id, demo)
                if accounts.check_password(user.id, demo):
                    out.print(f"demo login: {user.id} / {demo}", highlight=False)
        finally:
            accounts.close()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    n = settings.workers
    out.print(
        f"sovra serving on http://{settings.host}:{settings.port}/"
        + (f" with {n} worker processes" if n > 1 else ""),
        highlight=False,
    )
    # access_log off: uvicorn would log query strings; the app logs route templates only.
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="info",
        proxy_headers=False,
    )
    if n == 1:
        uvicorn.run(create_app(config, settings, freeze_heap=True), **options)
        return
    # Each worker builds its own app from the same file and settings (uvicorn spawns them, and
    # each listens on the port itself); they share the home's databases as replicas do,
    # and open the embedded index read-only, side by side.
    found = find_config(state(ctx).config_path)
    if found is not None:
        os.environ[WORKER_CONFIG_ENV] = str(found.resolve())
    for name, value in overrides.items():
        os.environ[ENV_PREFIX + name.upper()] = str(value)
    # numpy's OpenBLAS helper thread spin-waits after each product: harmless beside one
    # GIL-bound process, it takes a core from the other workers here (an operator's own
    # setting wins; an empty one counts as unset, as OpenBLAS itself reads it).
    if not os.environ.get("OPENBLAS_NUM_THREADS"):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    config_ = uvicorn.Config("sovra.server.app:worker_app", factory=True, workers=n, **options)
    # A clear "address in use" before any worker starts (uvicorn's own message and exit);
    # then each worker binds a socket of its own on that port (server/listener.py says why;
    # port 0 becomes the one port the probe was given, not one per worker).
    probe = config_.bind_socket()
    bound_port = int(probe.getsockname()[1])
    probe.close()
    listener = WorkerListener(settings.host, bound_port, config_.backlog)
    try:
        Multiprocess(config_, sockets=[listener]).run()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


def mcp_command(
    ctx: typer.Context,
    as_user: AsOpt,
) -> None:
    """Serve the MCP tools (search, ask, fetch_document) on stdio as AS_USER."""
    from sovra.server.mcp_server import build_mcp, fixed_user
    from sovra.server.slots import ModelSlots
    from sovra.workspace import Workspace

    try:
        config = state(ctx).config
    except ConfigError as exc:
        fail(str(exc))
    ws = Workspace.open(config)
    try:
        ws.principal(as_user)  # unknown user → one clear line before serving
    except DirectoryError as exc:
        ws.close()
        fail(str(exc))
    slots = ModelSlots(ws)
    slots.warm()
    try:
        build_mcp(slots, fixed_user(lambda: ws.principal(as_user))).run("stdio")
    finally:
        ws.close()


def set_password_command(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="A user of the directory.")],
) -> None:
    """Set a local user's web/API login password (read from $SOVRA_PASSWORD or a prompt)."""
    _known_user(ctx, user_id)
    password = os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password for {user_id}: ")
    accounts = AccountStore.for_config(state(ctx).config)
    try:
        accounts.set_password(user_id, password)
    except AccountError as exc:
        fail(str(exc))
    finally:
        accounts.close()
    out.print(f"password set for {user_id}; their other sessions are ended", highlight=False)


@apikey_app.command("create")
def apikey_create(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user the key acts as.")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "api",
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help=f"Repeatable; one of {', '.join(SCOPES)}."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an API key; it is shown once, only its hash is kept."""
    _known_user(ctx, user_id)
    accounts = AccountStore.for_config(state(ctx).config)
    try:
        secret, key = accounts.create_key(user_id, name, scope or DEFAULT_KEY_SCOPES)
    except AccountError as exc:
        fail(str(exc))
    finally:
        accounts.close()
    if json_out:
        emit_json({**key.to_dict(), "key": secret})
        return
    out.print(secret, highlight=False, markup=False)
    out.print(
        f"[dim]key {key.id} for {user_id}, scopes {' '.join(key.scopes)}; "
        "store it now, it is not shown again[/]",
        highlight=False,
    )


@apikey_app.command("list")
def apikey_list(
    ctx: typer.Context,
    user_id: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List API keys (never the keys themselves)."""
    accounts = AccountStore.for_config(state(ctx).config)
    try:
        keys = accounts.keys(user_id)
    finally:
        accounts.close()
    if json_out:
        emit_json([k.to_dict() for k in keys])
        return

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"

    for k in keys:
        status = "revoked" if k.revoked_at else "active"
        out.print(
            f"{k.id}  {k.user_id:<12} {k.name:<16} {' '.join(k.scopes):<28} {status:<8} "
            f"created {when(k.created_at)}  last used {when(k.last_used_at)}",
            highlight=False,
            markup=False,
        )


@apikey_app.command("revoke")
def apikey_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key id shown by `sovra apikey list`.")],
    json_out: JsonOpt = False,
) -> None:
    """Revoke an API key; it stops working on its next use."""
    accounts = AccountStore.for_config(state(ctx).config)
    try:
        key = accounts.revoke_key(key_id)
    except AccountError as exc:
        fail(str(exc))
    finally:
        accounts.close()
    if json_out:
        emit_json(key.to_dict())
        return
    out.print(f"revoked {key.id} ({key.user_id}, {key.name})", highlight=False)
