"""The `sovra` command line: `sovra <noun> <verb>`, every command with `--json` for scripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sovra import __version__
from sovra.audit import cli as audit_cli
from sovra.clikit import CliState, SovraGroup, console, emit_json, exit_code, fail, out, state
from sovra.errors import SovraError
from sovra.flows.cli import flow_app
from sovra.models import cli as models_cli
from sovra.policy import cli as policy_cli
from sovra.server import cli as server_cli

app = typer.Typer(
    cls=SovraGroup,
    name="sovra",
    help="Sovereign, self-hosted AI: governed search over your own data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
user_app = typer.Typer(help="Users of the local directory.", no_args_is_help=True)
group_app = typer.Typer(help="Groups of the local directory.", no_args_is_help=True)
source_app = typer.Typer(help="Sources: connect, sync and inspect.", no_args_is_help=True)
eval_app = typer.Typer(
    help="Evaluate retrieval quality on judged collections.", no_args_is_help=True
)
app.add_typer(user_app, name="user")
app.add_typer(group_app, name="group")
app.add_typer(source_app, name="source")
app.add_typer(eval_app, name="eval")
app.add_typer(audit_cli.app, name="audit")
app.command("erase", help="Crypto-shred a data subject's personal fields in the audit log.")(
    audit_cli.erase_command
)
app.add_typer(models_cli.app, name="model")
app.add_typer(policy_cli.policy_app, name="policy")
app.add_typer(policy_cli.endpoint_app, name="endpoint")
app.command("doctor")(policy_cli.doctor_command)
eval_app.command("pii")(policy_cli.pii_eval_command)
report_app = typer.Typer(help="Reports: usage of model endpoints.", no_args_is_help=True)
report_app.command("usage")(policy_cli.report_usage_command)
app.add_typer(report_app, name="report")
app.command("serve")(server_cli.serve_command)
app.command("mcp")(server_cli.mcp_command)
user_app.command("set-password")(server_cli.set_password_command)
app.add_typer(server_cli.apikey_app, name="apikey")
app.add_typer(flow_app, name="flow")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
AsOpt = Annotated[str, typer.Option("--as", help="Act as this user of the directory.")]

DEMO_USERS: dict[str, list[str]] = {
    "alice": ["staff", "sre"],
    "bob": ["staff", "it-support"],
    "carol": ["staff"],
    "dana": ["staff", "people"],
    "erin": ["staff", "it-support"],
    "root": ["staff", "admins"],
}


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


@app.command()
def init(
    ctx: typer.Context,
    demo_directory: Annotated[
        bool, typer.Option("--demo-directory", help="Add the demo users alice, bob, carol, dana.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create the data directory (and the demo users)."""
    from sovra.workspace import Workspace

    ws = Workspace.open(state(ctx).config)
    added = []
    if demo_directory:
        for user, groups in DEMO_USERS.items():
            ws.directory.add_user(user, groups)
            added.append(user)
    if json_out:
        emit_json({"home": str(ws.home), "users_added": added})
    else:
        out.print(f"data directory: {ws.home}")
        if added:
            out.print(
                "demo users: " + ", ".join(f"{u} ({', '.join(DEMO_USERS[u])})" for u in added)
            )
    ws.close()


# -- users and groups -------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    user_id: str,
    group: Annotated[list[str] | None, typer.Option("--group", "-g", help="Repeatable.")] = None,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Add a user (or add groups to an existing one)."""
    from sovra.workspace import directory_for

    user = directory_for(state(ctx).config).add_user(user_id, group or [], name)
    if json_out:
        emit_json({"id": user.id, "groups": sorted(user.groups)})
    else:
        out.print(f"user {user.id}: groups {', '.join(sorted(user.groups)) or '(none)'}")


@user_app.command("list")
def user_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List users and their groups."""
    from sovra.workspace import directory_for

    users = directory_for(state(ctx).config).users()
    if json_out:
        emit_json([{"id": u.id, "groups": sorted(u.groups)} for u in users])
        return
    for u in users:
        out.print(f"{u.id}\t{', '.join(sorted(u.groups))}")


