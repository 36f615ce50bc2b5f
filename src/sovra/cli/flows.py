"""`sovra flow ...`: list workflows, run them, decide approvals and operate runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sovra.cli.classifiers import classifier_app
from sovra.cli.kit import AsOpt, JsonOpt, emit_json, fail, out, state
from sovra.directory import DirectoryError
from sovra.flows.base import FlowError
from sovra.flows.store import GLOBAL, Run

flow_app = typer.Typer(
    help="Workflows: AI steps, approvals and logged actions.", no_args_is_help=True
)

flow_app.add_typer(classifier_app, name="classifier")

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]

if TYPE_CHECKING:
    from sovra.flows.service import Flows


@contextmanager
def _flows(ctx: typer.Context) -> Iterator[Flows]:
    from sovra.workspace import open_flows

    flows = open_flows(state(ctx).config)
    try:
        yield flows
    except (FlowError, DirectoryError) as exc:
        fail(str(exc))
    finally:
        flows.close()


def _print_run(data: dict[str, Any]) -> None:
    out.print(
        f"[bold]{data['id']}[/] {data['workflow']} — [bold]{data['status']}[/]"
        f" (requested by {data['requester']})",
        highlight=False,
    )
    if data.get("error"):
        out.print(f"  [yellow]{data['error']}[/]", highlight=False)
    for step in data.get("steps", []):
        line = f"  {step['status']:<11} {step['id']} ({step['kind']})"
        summary = _summary(step)
        if summary:
            line += f": {summary}"
        out.print(line, highlight=False, markup=False)
    approval = data.get("approval")
    if approval:
        votes = ", ".join(f"{v['user_id']} {v['decision']}" for v in approval["votes"]) or "none"
        out.print(
            f"  approval: {approval['required']} of {' or '.join(approval['groups'])};"
            f" votes: {votes}; expires {approval['expires']}"
            + (" (escalated)" if approval["escalated"] else ""),
            highlight=False,
            markup=False,
        )


def _summary(step: dict[str, Any]) -> str:
    output = step.get("output")
    if step.get("error"):
        return str(step["error"])
    if not isinstance(output, dict):
        return ""
    kind = step["kind"]
    if kind == "classify":
        return f"{output.get('display') or output.get('label')} ({output.get('confidence')})"
    if kind == "summary":
        return str(output.get("text", ""))
    if kind == "retrieve":
        return f"{output.get('count')} passages"
    if kind == "draft":
        text = str(output.get("text", "")).replace("\n", " ")
        if not text.strip():
            return f"{output.get('reason') or 'no draft'}: it-support writes the reply"
        return (
            f"{text[:100]}{'…' if len(text) > 100 else ''} [{len(output.get('citations', []))}"
            f" citations; {output.get('generation')} via {output.get('endpoint')}]"
        )
    if kind == "act":
        return "already done (replayed)" if output.get("replayed") else "done"
    if kind == "branch":
        return f"→ {output.get('taken')}"
    if kind == "approve":
        return "approved by " + ", ".join(output.get("approvers", []))
    return json.dumps(output, ensure_ascii=False)[:120]


def _read_inputs(path: Path | None, sets: list[str] | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
            loaded = json.loads(text)
        except OSError as exc:
            fail(f"cannot read --input {path}: {exc.strerror}")
        except json.JSONDecodeError as exc:
            fail(f"--input {path} is not JSON: {exc}")
        if not isinstance(loaded, dict):
            fail(f"--input {path} must hold a JSON object of input names to values")
        data.update(loaded)
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--set {item!r}: write NAME=VALUE")
        try:
            data[key] = json.loads(value)
        except json.JSONDecodeError:
            data[key] = value
    return data


def _done(flows: Flows, run: Run, json_out: bool) -> None:
    data = flows.show(run.id)
    if json_out:
        emit_json(data)
    else:
        _print_run(data)


@flow_app.command("list")
def list_command(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the workflows (shipped, configured and in <home>/workflows)."""
    with _flows(ctx) as flows:
        broken: list[Any] = []
        found = flows.workflows(broken)
        rows: list[dict[str, Any]] = [
            {
                "name": wf.name,
                "description": wf.description,
                "trigger": wf.trigger.model_dump(exclude_none=True),
                "inputs": list(wf.inputs),
                "steps": [f"{s.id}:{s.kind}" for s in wf.steps],
                "actions": list(wf.actions),
                "path": str(path),
            }
            for wf, path in found.values()
        ]
        switches = flows.store.switches()
    errors = [str(e) for e in broken]
    if json_out:
        emit_json({"workflows": rows, "kill_switches": switches, "errors": errors})
        if errors:
            raise typer.Exit(1)
        return
    for row in rows:
        out.print(
            f"[bold]{row['name']}[/] ({row['trigger']['kind']}) — {row['description']}",
            highlight=False,
        )
        out.print(f"  steps: {', '.join(row['steps'])}", highlight=False, markup=False)
        out.print(f"  {row['path']}", highlight=False, markup=False)
    for sw in switches:
        scope = "all workflows" if sw["scope"] == GLOBAL else sw["scope"]
        out.print(f"[red]kill switch on[/] for {scope} by {sw['set_by']}: {sw['reason']}")
    if errors:
        fail("\n".join(errors))


