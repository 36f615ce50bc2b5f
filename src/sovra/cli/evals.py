"""`sovra eval …`: the command line of the evaluation harness in `sovra.evals`.

`retrieval|answers|triage|pii` print one evaluation; `run` runs those that apply (and test sets)
as one MLflow-tracked run, `runs` lists them, `compare` diffs two and fails on a regression;
`testset generate|review|list` builds test sets from the customer's own indexed data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sovra.cli.kit import AsOpt, JsonOpt, emit_json, fail, out, progress_bar, state

if TYPE_CHECKING:
    from sovra.evals.collections import Collection
    from sovra.models.base import Embedder
    from sovra.search import FusionSettings

eval_app = typer.Typer(
    help="Evaluate retrieval, answers, PII detection and triage on judged sets.",
    no_args_is_help=True,
)


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
    reference: Annotated[
        bool,
        typer.Option(
            "--reference/--no-reference",
            help="Also score plain BM25 (bm25s + Snowball / bigrams) on each collection.",
        ),
    ] = True,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Index backend to evaluate: embedded, or postgres (the database of [index] url "
            "/ [workspace] database_url; a throwaway schema per collection).",
        ),
    ] = "embedded",
    text_ranking: Annotated[
        str,
        typer.Option(
            "--text-ranking",
            help="postgres only: bm25 (sovra's analyser, the backend's default) or ts_rank "
            "(PostgreSQL text search, a regconfig per detected language), to compare.",
        ),
    ] = "bm25",
    documents: Annotated[
        bool,
        typer.Option(
            "--documents",
            help="Document-level nDCG@10 instead: documents of several passages (XQuAD "
            "paragraphs by article, other collections cut by sovra's chunker), hybrid's first "
            "hit per document against the grouped ranking search serves.",
        ),
    ] = False,
    bonus: Annotated[
        list[float] | None,
        typer.Option(
            "--bonus",
            help="--documents: grouping bonus per extra passage to measure (repeatable; its "
            "cap is 3x, as shipped). Default: the shipped weights.",
        ),
    ] = None,
    data: EvalDataOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """nDCG@10, Recall@100 and MRR per collection: full text, vector, hybrid, BM25 reference;
    with --documents, per document: grouped search against first hit per document."""
    import uuid
    from dataclasses import asdict

    from sovra.evals.collections import standard_collections
    from sovra.evals.retrieval_eval import EvalBackend, evaluate_collection
    from sovra.search import FusionSettings
    from sovra.workspace import embedder_for

    cfg = state(ctx).config
    collections = standard_collections(_eval_root(data))
    names = collection or list(collections)
    for n in names:
        if n not in collections:
            fail(f"unknown collection {n!r}; choose from {', '.join(collections)}")
    if reference:
        try:
            import bm25s  # noqa: F401
        except ImportError:
            fail("the BM25 reference needs bm25s: pip install 'sovra[bench]', or --no-reference")
    if backend not in ("embedded", "postgres"):
        fail(f"unknown --backend {backend!r}; use embedded or postgres")
    url = cfg.postgres_index_url() if backend == "postgres" else None
    embedder = embedder_for(cfg)
    s = cfg.search
    settings = FusionSettings(fusion=s.fusion, rrf_k=s.rrf_k, candidates=s.candidates)
    if documents:
        _eval_documents(
            [collections[n] for n in names],
            embedder,
            settings,
            bonus,
            max_queries,
            cfg.home / "cache" / "eval",
            json_out,
        )
        return
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
                reference=reference,
                backend=EvalBackend(
                    backend,
                    url,
                    schema=f"sovra_eval_{uuid.uuid4().hex[:12]}",
                    vector_type=cfg.index.vector_type,
                    text_ranking=text_ranking,
                ),
            )
        reports.append(report)
        if not json_out:
            for method, m in report.methods.items():
                out.print(
                    f"{n:<14} {method:<8} nDCG@10 {m.ndcg10:.3f}  R@100 {m.recall100:.3f}"
                    f"  MRR {m.mrr:.3f}  ({m.queries} queries, {m.ms_per_query:.1f} ms/query)"
                )
    if json_out:
        emit_json([asdict(r) for r in reports])


def _eval_documents(
    collections: list[Collection],
    embedder: Embedder,
    settings: FusionSettings,
    bonus: list[float] | None,
    max_queries: int | None,
    cache_dir: Path,
    json_out: bool,
) -> None:
    from dataclasses import asdict

    from sovra.evals.retrieval_eval import evaluate_documents, passage_set

    weights = [(b, 3 * b) for b in bonus or []]
    reports = []
    for c in collections:
        with progress_bar(f"eval {c.name} documents", None, enabled=not json_out) as advance:
            report = evaluate_documents(
                passage_set(c),
                embedder,
                settings,
                bonuses=weights,
                cache_dir=cache_dir,
                max_queries=max_queries,
                progress=lambda done, total, what: advance(
                    total=total, completed=done, description=what
                ),
            )
        reports.append(report)
        if not json_out:
            grouped = "  ".join(f"{k} {v:.3f}" for k, v in report.grouped.items())
            out.print(
                f"{c.name:<14} documents nDCG@10 first hit {report.first_hit:.3f}  grouped "
                f"{grouped}  ({report.documents} documents, {report.multi_passage_documents} of "
                f"several passages, {report.queries} queries; {report.construction})"
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

    from sovra.evals.answer_eval import calibration_rows, choose_threshold, evaluate_language
    from sovra.workspace import embedder_for, generator_for

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

    from sovra.evals.triage_eval import TARGETS, evaluate_triage
    from sovra.flows.base import FlowError
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


@eval_app.command("pii")
def eval_pii(
    per_locale: Annotated[
        int, typer.Option("--per-locale", min=10, help="Texts per locale (7 locales).")
    ] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the generated set.")] = 20261125,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON here.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """PII detection: sovra vs Presidio's default configuration on a generated labelled set."""
    import json

    from sovra.evals.pii_eval import compare

    result = compare(per_locale, seed)
    if output is not None:
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if json_out:
        emit_json(result)
        return
    ours, theirs = result["sovra"], result["presidio_default"]
    assert isinstance(ours, dict) and isinstance(theirs, dict)
    out.print(f"{result['samples']} texts, {result['gold_entities']} labelled identifiers")
    out.print(f"{'entity':<28} {'sovra P/R/F2':>22}   {'presidio default P/R/F2':>24}")
    rows = [("overall", ours["overall"], theirs["overall"])]
    rows.append(
        ("checksum identifiers", ours["checksum_identifiers"], theirs["checksum_identifiers"])
    )
    rows += [(k, v, theirs["by_entity"].get(k, {})) for k, v in ours["by_entity"].items()]
    for name, a, b in rows:
        out.print(
            f"{name:<28} {a['precision']:>6.3f} {a['recall']:>6.3f} {a['f2']:>6.3f}"
            f"   {b.get('precision', 0):>8.3f} {b.get('recall', 0):>6.3f} {b.get('f2', 0):>6.3f}",
            highlight=False,
        )


