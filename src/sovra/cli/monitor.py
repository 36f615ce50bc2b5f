"""`sovra monitor check|show`: drift and quality alerts over the configured windows.

`check` is for cron: it records alerts (audit event, governance banner, optional webhook) and
exits 1 when any fire, 0 when all is quiet. `show` prints the current figures without
recording anything (or, with `--last`, the state the last check left).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sovra.cli.kit import JsonOpt, emit_json, out, state

monitor_app = typer.Typer(
    help="Drift and quality monitoring with [govern] thresholds.", no_args_is_help=True
)

AtOpt = Annotated[
    datetime | None,
    typer.Option(
        "--at",
        help="Check as of this UTC time (default now).",
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"],
    ),
]


def _print(st: object) -> None:
    from sovra.governance.monitor import MonitorState

    assert isinstance(st, MonitorState)
    out.print(f"reference window  {st.reference}")
    out.print(f"current window    {st.current}")
    table = Table("metric", "current", "reference", show_edge=False)
    for name, value in sorted(st.values.items()):
        ref = st.reference_values.get(name)
        table.add_row(escape(name), f"{value:.4g}", "" if ref is None else f"{ref:.4g}")
    out.print(table)
    for note in st.notes:
        out.print(f"[dim]note:[/] {escape(note)}", highlight=False)
    if not st.alerts:
        out.print("[green]no alerts[/]")
    for a in st.alerts:
        out.print(
            f"[bold red]ALERT[/] {escape(a.metric)}: {escape(a.message)}  ({escape(a.window)})",
            highlight=False,
        )
    if st.webhook:
        out.print(f"webhook: {escape(st.webhook)}", highlight=False)


def _run(ctx: typer.Context, at: datetime | None, *, record: bool, json_out: bool) -> int:
    from datetime import UTC

    from sovra.governance.monitor import check
    from sovra.workspace import Workspace

    cfg = state(ctx).config
    ws = Workspace.open(cfg)
    try:
        now = at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at
        st = check(ws, cfg, now, record=record)
    finally:
        ws.close()
    if json_out:
        emit_json(st.to_dict())
    else:
        _print(st)
    return 1 if st.alerts else 0


@monitor_app.command("check")
def monitor_check(ctx: typer.Context, at: AtOpt = None, json_out: JsonOpt = False) -> None:
    """Compute the figures, record any alerts, exit 1 when alerts fire (for cron)."""
    code = _run(ctx, at, record=True, json_out=json_out)
    if code:
        raise typer.Exit(code)


@monitor_app.command("show")
def monitor_show(
    ctx: typer.Context,
    at: AtOpt = None,
    last: Annotated[
        bool, typer.Option("--last", help="The state the last `monitor check` recorded.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Print the current figures and alerts (records nothing)."""
    if last:
        from sovra.cli.kit import fail
        from sovra.governance.monitor import latest_state
        from sovra.workspace import Workspace

        ws = Workspace.open(state(ctx).config)
        try:
            st = latest_state(ws)
        finally:
            ws.close()
        if st is None:
            fail("no monitor check recorded yet; run `sovra monitor check`")
        if json_out:
            emit_json(st.to_dict())
        else:
            _print(st)
        return
    _run(ctx, at, record=False, json_out=json_out)
