"""Helpers shared by every `sovra` sub-command: config access, JSON output, clean failures, progress.

Exit codes (the one place that maps `sovra.errors` kinds to them; see `SovraGroup`):

    0  success
    1  the command failed (a check did not pass, or it reported the failure itself)
    2  the user's mistake: Invalid, NotFound or Conflict (bad input, unknown name, wrong state)
    3  Forbidden: the caller may not do this
    4  Unavailable: a dependency (database, model endpoint, source) is down or refused
  130  interrupted
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer._click.core import Context as ClickContext  # the click typer vendors and subclasses
from typer.core import TyperGroup

from sovra.config import Config, load_config
from sovra.errors import Conflict, Forbidden, Invalid, NotFound, SovraError, Unavailable, kind_of

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
AsOpt = Annotated[str, typer.Option("--as", help="Act as this user of the directory.")]

console = Console(stderr=True)
out = Console(soft_wrap=True)


@dataclass
class CliState:
    """Carried in `typer.Context.obj` from the root callback to every command."""

    config_path: Path | None = None
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit: the CLI's answer to a user mistake."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


EXIT_CODES: dict[type[SovraError], int] = {
    SovraError: 2,
    Invalid: 2,
    NotFound: 2,
    Conflict: 2,
    Forbidden: 3,
    Unavailable: 4,
}


def exit_code(exc: SovraError) -> int:
    """The exit code for an error, by its kind (see the module docstring)."""
    return EXIT_CODES[kind_of(exc)]


class SovraGroup(TyperGroup):
    """The root command group: a SovraError from any command becomes one line and its exit
    code, not a traceback (`--debug` shows the traceback instead)."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except SovraError as exc:
            if isinstance(ctx.obj, CliState) and ctx.obj.debug:
                raise
            # Error messages are plain text; they name config tables like `[directory.ldap]`.
            fail(escape(exc.message), exit_code(exc))


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


@contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr (hidden when not a terminal or when `enabled` is False).

    Yields a callable `advance(n=1, description=None)`.
    """
    show = enabled and console.is_terminal
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(
            n: int = 1,
            description: str | None = None,
            total: int | None = None,
            completed: int | None = None,
        ) -> None:
            if completed is not None:
                progress.update(task, completed=completed, description=description, total=total)
            else:
                progress.update(task, advance=n, description=description, total=total)

        yield advance