# -- tracked runs ------------------------------------------------------------------------------

SUITES = ("retrieval", "answers", "pii", "triage")
TICKETS = Path("../shared/data/company/tickets/it_tickets.csv")


def _progress(label: str, json_out: bool) -> Any:
    return progress_bar(label, None, enabled=not json_out)


def _run_suite(
    suite: str, cfg: Any, root: Path | None, quick: bool, json_out: bool
) -> tuple[dict[str, float], Any, list[str]]:
    """(metrics, artefact, notes) of one shipped evaluation; notes say why one was skipped."""
    from dataclasses import asdict

    from sovra.evals import run as ev
    from sovra.workspace import embedder_for

    cache_dir = cfg.home / "cache" / "eval"
    if suite == "retrieval":
        from sovra.evals.collections import standard_collections
        from sovra.evals.retrieval_eval import evaluate_collection
        from sovra.search import FusionSettings

        if root is None:
            return {}, None, ["retrieval: no evaluation data folder (--data / SOVRA_EVAL_DATA)"]
        collections = standard_collections(root)
        names = ["cranfield", "xquad-en"] if quick else list(collections)
        s = cfg.search
        settings = FusionSettings(fusion=s.fusion, rrf_k=s.rrf_k, candidates=s.candidates)
        embedder = embedder_for(cfg)
        reports = []
        for n in names:
            with _progress(f"retrieval {n}", json_out) as advance:
                reports.append(
                    evaluate_collection(
                        collections[n],
                        embedder,
                        settings,
                        cache_dir=cache_dir,
                        max_queries=50 if quick else None,
                        progress=lambda d, t, w: advance(total=t, completed=d, description=w),
                    )
                )
        return ev.retrieval_metrics(reports), [asdict(r) for r in reports], []
    if suite == "answers":
        from sovra.evals.answer_eval import evaluate_language

        if root is None or not (root / "xquad" / "xquad.en.json").is_file():
            return {}, None, ["answers: no XQuAD data in the evaluation data folder"]
        embedder = embedder_for(cfg)
        answer_reports = []
        for lang in ["en"] if quick else ["en", "de", "es"]:
            with _progress(f"answers {lang}", json_out) as advance:
                answer_reports.append(
                    evaluate_language(
                        root / "xquad",
                        lang,
                        embedder,
                        max_questions=40 if quick else 300,
                        cache_dir=cache_dir,
                        min_score=cfg.answer.min_score,
                        min_score_lexical=cfg.answer.min_score_lexical,
                        max_answer_tokens=cfg.answer.max_answer_tokens,
                        progress=lambda d, t, w: advance(total=t, completed=d, description=w),
                    )
                )
        return ev.answer_metrics(answer_reports), [asdict(r) for r in answer_reports], []
    if suite == "pii":
        try:
            from sovra.evals.pii_eval import compare
        except ImportError as exc:
            return {}, None, [f"pii: needs the eval extra ({exc})"]
        try:
            result = compare(20 if quick else 300, 20261125)
        except ImportError as exc:
            return {}, None, [f"pii: needs the eval extra ({exc})"]
        return ev.pii_metrics(result), result, []
    if suite == "triage":
        from sovra.evals.triage_eval import TARGETS, evaluate_triage

        tickets = Path(os.environ.get("SOVRA_EVAL_TICKETS", str(TICKETS)))
        if not tickets.is_file():
            return {}, None, [f"triage: no labelled tickets at {tickets} (SOVRA_EVAL_TICKETS)"]
        with _progress("triage", json_out) as advance:
            report = evaluate_triage(
                tickets,
                targets=TARGETS,
                seeds=[42],
                cache_dir=cache_dir,
                progress=lambda d, t, w: advance(total=t, completed=d, description=w),
            )
        return ev.triage_metrics(report), asdict(report), []
    raise AssertionError(suite)


