"""`sovra policy check|test`: explain one Cedar decision, or run a decision table.

The commands read the same policies, endpoints and directory as the running system, so
`policy check` answers exactly what a request would get, with the rule that decided it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from sovra.cli.kit import JsonOpt, emit_json, fail, out, state
from sovra.config import Config, ConfigError
from sovra.domain import Principal
from sovra.policy.engine import ACTIONS, DEFAULT_DENY, PolicyEngine, PolicyError
from sovra.policy.table import (
    TableError,
    WorkflowSpec,
    build_request,
    config_resolver,
    load_table,
    run_table,
)

policy_app = typer.Typer(
    help="Cedar policies: explain a decision, run a decision table.", no_args_is_help=True
)


def _fail(message: str) -> NoReturn:
    """clikit.fail with the message escaped: Cedar and TOML errors contain [brackets]."""
    fail(escape(message))


def _config(ctx: typer.Context) -> Config:
    try:
        return state(ctx).config
    except ConfigError as exc:
        _fail(str(exc))


def _engine(config: Config) -> PolicyEngine:
    try:
        return PolicyEngine.for_home(config.home)
    except PolicyError as exc:
        _fail(f"policies in {config.home / 'policies'}: {exc}")


def _principal(config: Config, user: str, groups: list[str] | None) -> Principal:
    if groups:  # an ad-hoc principal: lets an officer ask "what if" without a directory entry
        return Principal(user, frozenset(groups))
    from sovra.directory import Directory, DirectoryError

    try:
        return Directory.in_home(config.home).principal(user)
    except DirectoryError as exc:
        _fail(str(exc))


@policy_app.command("check")
def check(
    ctx: typer.Context,
    as_user: Annotated[str, typer.Option("--as", help="The user (from the directory).")],
    action: Annotated[str, typer.Option("--action", help=f"One of: {', '.join(ACTIONS)}.")],
    resource: Annotated[
        str,
        typer.Option(
            "--resource",
            help="workspace, source:<name>, document:<source>:<id>, endpoint:<name>,"
            " workflow:<name>",
        ),
    ] = "workspace",
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="Act as an ad-hoc user in these groups (repeatable)."),
    ] = None,
    workflow_access: Annotated[
        list[str] | None,
        typer.Option("--workflow-access", help="Access list of the workflow resource."),
    ] = None,
    classification: Annotated[
        str, typer.Option(help="send_to_endpoint: strictest classification of the data.")
    ] = "internal",
    residency: Annotated[
        list[str] | None, typer.Option(help="send_to_endpoint: residency of the data.")
    ] = None,
    pii: Annotated[bool, typer.Option("--pii", help="send_to_endpoint: data holds PII.")] = False,
    category: Annotated[
        list[str] | None, typer.Option(help="send_to_endpoint: data category, e.g. hr.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Explain one decision: allow or deny, which policy decided it, and what would allow it."""
    config = _config(ctx)
    engine = _engine(config)
    principal = _principal(config, as_user, group)
    kind, _, name = resource.partition(":")
    try:
        resolver = config_resolver(config, name if kind == "document" else None)
        if kind == "workflow":
            resolver.workflows[name] = WorkflowSpec(access=tuple(workflow_access or ()))
        request = build_request(
            resolver,
            principal,
            action,
            resource,
            classification=classification,
            residency=tuple(residency or ()),
            pii=pii,
            categories=tuple(category or ()),
        )
        verdict = engine.decide(request)
    except PolicyError as exc:
        _fail(str(exc))
    if json_out:
        emit_json(
            {
                "principal": principal.id,
                "groups": sorted(principal.groups),
                "action": action,
                "resource": resource,
                "decision": verdict.decision,
                "policy_ids": list(verdict.policy_ids),
                "policy_version": verdict.version,
                "advice": list(verdict.advice),
                "errors": list(verdict.errors),
            }
        )
    else:
        colour = "green" if verdict.allowed else "red"
        out.print(
            f"[bold {colour}]{verdict.decision.upper()}[/] {principal.id} {action} {resource}"
            f"  (policies: {', '.join(verdict.policy_ids)}; set {verdict.version})"
        )
        pset = engine.policy_set
        for pid in verdict.policy_ids:
            info = pset.by_id(pid)
            if info is not None:
                out.print(f"  {info.effect} {pid}  ({info.file}:{info.line})")
        if DEFAULT_DENY in verdict.policy_ids:
            out.print("  no policy permits this request (default deny)")
        for line in verdict.advice:
            out.print(f"  to allow it: {line}")
        for err in verdict.errors:
            out.print(f"  policy error: {err}")
    if not verdict.allowed:
        raise typer.Exit(2)


@policy_app.command("test")
def test(
    ctx: typer.Context,
    table: Annotated[Path, typer.Argument(help="YAML decision table.")],
    policies: Annotated[
        Path | None,
        typer.Option(help="Folder of *.cedar files (default: <home>/policies, else shipped)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a table of expected decisions against the policies; exit 1 if any differ."""
    try:
        engine = (
            PolicyEngine.from_folder(policies) if policies is not None else _engine(_config(ctx))
        )
        results = run_table(engine, load_table(table))
    except (PolicyError, TableError) as exc:
        _fail(str(exc))
    failed = [r for r in results if not r.passed]
    if json_out:
        emit_json(
            {
                "policy_version": engine.version,
                "cases": len(results),
                "failed": [
                    {
                        "as": r.case.as_,
                        "action": r.case.action,
                        "resource": r.case.resource,
                        "problem": r.problem,
                        "policy_ids": list(r.verdict.policy_ids),
                    }
                    for r in failed
                ],
            }
        )
    else:
        for r in failed:
            out.print(
                "[red]FAIL[/] "
                + escape(f"{r.case.as_} {r.case.action} {r.case.resource}: {r.problem}"),
                highlight=False,
            )
        colour = "red" if failed else "green"
        out.print(
            f"[{colour}]{len(results) - len(failed)}/{len(results)} decisions as expected[/]"
            f" (policy set {engine.version})"
        )
    if failed:
        raise typer.Exit(1)