@flow_app.command("run")
def run_command(
    ctx: typer.Context,
    name: str,
    as_user: AsOpt,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="JSON object of inputs ('-' = stdin).")
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="NAME=VALUE input (repeatable).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start workflow NAME as a user; runs until it completes, fails or waits for approval."""
    inputs = _read_inputs(input_file, sets)
    with _flows(ctx) as flows:
        run = flows.start(name, inputs, as_user)
        _done(flows, run, json_out)


@flow_app.command("show")
def show_command(ctx: typer.Context, run_id: str, json_out: JsonOpt = False) -> None:
    """Show a run: inputs, each step's output (draft, sources, model), approval and votes."""
    with _flows(ctx) as flows:
        data = flows.show(run_id)
    if json_out:
        emit_json(data)
        return
    _print_run(data)
    out.print("inputs:", markup=False)
    for key, value in data["inputs"].items():
        out.print(f"  {key}: {value}", highlight=False, markup=False)
    for step in data["steps"]:
        output = step.get("output")
        if not isinstance(output, dict):
            continue
        if step["kind"] == "draft":
            model = f", model {output['model']}" if output.get("model") else ""
            out.print(
                f"draft ({step['id']}) — AI-generated, {output.get('generation')} via endpoint"
                f" {output.get('endpoint')}{model} ({output.get('hosting')},"
                f" {output.get('jurisdiction')}):",
                highlight=False,
                markup=False,
            )
            out.print(f"  {output.get('text', '')}", highlight=False, markup=False)
            for c in output.get("citations", []):
                out.print(
                    f"  [{c['number']}] {c['title']}  {c['uri']}", highlight=False, markup=False
                )
        elif step["kind"] == "retrieve":
            out.print(f"passages ({step['id']}):", markup=False)
            for p in output.get("passages", []):
                out.print(f"  {p['title']}  {p['uri']}", highlight=False, markup=False)
        if step.get("override_by"):
            out.print(
                f"{step['id']} overridden by {step['override_by']}: {step['override_reason']}",
                highlight=False,
                markup=False,
            )


