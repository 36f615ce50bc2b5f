"""`sovra report usage` (model usage from the usage ledger) and `sovra report compliance` (the
GDPR / AI Act report backed by audit evidence, as HTML, PDF or its JSON evidence bundle)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from sovra.cli.kit import JsonOpt, console, emit_json, out
from sovra.cli.policy import _config, _fail

report_app = typer.Typer(
    help="Reports: usage of model endpoints, and the compliance report.", no_args_is_help=True
)
FORMATS = ("html", "pdf", "json")


def parse_since(value: str, now: datetime | None = None, *, option: str = "--since") -> datetime:
    """`7d`, `24h`, `30m`, or an ISO date/time (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(value) > 1 and value[-1] in units and value[:-1].isdigit():
        return now - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r} is not understood; write 7d, 24h, 30m or 2026-11-01")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@report_app.command("usage")
def report_usage_command(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option("--by", help="Group rows by user, group or endpoint.")
    ] = "endpoint",
    since: Annotated[
        str | None, typer.Option("--since", help="7d, 24h, 30m or an ISO date.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Model usage: calls, tokens, cost and latency per user, group or endpoint."""
    from sovra.policy.usage import UsageLedger

    if by not in ("user", "group", "endpoint"):
        _fail(f"--by {by!r} is not understood; use user, group or endpoint")
    config = _config(ctx)
    start = parse_since(since) if since else None
    with UsageLedger.in_home(config.home, config.shared_database_url()) as ledger:
        rows = ledger.report(by, start)  # type: ignore[arg-type]
    feedback = answer_feedback(
        config.home, by_user=by == "user", since=start, url=config.shared_database_url()
    )
    if json_out:
        emit_json(
            {"by": by, "since": start, "rows": [r.to_json() for r in rows], "feedback": feedback}
        )
        return
    print_feedback(feedback)
    if not rows:
        out.print("no model calls recorded" + (f" since {start:%Y-%m-%d %H:%M}" if start else ""))
        return
    out.print(
        f"{by:<20} {'calls':>7} {'tokens in':>10} {'tokens out':>10} {'cost':>10} {'avg ms':>8}"
    )
    for r in rows:
        out.print(
            f"{r.key:<20} {r.calls:>7} {r.tokens_in:>10} {r.tokens_out:>10}"
            f" {r.cost:>10.4f} {r.latency_ms_avg:>8.1f}",
            highlight=False,
        )


def answer_feedback(
    home: Path, *, by_user: bool, since: datetime | None, url: str | None = None
) -> list[dict[str, object]]:
    """Ratings of answers (👍/👎, comments) from the feedback store; none when it never existed
    (a report never creates a store)."""
    from sovra.answer.feedback import FeedbackStore

    if url is None and not (home / "feedback.sqlite").exists():
        return []
    store = FeedbackStore.in_home(home, url)
    try:
        rows = store.summary(by_user=by_user, since=since.timestamp() if since else None)
    finally:
        store.close()
    return [dict(r) for r in rows]


def print_feedback(rows: list[dict[str, object]]) -> None:
    for r in rows:
        who = "" if r["key"] == "all" else f" {r['key']}"
        out.print(
            f"answer feedback{who}: {r['up']} up, {r['down']} down, {r['comments']} with comments",
            highlight=False,
        )


@report_app.command("compliance")
def report_compliance_command(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", help="Period start: 30d, 24h or an ISO date.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Period end (exclusive): an ISO date or 7d.")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="html, pdf or json.")] = "html",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default compliance-report.<format>)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The compliance report (GDPR Art. 30/17, AI Act Art. 12-15, inventory), every figure backed
    by audit entries; `--format json` is the evidence bundle `sovra audit verify-report` checks.
    Exit 1 when the audit log fails verification (the report then says so, with no figures)."""
    from sovra.governance.report import build_report, bundle_json, render_html, render_pdf
    from sovra.workspace import Workspace

    if format not in FORMATS:
        _fail(f"--format {format!r} is not supported; use {', '.join(FORMATS)}")
    config = _config(ctx)
    start = parse_since(since) if since else None
    end = parse_since(until, option="--until") if until else None
    if start and end and end <= start:
        _fail(f"--until {until} is not after --since {since}")
    target = output or Path(f"compliance-report.{format}")
    began = time.perf_counter()
    ws = Workspace.open(config)
    try:
        with console.status("verifying the audit log and computing the report"):
            bundle = build_report(ws, start, end)
            if format == "pdf":
                data: bytes | str = render_pdf(bundle)
            elif format == "html":
                data = render_html(bundle)
            else:
                data = bundle_json(bundle)
    finally:
        ws.close()
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        target.write_text(data, encoding="utf-8")
    ok = bool(bundle["verification"]["ok"])
    summary = {
        "path": str(target),
        "format": format,
        "verified": ok,
        "problem": bundle["verification"]["problem"],
        "figures": len(bundle["figures"]),
        "checkpoint_size": bundle["log"].get("checkpoint_size"),
        "seconds": round(time.perf_counter() - began, 2),
    }
    if json_out:
        emit_json(summary)
    elif ok:
        out.print(
            f"compliance report written to {target}: {summary['figures']} figures backed by the"
            f" audit log at checkpoint {summary['checkpoint_size']} ({summary['seconds']} s)"
        )
    else:
        console.print(
            f"[bold red]audit log verification FAILED[/]: {bundle['verification']['problem']};"
            f" the report in {target} says so and shows no figures",
            highlight=False,
        )
    if not ok:
        raise typer.Exit(1)
