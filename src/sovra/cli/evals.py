"""`sovra eval retrieval|answers|triage|pii`: the command line of the evaluation harness in `sovra.evals`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sovra.cli.kit import JsonOpt, emit_json, fail, out, progress_bar, state

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
    data: EvalDataOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """nDCG@10, Recall@100 and MRR per collection: full text, vector, hybrid, BM25 reference."""
    from dataclasses import asdict

    from sovra.evals.collections import standard_collections
    from sovra.evals.retrieval_eval import evaluate_collection
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
                reference=reference,
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
