"""`sovra report usage`: model usage per user, group or endpoint, from the usage ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from sovra.cli.kit import JsonOpt, emit_json, out
from sovra.cli.policy import _config, _fail

report_app = typer.Typer(help="Reports: usage of model endpoints.", no_args_is_help=True)


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `30m`, or an ISO date/time (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(value) > 1 and value[-1] in units and value[:-1].isdigit():
        return now - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"--since {value!r} is not understood; write 7d, 24h, 30m or 2026-11-01")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
    with UsageLedger.in_home(config.home) as ledger:
        rows = ledger.report(by, start)  # type: ignore[arg-type]
    if json_out:
        emit_json({"by": by, "since": start, "rows": [r.to_json() for r in rows]})
        return
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
