"""`sovra source list|show|sync|remove`: the configured sources and their sync state."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from sovra.cli.kit import JsonOpt, console, emit_json, fail, out, progress_bar, state

source_app = typer.Typer(help="Sources: connect, sync and inspect.", no_args_is_help=True)


@source_app.command("list")
def source_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Configured sources with their labels and indexed document counts."""
    from sovra.workspace import Workspace

    cfg = state(ctx).config
    ws = Workspace.open(cfg)
    try:
        rows: list[dict[str, Any]] = []
        for src in cfg.sources:
            counts = ws.state.counts(src.name)
            last = ws.state.last_report(src.name)
            rows.append(
                {
                    "name": src.name,
                    "kind": src.kind,
                    "path": cfg.source_location(src),
                    "access": list(src.access),
                    "classification": src.classification,
                    "residency": src.residency,
                    "documents": counts.get("ok", 0),
                    "failed": counts.get("failed", 0),
                    "skipped": counts.get("skipped", 0),
                    "chunks": counts.get("chunks", 0),
                    "last_sync": last.get("finished_at") if last else None,
                }
            )
    finally:
        ws.close()
    if json_out:
        emit_json(rows)
        return
    if not rows:
        out.print("no sources configured; add one with `sovra source add` or in sovra.toml")
    for r in rows:
        out.print(
            f"[bold]{r['name']}[/] ({r['kind']}) {r['path']}\n"
            f"    {r['documents']} documents, {r['chunks']} chunks, {r['failed']} failed,"
            f" {r['skipped']} skipped (no text);"
            f" access {', '.join(r['access']) or 'admins only'}; {r['classification']};"
            f" residency {r['residency']}; last sync {r['last_sync'] or 'never'}",
            highlight=False,
        )