@flow_app.command("runs")
def runs_command(
    ctx: typer.Context,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """List recent runs (newest first)."""
    with _flows(ctx) as flows:
        flows.tick()
        runs = flows.runs(workflow=workflow, status=status, limit=limit)
    if json_out:
        emit_json([r.to_dict() for r in runs])
        return
    for r in runs:
        out.print(
            f"{r.id}  {r.workflow:<12} {r.status:<17} {r.requester}"
            + (f"  {r.error}" if r.error else ""),
            highlight=False,
            markup=False,
        )


@flow_app.command("inbox")
def inbox_command(ctx: typer.Context, as_user: AsOpt, json_out: JsonOpt = False) -> None:
    """Runs waiting for this user's approval."""
    with _flows(ctx) as flows:
        items = flows.pending_approvals(as_user)
    if json_out:
        emit_json(items)
        return
    if not items:
        out.print("nothing to decide")
    for item in items:
        run = item["run"]
        out.print(f"{run['id']}  {run['workflow']}  requested by {run['requester']}")


@flow_app.command("approve")
def approve_command(
    ctx: typer.Context,
    run_id: str,
    as_user: AsOpt,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
    text_file: Annotated[
        Path | None,
        typer.Option(
            "--text-file",
            help="Your edit of the draft ('-' = stdin): it replaces the draft, is recorded in"
            " the audit log and is what the run sends.",
        ),
    ] = None,
) -> None:
    """Approve a waiting run (never your own); the run continues once enough approve."""
    text = None
    if text_file is not None:
        try:
            text = sys.stdin.read() if str(text_file) == "-" else text_file.read_text("utf-8")
        except OSError as exc:
            fail(f"cannot read --text-file {text_file}: {exc.strerror}")
    with _flows(ctx) as flows:
        _done(flows, flows.approve(run_id, as_user, reason, text=text), json_out)


@flow_app.command("reject")
def reject_command(
    ctx: typer.Context,
    run_id: str,
    as_user: AsOpt,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Reject a waiting run (a reason is required); the run ends without acting."""
    _decide(ctx, "reject", run_id, as_user, reason, json_out)


def _decide(
    ctx: typer.Context, decision: str, run_id: str, as_user: str, reason: str, json_out: bool
) -> None:
    with _flows(ctx) as flows:
        decide = flows.approve if decision == "approve" else flows.reject
        _done(flows, decide(run_id, as_user, reason), json_out)


def _scope(run_id: str | None, workflow: str | None, all_: bool) -> str | None:
    """None = one run; otherwise the kill-switch scope."""
    given = (run_id is not None) + (workflow is not None) + all_
    if given != 1:
        fail("name exactly one of: a RUN id, --workflow NAME, or --all")
    if all_:
        return GLOBAL
    return workflow


@flow_app.command("pause")
def pause_command(
    ctx: typer.Context,
    as_user: AsOpt,
    run_id: Annotated[str | None, typer.Argument(help="The run to pause.")] = None,
    workflow: Annotated[
        str | None, typer.Option(help="Kill switch: stop every run of this workflow.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Kill switch: stop every workflow.")] = False,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Pause a run at its next step, or set a kill switch (--workflow / --all)."""
    scope = _scope(run_id, workflow, all_)
    with _flows(ctx) as flows:
        if scope is None:
            assert run_id is not None
            _done(flows, flows.pause(run_id, as_user, reason), json_out)
            return
        flows.kill_switch(scope, True, as_user, reason)
        result = {"kill_switch": scope, "on": True}
    if json_out:
        emit_json(result)
    else:
        out.print(
            f"kill switch on for {'all workflows' if scope == GLOBAL else scope}: new steps stop,"
            " running runs pause at their next step"
        )


@flow_app.command("resume")
def resume_command(
    ctx: typer.Context,
    as_user: AsOpt,
    run_id: Annotated[str | None, typer.Argument(help="The run to resume.")] = None,
    workflow: Annotated[str | None, typer.Option(help="Lift this workflow's kill switch.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Lift the global kill switch.")] = False,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Resume a paused run, or lift a kill switch (and resume the runs it paused)."""
    scope = _scope(run_id, workflow, all_)
    with _flows(ctx) as flows:
        if scope is None:
            assert run_id is not None
            _done(flows, flows.resume(run_id, as_user, reason), json_out)
            return
        resumed = flows.kill_switch(scope, False, as_user, reason)
    if json_out:
        emit_json({"kill_switch": scope, "on": False, "resumed": [r.to_dict() for r in resumed]})
    else:
        out.print(f"kill switch lifted for {'all workflows' if scope == GLOBAL else scope}")
        for r in resumed:
            out.print(f"  resumed {r.id}: {r.status}")


@flow_app.command("override")
def override_command(
    ctx: typer.Context,
    run_id: str,
    step_id: str,
    as_user: AsOpt,
    output: Annotated[
        str, typer.Option("--set", help='JSON object of outputs, e.g. \'{"label": "network"}\'.')
    ],
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Replace a step's output (with a reason); a failed step's run then continues."""
    try:
        values = json.loads(output)
    except json.JSONDecodeError as exc:
        fail(f"--set is not JSON: {exc}")
    if not isinstance(values, dict):
        fail("--set must be a JSON object of output names to values")
    with _flows(ctx) as flows:
        _done(flows, flows.override(run_id, step_id, values, as_user, reason), json_out)


@flow_app.command("retry")
def retry_command(
    ctx: typer.Context,
    run_id: str,
    as_user: AsOpt,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Re-run a failed run's failed step (an action keeps its idempotency key)."""
    with _flows(ctx) as flows:
        _done(flows, flows.retry(run_id, as_user, reason), json_out)


@flow_app.command("tick")
def tick_command(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Fire due schedule and new-document triggers and apply approval expiry (run from cron)."""
    with _flows(ctx) as flows:
        changes = flows.tick()
        started, errors = flows.fire_triggers()
        data = {
            "started": [r.to_dict() for r in started],
            "approvals": changes,
            "errors": errors,
        }
    if json_out:
        emit_json(data)
    else:
        for r in started:
            out.print(f"started {r.id} ({r.workflow} as {r.requester}): {r.status}", markup=False)
        out.print(f"{len(started)} run(s) started; {len(changes)} approval(s) expired or escalated")
    if errors:
        fail("; ".join(errors))


@flow_app.command("recover")
def recover_command(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Finish runs a killed process left mid-step (any executing command does this too)."""
    with _flows(ctx) as flows:
        ids = flows.recover()
        changes = flows.tick()
    if json_out:
        emit_json({"recovered": ids, "approvals": changes})
    else:
        out.print(
            f"recovered {len(ids)} run segment(s); {len(changes)} approval(s) expired or escalated"
        )
