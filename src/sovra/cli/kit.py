"""Helpers shared by every `sovra` sub-command: config access, JSON output, clean failures, progress."""

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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sovra.config import Config, load_config

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
