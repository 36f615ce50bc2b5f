"""The `sovra` command line: `sovra <noun> <verb>`, every command with `--json` for scripts.

This module only assembles the command groups; each family of commands lives in its own module
of this package, and the shared options and output helpers in `sovra.cli.kit`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from sovra import __version__
from sovra.cli import (
    audit,
    directory,
    doctor,
    endpoints,
    evals,
    flows,
    index,
    inventory,
    models,
    monitor,
    policy,
    questions,
    reports,
    serve,
    sources,
)
from sovra.cli.kit import CliState, SovraGroup, console, exit_code, out
from sovra.errors import SovraError

app = typer.Typer(
    cls=SovraGroup,
    name="sovra",
    help="Sovereign, self-hosted AI: governed search over your own data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("init")(directory.init_command)
app.command("search")(questions.search_command)
app.command("ask")(questions.ask_command)
app.add_typer(directory.user_app, name="user")
app.add_typer(directory.group_app, name="group")
app.add_typer(directory.directory_app, name="directory")
app.add_typer(sources.source_app, name="source")
app.add_typer(evals.eval_app, name="eval")
app.add_typer(audit.app, name="audit")
app.command("erase", help="Erase a data subject from every store of the data directory.")(
    audit.erase_command
)
app.add_typer(models.app, name="model")
app.add_typer(policy.policy_app, name="policy")
app.add_typer(endpoints.endpoint_app, name="endpoint")
app.command("doctor")(doctor.doctor_command)
app.add_typer(reports.report_app, name="report")
app.command("serve")(serve.serve_command)
app.command("mcp")(serve.mcp_command)
directory.user_app.command("set-password")(serve.set_password_command)
app.add_typer(serve.apikey_app, name="apikey")
app.add_typer(flows.flow_app, name="flow")
app.add_typer(inventory.inventory_app, name="inventory")
app.add_typer(monitor.monitor_app, name="monitor")
app.add_typer(index.index_app, name="index")


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="sovra.toml (default: ./sovra.toml).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    ctx.obj = CliState(config_path=config, debug=debug)


@app.command()
def version() -> None:
    """Print the sovra version."""
    out.print(__version__)


def main() -> None:
    """Entry point: a SovraError becomes one clear line and its kind's exit code (cli.kit), not
    a traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    debug = "--debug" in sys.argv
    try:
        result = app(standalone_mode=False)
    except SovraError as exc:  # SovraGroup maps those raised in commands; this, the rest
        if debug:
            raise
        console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(exit_code(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the rest
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {exc} (run with --debug for details)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    if isinstance(result, int) and result:
        sys.exit(result)