@source_app.command("show")
def source_show(
    ctx: typer.Context,
    name: str,
    failed_limit: Annotated[int, typer.Option("--failed", help="Failed documents to list.")] = 50,
    skipped_limit: Annotated[
        int, typer.Option("--skipped", help="Skipped documents (nothing to index) to list.")
    ] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The last sync report of a source: failed documents (they need action) with their
    reasons, apart from skipped ones (nothing to index, e.g. redirect pages: fine as they are)."""
    from sovra.workspace import Workspace

    cfg = state(ctx).config
    cfg.source(name)
    ws = Workspace.open(cfg)
    try:
        report = ws.state.last_report(name)
        counts = ws.state.counts(name)
        failed = ws.state.documents(name, status="failed", limit=failed_limit)
        skipped = ws.state.documents(name, status="skipped", limit=skipped_limit)
    finally:
        ws.close()
    data: dict[str, Any] = {
        "source": name,
        "documents": counts.get("ok", 0),
        "chunks": counts.get("chunks", 0),
        "failed_count": counts.get("failed", 0),
        "failed": [{"id": d.external_id, "reason": d.error} for d in failed],
        "skipped_count": counts.get("skipped", 0),
        "skipped": [{"id": d.external_id, "reason": d.error} for d in skipped],
        "last_report": report,
    }
    if json_out:
        emit_json(data)
        return
    out.print(f"[bold]{name}[/]: {data['documents']} documents, {data['chunks']} chunks")
    if report:
        c = report["counts"]
        out.print(
            f"last sync {report['finished_at']}: +{c['added']} added, {c['updated']} updated,"
            f" {c['unchanged']} unchanged, {c['deleted']} deleted, {c['failed']} failed,"
            f" {c.get('skipped', 0)} skipped"
            + (f" — stopped: {report['error']}" if report.get("error") else "")
        )
    else:
        out.print("never synced; run `sovra source sync " + name + "`")
    if data["failed_count"]:
        out.print(f"[red]failed — needs action[/] ({data['failed_count']}):")
    for d in data["failed"]:
        out.print(f"  [red]failed[/] {escape(d['id'])}: {escape(d['reason'])}", highlight=False)
    if data["skipped_count"]:
        out.print(f"skipped — nothing to index, no action needed ({data['skipped_count']}):")
    for d in data["skipped"]:
        out.print(f"  [dim]skipped[/] {escape(d['id'])}: {escape(d['reason'])}", highlight=False)
    for key, what in (("labels_refused", "labels refused"), ("refused_links", "link refused")):
        for eid, why in ((report or {}).get(key) or {}).items():
            out.print(f"  [yellow]{what}[/] {escape(eid)}: {escape(why)}", highlight=False)


@source_app.command("sync")
def source_sync(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Sources to sync.")] = None,
    all_sources: Annotated[bool, typer.Option("--all", help="Sync every source.")] = False,
    bm25_only: Annotated[
        bool, typer.Option("--bm25-only", help="Skip embeddings (full-text search only).")
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="local (this process) or ray (parse/chunk/embed on a Ray cluster; "
            "needs the `ray` extra).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster to join (HOST:PORT, auto, ray://HOST:PORT); "
            "default: a local Ray for this sync.",
        ),
    ] = None,
    num_gpus: Annotated[
        float, typer.Option("--num-gpus", help="GPUs per Ray embedding actor (GPU nodes).")
    ] = 0.0,
    json_out: JsonOpt = False,
) -> None:
    """Bring the index in line with the sources: new and changed documents, deletions."""
    from sovra.sources.base import SourceUnavailable
    from sovra.workspace import Workspace

    cfg = state(ctx).config
    if engine not in ("local", "ray"):
        fail(f"--engine {engine!r}: use local or ray")
    if engine == "local" and (address is not None or num_gpus):
        fail("--address and --num-gpus need --engine ray")
    ray_options = None
    if engine == "ray":
        from sovra.ingest.ray_engine import RayOptions

        ray_options = RayOptions(address=address, num_gpus=num_gpus)
    if all_sources:
        targets = list(cfg.sources)
    elif names:
        targets = [cfg.source(n) for n in names]
    else:
        fail("name the sources to sync, or pass --all")
    if not targets:
        fail("no sources configured; add one with `sovra source add`")
    ws = Workspace.open(cfg)
    reports = []
    failed_sources = 0
    try:
        for src in targets:
            with progress_bar(f"sync {src.name}", None, enabled=not json_out) as advance:

                def progress(done: int, total: int, current: str | None) -> None:
                    advance(total=total, completed=done)

                try:
                    report = ws.sync(src, progress, bm25_only=bm25_only, ray=ray_options)
                except SourceUnavailable as exc:
                    failed_sources += 1
                    reports.append({"source": src.name, "ok": False, "error": str(exc)})
                    if not json_out:
                        console.print(f"[red]{src.name}: {exc}[/]", highlight=False)
                    continue
            data = report.to_dict()
            reports.append(data)
            if not report.ok:
                failed_sources += 1
            if not json_out:
                c = data["counts"]
                out.print(
                    f"[bold]{src.name}[/]: +{c['added']} added, {c['updated']} updated,"
                    f" {c['unchanged']} unchanged, {c['deleted']} deleted,"
                    f" {c['failed']} failed, {c['skipped']} skipped"
                    f" ({c['chunks_written']} chunks written)"
                    + (f" — stopped: {report.error}" if report.error else ""),
                    highlight=False,
                )
                if c["failed"]:
                    out.print(f"    see `sovra source show {src.name}` for the reasons")
    finally:
        ws.close()
    if json_out:
        emit_json(reports)
    if failed_sources:
        raise typer.Exit(1)


@source_app.command("remove")
def source_remove(ctx: typer.Context, name: str, json_out: JsonOpt = False) -> None:
    """Delete a source's documents from the index (then remove it from sovra.toml)."""
    from sovra.workspace import Workspace

    cfg = state(ctx).config
    ws = Workspace.open(cfg)
    try:
        removed = ws.remove_source_data(name)
    finally:
        ws.close()
    configured = any(s.name == name for s in cfg.sources)
    if json_out:
        emit_json({"source": name, "chunks_removed": removed, "still_configured": configured})
        return
    out.print(f"removed {removed} chunks of {name} from the index")
    if configured:
        out.print("delete its [[sources]] block from the config, or the next sync restores it")
