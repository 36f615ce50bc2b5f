"""`sovra inventory list|show|set`: the register of AI systems in use, and its gaps."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sovra.cli.kit import JsonOpt, emit_json, out
from sovra.cli.policy import _config

inventory_app = typer.Typer(
    help="The AI inventory: models, endpoints, the assistant and workflows, with their gaps.",
    no_args_is_help=True,
)


def _line(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


@inventory_app.command("list")
def list_command(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Every AI system in use: kind, risk class, owners, latest evaluation and gaps."""
    from rich.table import Table

    from sovra.governance.inventory import build_inventory
    from sovra.workspace import Workspace

    ws = Workspace.open(_config(ctx))
    try:
        systems = [s.to_dict() for s in build_inventory(ws)]
    finally:
        ws.close()
    if json:
        emit_json(systems)
        return
    table = Table("system", "risk class", "owners", "latest evaluation", "gaps")
    for s in systems:
        evals = ", ".join(f"{e['suite']} {e['started_at'][:10]}" for e in s["evaluations"])
        table.add_row(
            s["id"],
            s["risk_class"] or "-",
            _line(s["owners"]) or "-",
            evals or "-",
            str(len(s["gaps"])) if s["gaps"] else "none",
        )
    out.print(table)
    total = sum(len(s["gaps"]) for s in systems)
    out.print(f"{len(systems)} systems, {total} gaps (`sovra inventory show ID` lists them)")


def _print_system(s: dict[str, Any]) -> None:
    out.print(f"[bold]{s['id']}[/] ({s['kind']})")
    for key, value in s["facts"].items():
        if value not in (None, "", []):
            out.print(f"  {key}: {_line(value)}", highlight=False)
    for key in ("purpose", "risk_class", "owners", "origin", "notes", "updated_at"):
        if s.get(key):
            out.print(f"  {key}: {_line(s[key])}", highlight=False)
    for e in s["evaluations"]:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(e["metrics"].items()))
        out.print(f"  evaluation {e['suite']} ({e['started_at']}, run {e['run_id']}): {metrics}")
    for measure in s["oversight"]:
        out.print(f"  oversight: {measure}", highlight=False)
    for gap in s["gaps"]:
        out.print(f"  [yellow]gap[/]: {gap}", highlight=False)


@inventory_app.command("show")
def show_command(
    ctx: typer.Context,
    system: Annotated[str, typer.Argument(help="System id, e.g. workflow:triage.")],
    json: JsonOpt = False,
) -> None:
    """One system: every fact, the operator's fields, evaluations, oversight and gaps."""
    from sovra.governance.inventory import build_inventory, find_system
    from sovra.workspace import Workspace

    ws = Workspace.open(_config(ctx))
    try:
        found = find_system(build_inventory(ws), system).to_dict()
    finally:
        ws.close()
    if json:
        emit_json(found)
    else:
        _print_system(found)


@inventory_app.command("set")
def set_command(
    ctx: typer.Context,
    system: Annotated[str, typer.Argument(help="System id, e.g. workflow:triage.")],
    purpose: Annotated[str | None, typer.Option(help="Intended purpose, in plain words.")] = None,
    risk_class: Annotated[
        str | None,
        typer.Option(
            "--risk-class", help="AI Act risk class: unacceptable, high, limited, minimal."
        ),
    ] = None,
    owner: Annotated[
        list[str] | None, typer.Option("--owner", help="An owner (repeat for several).")
    ] = None,
    origin: Annotated[str | None, typer.Option(help="Where the model comes from.")] = None,
    licence: Annotated[
        str | None, typer.Option(help="Licence, when the registry lacks it.")
    ] = None,
    notes: Annotated[str | None, typer.Option(help="Free notes for the register.")] = None,
    eval_suite: Annotated[
        list[str] | None,
        typer.Option("--eval-suite", help="Evaluation suite that measures it (repeat)."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """State what only the operator knows about a system (logged in the audit log)."""
    from sovra.governance.inventory import set_fields
    from sovra.workspace import Workspace

    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "purpose": purpose,
            "risk_class": risk_class,
            "owners": tuple(owner) if owner else None,
            "origin": origin,
            "licence": licence,
            "notes": notes,
            "eval_suites": tuple(eval_suite) if eval_suite else None,
        }.items()
        if v is not None
    }
    if not changes:
        from sovra.cli.kit import fail

        fail("nothing to set; pass --purpose, --risk-class, --owner, --origin, --licence, --notes")
    ws = Workspace.open(_config(ctx))
    try:
        updated = set_fields(ws, system, changes).to_dict()
    finally:
        ws.close()
    if json:
        emit_json(updated)
    else:
        _print_system(updated)