def _testset_part(ctx: typer.Context, name: str, user: str, answers: bool, json_out: bool) -> Any:
    from sovra.domain import QueryOptions
    from sovra.evals import run as ev
    from sovra.evals.testset import load
    from sovra.workspace import Workspace

    cfg = state(ctx).config
    testset = load(cfg.home, name)
    ws = Workspace.open(cfg)
    try:
        principal = ws.principal_for(user, "eval.testset", name)
        options = QueryOptions(k=10, sources=(testset.source,), extractive=True)

        def search(question: str) -> list[str]:
            result = ws.search(principal, question, options, monitored=False)
            return [h.chunk.id for h in result.hits]

        def ask(question: str) -> ev.Answered:
            final = None
            for event in ws.ask(principal, question, options, monitored=False):
                if event.answer is not None:
                    final = event.answer
            assert final is not None
            return ev.Answered(final.text, final.found, tuple(c.chunk_id for c in final.citations))

        with _progress(f"testset {name}", json_out) as advance:
            part = ev.evaluate_testset(
                testset,
                search,
                ask if answers else None,
                progress=lambda d, t: advance(total=t, completed=d),
            )
    finally:
        ws.close()
    return testset, part


@eval_app.command("run")
def eval_run(
    ctx: typer.Context,
    suite: Annotated[
        list[str] | None,
        typer.Option("--suite", help=f"Repeatable: {', '.join(SUITES)} (default: all that apply)."),
    ] = None,
    testset: Annotated[
        list[str] | None,
        typer.Option("--testset", help="Evaluate this accepted test set (repeatable)."),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Samples of each set (minutes, not hours): a smoke gate."),
    ] = False,
    user: Annotated[
        str, typer.Option("--as", help="Ask the test set's questions as this user.")
    ] = "admin",
    answers: Annotated[
        bool, typer.Option("--answers/--no-answers", help="Also score answers on test sets.")
    ] = True,
    data: EvalDataOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the evaluations that apply and track them as one MLflow run."""
    from sovra.evals import run as ev
    from sovra.evals.tracking import record_run, tracking_uri

    cfg = state(ctx).config
    chosen = suite if suite is not None else ([] if testset else list(SUITES))
    for s in chosen:
        if s not in SUITES:
            fail(f"unknown suite {s!r}; choose from {', '.join(SUITES)}")
    root = data or Path(os.environ.get("SOVRA_EVAL_DATA", "../shared/data/eval"))
    metrics: dict[str, float] = {}
    artefacts: dict[str, Any] = {}
    notes: list[str] = []
    for s in chosen:
        m, artefact, why = _run_suite(s, cfg, root if root.is_dir() else None, quick, json_out)
        metrics.update(m)
        notes += why
        if artefact is not None:
            artefacts[s] = artefact
    classification = ""
    for name in testset or []:
        ts, part = _testset_part(ctx, name, user, answers, json_out)
        metrics.update(part.metrics)
        notes += part.notes
        artefacts[f"testset-{name}"] = {"header": ts.header(), "per_query": part.rows}
        classification = max(
            [c for c in (classification, ts.classification) if c], key=cfg.scale.rank
        )
    if not metrics:
        fail("nothing was evaluated: " + ("; ".join(notes) or "no suite or test set given"))
    params = ev.run_params(
        cfg, suites=chosen + [f"testset:{n}" for n in testset or []], quick=quick
    )
    label = "+".join(chosen + [f"testset:{n}" for n in testset or []])
    tags = {"sovra.quick": str(quick).lower()}
    if classification:
        tags["sovra.classification"] = classification
    run = record_run(
        tracking_uri(cfg), label, params=params, metrics=metrics, artifacts=artefacts, tags=tags
    )
    if json_out:
        emit_json(
            {"run_id": run.run_id, "suite": run.suite, "metrics": run.metrics, "notes": notes}
        )
        return
    for note in notes:
        out.print(f"[dim]skipped:[/] {escape(note)}", highlight=False)
    table = Table("metric", "value", show_edge=False)
    for k, v in sorted(run.metrics.items()):
        table.add_row(escape(k), f"{v:.4f}")
    out.print(table)
    out.print(f"tracked run {run.run_id} in {tracking_uri(cfg)}", highlight=False)


@eval_app.command("runs")
def eval_runs(
    ctx: typer.Context,
    suite: Annotated[str | None, typer.Option(help="Only runs of this suite label.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Tracked evaluation runs, newest first."""
    from sovra.evals.tracking import list_runs, tracking_uri

    runs = list_runs(tracking_uri(state(ctx).config), suite, limit)
    if json_out:
        emit_json(
            [
                {
                    "run_id": r.run_id,
                    "suite": r.suite,
                    "started_at": r.started_at.isoformat(),
                    "metrics": r.metrics,
                }
                for r in runs
            ]
        )
        return
    table = Table("run", "started (UTC)", "suite", "metrics", show_edge=False)
    for r in runs:
        table.add_row(r.run_id, f"{r.started_at:%Y-%m-%d %H:%M:%S}", r.suite, str(len(r.metrics)))
    out.print(table)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


@eval_app.command("compare")
def eval_compare(
    ctx: typer.Context,
    run_a: Annotated[str, typer.Argument(help="The baseline run id.")],
    run_b: Annotated[str, typer.Argument(help="The candidate run id.")],
    threshold: Annotated[
        float | None,
        typer.Option(help="Largest allowed drop (default [govern] regression_threshold)."),
    ] = None,
    all_metrics: Annotated[bool, typer.Option("--all", help="Show unchanged metrics too.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Differences between two runs; exits 1 when a quality metric regressed (a gate)."""
    from dataclasses import asdict

    from sovra.evals.tracking import compare_runs, get_run, tracking_uri

    cfg = state(ctx).config
    uri = tracking_uri(cfg)
    gate = cfg.govern.regression_threshold if threshold is None else threshold
    a, b = get_run(uri, run_a), get_run(uri, run_b)
    diffs = compare_runs(a, b, gate)
    regressions = [d for d in diffs if d.regression]
    if json_out:
        emit_json(
            {
                "a": a.run_id,
                "b": b.run_id,
                "threshold": gate,
                "regressions": len(regressions),
                "metrics": [asdict(d) for d in diffs],
            }
        )
    else:
        table = Table("metric", "A", "B", "Δ", "", show_edge=False)
        for d in diffs:
            if not all_metrics and not d.regression and d.delta == 0:
                continue
            mark = (
                "[bold red]REGRESSION[/]"
                if d.regression
                else ("" if d.direction != "ungated" else "[dim]info[/]")
            )
            delta = "—" if d.delta is None else f"{d.delta:+.4f}"
            table.add_row(d.metric, _fmt(d.a), _fmt(d.b), delta, mark)
        out.print(f"A = {a.run_id} ({a.suite}, {a.started_at:%Y-%m-%d %H:%M})", highlight=False)
        out.print(f"B = {b.run_id} ({b.suite}, {b.started_at:%Y-%m-%d %H:%M})", highlight=False)
        out.print(table)
        if regressions:
            out.print(
                f"[bold red]{len(regressions)} regression(s)[/] beyond {gate:g}", highlight=False
            )
        else:
            out.print(f"[green]no regression[/] beyond {gate:g}", highlight=False)
    if regressions:
        raise typer.Exit(1)


# -- test sets from the customer's data ---------------------------------------------------------

testset_app = typer.Typer(
    help="Question/answer/passage test sets from an indexed source, for review.",
    no_args_is_help=True,
)
eval_app.add_typer(testset_app, name="testset")


@testset_app.command("generate")
def testset_generate(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="An indexed source.")],
    name: Annotated[str | None, typer.Option("--name", help="Default: the source's name.")] = None,
    size: Annotated[int, typer.Option("--size", min=1, max=2000, help="Passages.")] = 50,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    user: AsOpt = "admin",
    endpoint: Annotated[
        str | None,
        typer.Option(help="Generator endpoint for the questions (default [answer] endpoint)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Sample passages USER may read and make one question per passage (pending review)."""
    from sovra.evals.testset import build_testset, cloze_question, save
    from sovra.workspace import Workspace

    cfg = state(ctx).config
    name = name or source
    ws = Workspace.open(cfg)
    try:
        principal = ws.principal_for(user, "testset.sample", source)
        chunks = ws.sample_passages(principal, source, size, seed=seed)
        if not chunks:
            fail(
                f"user {user!r} can read no indexed passage of source {source!r};"
                " sync it (`sovra source sync`) or act as a user who may read it (--as)"
            )
        makers: list[tuple[str, Any]] = []
        chosen = endpoint or (
            cfg.answer.endpoint if cfg.answer.endpoint not in ("", "auto") else None
        )
        if chosen:
            makers.append((f"generator:{chosen}", _generated_question(ws, principal, chosen)))
        makers.append(("heuristic", cloze_question))
        with _progress(f"questions from {source}", json_out) as advance:
            ts = build_testset(
                name,
                source,
                chunks,
                cfg.scale,
                created_by=user,
                makers=makers,
                progress=lambda d, t: advance(total=t, completed=d),
            )
        path = save(cfg.home, ts, new=True)
    finally:
        ws.close()
    if json_out:
        emit_json({**ts.header(), "path": str(path)})
        return
    out.print(
        f"test set {ts.name!r}: {len(ts.items)} items from {len(chunks)} passages of {source},"
        f" classification {ts.classification}; written to {path}",
        highlight=False,
    )
    out.print(f"review it: sovra eval testset review {ts.name}")


def _generated_question(ws: Any, principal: Any, endpoint: str) -> Any:
    """A question maker that sends a passage to `endpoint` only when the router allows it."""
    from sovra.evals.testset import parse_generated, question_prompt

    ep = ws.config.endpoint(endpoint)

    def make(chunk: Any) -> tuple[str, str] | None:
        decision = ws.route(principal, [chunk], endpoint)
        if decision.chosen is None or decision.redact:
            return None  # refused (logged) or would need pseudonyms: the heuristic instead
        gen = ws.generator(ep)
        text = "".join(gen.stream(question_prompt(chunk.text), max_tokens=120))
        return parse_generated(text)

    return make


@testset_app.command("list")
def testset_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Test sets in the data directory with their review status."""
    from sovra.evals.testset import list_testsets, load

    home = state(ctx).config.home
    rows = []
    for n in list_testsets(home):
        ts = load(home, n)
        rows.append({**ts.header(), **ts.counts()})
    if json_out:
        emit_json(rows)
        return
    table = Table(
        "name", "source", "classification", "pending", "accepted", "rejected", show_edge=False
    )
    for r in rows:
        table.add_row(
            r["testset"],
            r["source"],
            r["classification"],
            str(r["pending"]),
            str(r["accepted"]),
            str(r["rejected"]),
        )
    out.print(table)


@testset_app.command("review")
def testset_review(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The test set.")],
    accept: Annotated[
        list[str] | None, typer.Option("--accept", help="Item id (repeatable).")
    ] = None,
    reject: Annotated[
        list[str] | None, typer.Option("--reject", help="Item id (repeatable).")
    ] = None,
    edit: Annotated[str | None, typer.Option("--edit", help="Item id to edit.")] = None,
    question: Annotated[str | None, typer.Option(help="New question (with --edit).")] = None,
    answer: Annotated[str | None, typer.Option(help="New answer (with --edit).")] = None,
    accept_all: Annotated[
        bool, typer.Option("--accept-all", help="Accept every pending item.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Accept, reject or edit items: by option (scripts), or one by one in the terminal."""
    from sovra.evals.testset import load, save

    home = state(ctx).config.home
    ts = load(home, name)
    scripted = bool(accept or reject or edit or accept_all)
    if (question or answer) and not edit:
        fail("--question/--answer need --edit ID")
    for item_id in accept or []:
        ts.update(item_id, status="accepted")
    for item_id in reject or []:
        ts.update(item_id, status="rejected")
    if edit:
        item = ts.item(edit)
        if not (question or answer):
            fail("--edit needs --question and/or --answer")
        ts.update(
            edit,
            question=question or item.question,
            answer=answer or item.answer,
            edited=True,
            status="accepted",
        )
    if accept_all:
        for it in ts.items:
            if it.status == "pending":
                ts.update(it.id, status="accepted")
    if not scripted:
        _review_interactively(ts)
    save(home, ts)
    counts = ts.counts()
    if json_out:
        emit_json({**ts.header(), **counts})
    else:
        out.print(
            f"{ts.name}: {counts['accepted']} accepted, {counts['rejected']} rejected,"
            f" {counts['pending']} pending",
            highlight=False,
        )


def _review_interactively(ts: Any) -> None:
    from rich.panel import Panel
    from rich.prompt import Prompt

    pending = [i for i in ts.items if i.status == "pending"]
    for n, item in enumerate(pending, 1):
        out.print(
            Panel(
                item.passage[:1200],
                title=f"{item.id} ({n}/{len(pending)}) · {item.document_id} · {item.classification}",
            )
        )
        out.print(f"Q: {item.question}\nA: {item.answer}", highlight=False)
        choice = Prompt.ask(
            "[a]ccept, [r]eject, [e]dit, [s]kip, [q]uit",
            choices=["a", "r", "e", "s", "q"],
            default="a",
        )
        if choice == "q":
            break
        if choice == "a":
            ts.update(item.id, status="accepted")
        elif choice == "r":
            ts.update(item.id, status="rejected")
        elif choice == "e":
            q = Prompt.ask("question", default=item.question)
            a = Prompt.ask("answer", default=item.answer)
            ts.update(item.id, question=q, answer=a, edited=True, status="accepted")