@user_app.command("remove")
def user_remove(ctx: typer.Context, user_id: str, json_out: JsonOpt = False) -> None:
    """Remove a user; their access ends on the next query."""
    from sovra.workspace import directory_for

    directory_for(state(ctx).config).remove_user(user_id)
    if json_out:
        emit_json({"removed": user_id})
    else:
        out.print(f"removed {user_id}")


@group_app.command("add")
def group_add(
    ctx: typer.Context,
    name: str,
    member: Annotated[list[str] | None, typer.Option("--member", "-m")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Declare a group, optionally adding existing users to it."""
    from sovra.workspace import directory_for

    directory = directory_for(state(ctx).config)
    directory.add_group(name)
    for user in member or []:
        directory.set_membership(user, name, True)
    if json_out:
        emit_json({"group": name, "members": directory.groups().get(name, [])})
    else:
        out.print(f"group {name}: {', '.join(directory.groups().get(name, [])) or '(no members)'}")


@group_app.command("remove-member")
def group_remove_member(
    ctx: typer.Context, name: str, user_id: str, json_out: JsonOpt = False
) -> None:
    """Take a user out of a group; effective on the next query."""
    from sovra.workspace import directory_for

    user = directory_for(state(ctx).config).set_membership(user_id, name, False)
    if json_out:
        emit_json({"id": user.id, "groups": sorted(user.groups)})
    else:
        out.print(f"user {user.id}: groups {', '.join(sorted(user.groups)) or '(none)'}")


@group_app.command("list")
def group_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List groups and their members."""
    from sovra.workspace import directory_for

    groups = directory_for(state(ctx).config).groups()
    if json_out:
        emit_json(groups)
        return
    for g, members in groups.items():
        out.print(f"{g}\t{', '.join(members)}")


# -- search -----------------------------------------------------------------------------------


@app.command()
def search(
    ctx: typer.Context,
    query: str,
    as_user: AsOpt,
    k: Annotated[int, typer.Option("--k", min=1, max=1000)] = 10,
    mode: Annotated[str, typer.Option(help="hybrid, text or vector.")] = "hybrid",
    source: Annotated[list[str] | None, typer.Option(help="Only these sources.")] = None,
    lang: Annotated[str | None, typer.Option(help="Query language (default: detected).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Search the chunks AS_USER may read."""
    from sovra.workspace import Workspace

    if mode not in ("hybrid", "text", "vector"):
        fail(f"--mode {mode!r} is not one of hybrid, text, vector")
    ws = Workspace.open(state(ctx).config)
    try:
        result = ws.search(query, as_user, k=k, mode=mode, sources=source, language=lang)  # type: ignore[arg-type]
    finally:
        ws.close()
    if json_out:
        emit_json(result.to_dict())
        return
    if not result.hits:
        out.print(f"no results among the documents {as_user} can access")
        return
    for h in result.hits:
        heading = " › ".join(h.chunk.heading_path)
        out.print(
            f"[bold]{h.rank:>2}. {h.chunk.title}[/] [dim]({h.chunk.source}, {h.chunk.classification},"
            f" score {h.score:.4f})[/]",
            highlight=False,
        )
        if heading:
            out.print(f"    [cyan]{heading}[/]", highlight=False)
        snippet = " ".join(h.chunk.text.split())[:220]
        out.print(f"    {snippet}", highlight=False, markup=False)
        out.print(f"    [dim]{h.chunk.uri}[/]", highlight=False)


# -- sources ----------------------------------------------------------------------------------


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
                    "path": str(cfg.resolve(src.path)),
                    "access": list(src.access),
                    "classification": src.classification,
                    "residency": src.residency,
                    "documents": counts.get("ok", 0),
                    "failed": counts.get("failed", 0),
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
            f"    {r['documents']} documents, {r['chunks']} chunks, {r['failed']} failed;"
            f" access {', '.join(r['access']) or 'admins only'}; {r['classification']};"
            f" residency {r['residency']}; last sync {r['last_sync'] or 'never'}",
            highlight=False,
        )


@source_app.command("show")
def source_show(
    ctx: typer.Context,
    name: str,
    failed_limit: Annotated[int, typer.Option("--failed", help="Failed documents to list.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The last sync report of a source, with failed documents and their reasons."""
    from sovra.workspace import Workspace

    cfg = state(ctx).config
    cfg.source(name)
    ws = Workspace.open(cfg)
    try:
        report = ws.state.last_report(name)
        counts = ws.state.counts(name)
        failed = ws.state.documents(name, status="failed", limit=failed_limit)
    finally:
        ws.close()
    data: dict[str, Any] = {
        "source": name,
        "documents": counts.get("ok", 0),
        "chunks": counts.get("chunks", 0),
        "failed_count": counts.get("failed", 0),
        "failed": [{"id": d.external_id, "reason": d.error} for d in failed],
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
            f" {c['unchanged']} unchanged, {c['deleted']} deleted, {c['failed']} failed"
            + (f" — stopped: {report['error']}" if report.get("error") else "")
        )
    else:
        out.print("never synced; run `sovra source sync " + name + "`")
    for d in data["failed"]:
        out.print(f"  [red]failed[/] {d['id']}: {d['reason']}", highlight=False)


@source_app.command("sync")
def source_sync(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Sources to sync.")] = None,
    all_sources: Annotated[bool, typer.Option("--all", help="Sync every source.")] = False,
    bm25_only: Annotated[
        bool, typer.Option("--bm25-only", help="Skip embeddings (full-text search only).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Bring the index in line with the sources: new and changed documents, deletions."""
    from sovra.clikit import progress_bar
    from sovra.sources.base import SourceUnavailable
    from sovra.workspace import Workspace

    cfg = state(ctx).config
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
                    report = ws.sync(src, progress, bm25_only=bm25_only)
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
                    f" {c['failed']} failed ({c['chunks_written']} chunks written)"
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


# -- evaluation -------------------------------------------------------------------------------

EvalDataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Folder with the judged collections (default ../shared/data/eval)."
    ),
]


def _eval_root(data: Path | None) -> Path:
    root = data or Path(os.environ.get("SOVRA_EVAL_DATA", "../shared/data/eval"))
    if not root.is_dir():
        fail(f"evaluation data folder {root} not found; pass --data or set SOVRA_EVAL_DATA")
    return root


@eval_app.command("retrieval")
def eval_retrieval(
    ctx: typer.Context,
    collection: Annotated[
        list[str] | None, typer.Option("--collection", help="Repeatable; default all.")
    ] = None,
    max_queries: Annotated[int | None, typer.Option(help="Cap queries per collection.")] = None,
    data: EvalDataOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """nDCG@10, Recall@100 and MRR per collection for full text, vector and hybrid."""
    from dataclasses import asdict

    from sovra.clikit import progress_bar
    from sovra.govern.collections import standard_collections
    from sovra.govern.retrieval_eval import evaluate_collection
    from sovra.search import FusionSettings
    from sovra.workspace import embedder_for

    cfg = state(ctx).config
    collections = standard_collections(_eval_root(data))
    names = collection or list(collections)
    for n in names:
        if n not in collections:
            fail(f"unknown collection {n!r}; choose from {', '.join(collections)}")
    embedder = embedder_for(cfg)
    s = cfg.search
    settings = FusionSettings(fusion=s.fusion, rrf_k=s.rrf_k, candidates=s.candidates)
    reports = []
    for n in names:
        with progress_bar(f"eval {n}", None, enabled=not json_out) as advance:
            report = evaluate_collection(
                collections[n],
                embedder,
                settings,
                cache_dir=cfg.home / "cache" / "eval",
                max_queries=max_queries,
                progress=lambda done, total, what: advance(
                    total=total, completed=done, description=what
                ),
            )
        reports.append(report)
        if not json_out:
            for method, m in report.methods.items():
                out.print(
                    f"{n:<14} {method:<7} nDCG@10 {m.ndcg10:.3f}  R@100 {m.recall100:.3f}"
                    f"  MRR {m.mrr:.3f}  ({m.queries} queries, {m.ms_per_query:.1f} ms/query)"
                )
    if json_out:
        emit_json([asdict(r) for r in reports])


@eval_app.command("answers")
def eval_answers(
    ctx: typer.Context,
    language: Annotated[
        list[str] | None, typer.Option("--language", help="en, de, es (repeatable).")
    ] = None,
    max_questions: Annotated[int, typer.Option(help="Answerable/unanswerable cap.")] = 300,
    endpoint: Annotated[
        str | None, typer.Option(help="Also evaluate this configured generator endpoint.")
    ] = None,
    max_generated: Annotated[int, typer.Option(help="Questions for the generator.")] = 40,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Pick the not-found thresholds on the calibration split (disjoint articles).",
        ),
    ] = False,
    data: EvalDataOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """XQuAD: exact match, token F1, citation precision, refusal on unanswerable questions."""
    from dataclasses import asdict

    from sovra.clikit import progress_bar
    from sovra.govern.answer_eval import calibration_rows, choose_threshold, evaluate_language
    from sovra.models.loading import generator_for
    from sovra.workspace import embedder_for

    cfg = state(ctx).config
    root = _eval_root(data) / "xquad"
    languages = language or ["en", "de", "es"]
    for lang in languages:
        if not (root / f"xquad.{lang}.json").is_file():
            fail(f"no XQuAD file for language {lang!r} in {root}")
    embedder = embedder_for(cfg)
    cache_dir = cfg.home / "cache" / "eval"
    if calibrate:
        rows = []
        for lang in languages:
            with progress_bar(f"calibrate {lang}", None, enabled=not json_out) as advance:
                rows += calibration_rows(
                    root,
                    lang,
                    embedder,
                    max_questions=max_questions,
                    cache_dir=cache_dir,
                    progress=lambda done, total, what: advance(
                        total=total, completed=done, description=what
                    ),
                )
        # Questions the embedding model covers are scored semantically, others lexically:
        # each kind gets its own threshold ([answer] min_score / min_score_lexical).
        picked = {}
        for key, semantic in (("min_score", True), ("min_score_lexical", False)):
            subset = [r for r in rows if r.semantic_used == semantic]
            if subset:
                picked[key] = choose_threshold(subset)
        if json_out:
            emit_json({k: asdict(v) for k, v in picked.items()})
            return
        for key, t in picked.items():
            out.print(
                f"{key} = {t.threshold:.2f}  (calibration split: refusal {t.refusal_rate:.3f}"
                f" on {t.unanswerable} unanswerable, F1 {t.f1:.3f} on {t.answerable} answerable)"
            )
        out.print("Set them under \\[answer] in sovra.toml; `sovra eval answers` reports them.")
        return
    generator = generator_for(cfg.endpoint(endpoint), cfg.home) if endpoint else None
    reports = []
    for lang in languages:
        with progress_bar(f"answers {lang}", None, enabled=not json_out) as advance:
            report = evaluate_language(
                root,
                lang,
                embedder,
                generator=generator,
                max_questions=max_questions,
                max_generated=max_generated,
                cache_dir=cache_dir,
                min_score=cfg.answer.min_score,
                min_score_lexical=cfg.answer.min_score_lexical,
                max_answer_tokens=cfg.answer.max_answer_tokens,
                progress=lambda done, total, what: advance(
                    total=total, completed=done, description=what
                ),
            )
        reports.append(report)
        if not json_out:
            for name, m in report.methods.items():
                out.print(
                    f"{lang} {name:<11} EM {m.exact_match:.3f}  F1 {m.f1:.3f}"
                    f"  citation precision {m.citation_precision:.3f}"
                    f"  refusal {m.refusal_rate:.3f}  ({m.answerable}+{m.unanswerable} questions,"
                    f" {m.ms_per_question:.0f} ms/question)"
                )
    if json_out:
        emit_json([asdict(r) for r in reports])


@eval_app.command("triage")
def eval_triage(
    ctx: typer.Context,
    data: Annotated[
        Path, typer.Option("--data", help="Labelled tickets CSV (title, body, category, urgency).")
    ] = Path("../shared/data/company/tickets/it_tickets.csv"),
    target: Annotated[
        list[str] | None, typer.Option("--target", help="Label column (repeatable).")
    ] = None,
    repeats: Annotated[int, typer.Option(help="Seeded splits to average (seeds 42, 43, …).")] = 1,
    embeddings: Annotated[
        bool, typer.Option("--embeddings", help="Also score sovra + embedder vectors.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Ticket triage: macro-F1 and accuracy, majority and TF-IDF+LR baselines vs sovra."""
    from dataclasses import asdict

    from sovra.clikit import progress_bar
    from sovra.flows.base import FlowError
    from sovra.govern.triage_eval import TARGETS, evaluate_triage
    from sovra.workspace import embedder_for

    cfg = state(ctx).config
    if not data.is_file():
        fail(f"tickets file {data} not found; pass --data PATH.csv")
    if not 1 <= repeats <= 20:
        fail("--repeats must be between 1 and 20")
    with progress_bar("eval triage", None, enabled=not json_out) as advance:
        try:
            report = evaluate_triage(
                data,
                targets=target or TARGETS,
                seeds=[42 + i for i in range(repeats)],
                embedder=embedder_for(cfg) if embeddings else None,
                cache_dir=cfg.home / "cache" / "eval",
                progress=lambda done, total, what: advance(
                    total=total, completed=done, description=what
                ),
            )
        except FlowError as exc:
            fail(str(exc))
    if json_out:
        emit_json(asdict(report))
        return
    for t in report.targets:
        out.print(
            f"{t.target}: {len(t.label_counts)} labels, {t.test_size} held-out of {report.rows}"
            f" rows, {len(report.seeds)} split(s)"
            + (f"; untestable (1 example): {', '.join(t.untestable)}" if t.untestable else "")
        )
        for name, m in t.methods.items():
            spread = f" ±{m.macro_f1_std:.3f}" if len(report.seeds) > 1 else ""
            ece = f"  calibration error {m.ece:.3f}" if m.ece is not None else ""
            out.print(
                f"  {name:<18} macro-F1 {m.macro_f1:.3f}{spread}  accuracy {m.accuracy:.3f}{ece}"
                f"  ({m.fit_seconds:.1f} s)"
            )


# -- answers ----------------------------------------------------------------------------------


@app.command()
def ask(
    ctx: typer.Context,
    question: str,
    as_user: AsOpt,
    endpoint: Annotated[
        str | None, typer.Option(help="Answer with this configured endpoint.")
    ] = None,
    extractive: Annotated[
        bool, typer.Option("--extractive", help="Quote the sources; no generation.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Answer QUESTION from the documents AS_USER may read, with citations."""
    from sovra.workspace import Workspace

    ws = Workspace.open(state(ctx).config)
    answer = None
    try:
        for event in ws.ask(question, as_user, endpoint=endpoint, extractive=extractive):
            if event.answer is not None:
                answer = event.answer
            elif event.delta and not json_out:
                out.print(event.delta, end="", highlight=False, markup=False)
    finally:
        ws.close()
    assert answer is not None
    if json_out:
        emit_json(answer.to_dict())
        return
    out.print()
    for c in answer.citations:
        heading = " › ".join(c.heading_path)
        out.print(
            f"  [{c.number}] {c.title}" + (f" — {heading}" if heading else "") + f"  {c.uri}",
            highlight=False,
            markup=False,
        )
    out.print(
        f"[dim]{'AI-generated' if answer.ai_generated else ''} · {answer.generation} ·"
        f" endpoint {answer.endpoint} ({answer.hosting}, {answer.jurisdiction})"
        + (f" · flags: {', '.join(answer.flags)}" if answer.flags else "")
        + "[/]",
        highlight=False,
    )


def main() -> None:
    """Entry point: a SovraError becomes one clear line and its kind's exit code (clikit), not
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
