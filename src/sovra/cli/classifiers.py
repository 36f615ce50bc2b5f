"""`sovra flow classifier train|list|show`: train and inspect the classifiers `classify` steps use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sovra.cli.kit import JsonOpt, emit_json, fail, out, progress_bar, state
from sovra.flows.base import FlowError

classifier_app = typer.Typer(
    help="Classifiers trained from labelled history, for workflow classify steps.",
    no_args_is_help=True,
)


@classifier_app.command("train")
def train_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Classifier name, e.g. ticket-category.")],
    source: Annotated[Path, typer.Option("--from", help="CSV file with labelled history.")],
    label: Annotated[str, typer.Option(help="Column holding the label.")],
    text: Annotated[
        str, typer.Option(help="Comma-separated columns joined into the text.")
    ] = "title,body",
    holdout: Annotated[
        float, typer.Option(help="Share held out to measure macro-F1 (0 = skip).")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 42,
    embeddings: Annotated[
        bool,
        typer.Option(
            "--embeddings/--no-embeddings",
            help="Also use the workspace embedder's vectors (slower; no gain measured on tickets).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train NAME on a CSV, report held-out macro-F1, then fit on every row and save it."""
    from sovra.flows.classify import (
        check_name,
        classifier_dir,
        fit,
        read_labelled_csv,
        score,
        stratified_split,
        train_classifier,
    )

    cfg = state(ctx).config
    columns = [c.strip() for c in text.split(",") if c.strip()]
    if not columns:
        fail("--text needs at least one column name, e.g. --text title,body")
    if not 0.0 <= holdout < 1.0:
        fail(f"--holdout must be at least 0 and below 1 (got {holdout})")
    try:
        check_name(name)
        texts, labels, skipped = read_labelled_csv(source, columns, label)
    except FlowError as exc:
        fail(str(exc))
    embedder = None
    if embeddings:
        from sovra.workspace import embedder_for

        embedder = embedder_for(cfg)
    steps = (2 if embeddings else 0) + (2 if holdout > 0 else 0) + 2
    metrics: dict[str, Any] = {}
    with progress_bar(f"train {name}", steps, enabled=not json_out) as advance:
        vectors = None
        if embedder is not None:
            advance(0, description=f"embedding {len(texts)} texts")
            vectors = embedder.embed(texts)
            advance(2)
        try:
            if holdout > 0:
                advance(0, description="held-out evaluation")
                train_idx, test_idx = stratified_split(labels, holdout, seed)
                trial = fit(
                    [texts[i] for i in train_idx],
                    [labels[i] for i in train_idx],
                    embeddings=None if vectors is None else vectors[train_idx],
                    embedder_name=None if embedder is None else embedder.name,
                )
                predictions = trial.predict(
                    [texts[i] for i in test_idx],
                    embeddings=None if vectors is None else vectors[test_idx],
                )
                s = score(
                    [labels[i] for i in test_idx],
                    [p.label for p in predictions],
                    [p.confidence for p in predictions],
                )
                metrics = {
                    "holdout": holdout,
                    "seed": seed,
                    "macro_f1": round(s.macro_f1, 4),
                    "accuracy": round(s.accuracy, 4),
                    "ece": None if s.ece is None else round(s.ece, 4),
                    "test_size": s.test_size,
                    "per_label_f1": s.per_label_f1,
                }
                advance(2)
            advance(0, description=f"fitting on all {len(texts)} rows")
            model = train_classifier(texts, labels, embedder=embedder, embeddings=vectors)
            model.manifest["metrics"] = metrics
            model.manifest["source"] = {
                "file": str(source),
                "text": columns,
                "label": label,
                "skipped_unlabelled": skipped,
            }
            directory = model.save(classifier_dir(cfg.home, name))
            advance(2)
        except FlowError as exc:
            fail(str(exc))
    if json_out:
        emit_json({"name": name, "path": str(directory)} | model.manifest)
        return
    out.print(f"classifier {name}: {len(model.labels)} labels, trained on {len(texts)} rows")
    if metrics:
        out.print(
            f"held-out ({holdout:.0%}, seed {seed}, {metrics['test_size']} rows):"
            f" macro-F1 {metrics['macro_f1']:.3f}  accuracy {metrics['accuracy']:.3f}"
            f"  calibration error {metrics['ece']:.3f}"
        )
    out.print(f"saved to {directory}")


@classifier_app.command("list")
def list_command(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Every trained classifier with its labels and held-out macro-F1."""
    from sovra.flows.classify import list_classifiers

    try:
        found = list_classifiers(state(ctx).config.home)
    except FlowError as exc:
        fail(str(exc))
    if json_out:
        emit_json(found)
        return
    if not found:
        out.print(
            "no classifiers; train one with `sovra flow classifier train NAME --from FILE.csv`"
        )
    for m in found:
        f1 = m.get("metrics", {}).get("macro_f1")
        out.print(
            f"{m['name']:<24} {len(m.get('labels', [])):>3} labels"
            f"  {m.get('training', {}).get('size', '?'):>6} rows"
            f"  macro-F1 {'n/a' if f1 is None else f'{f1:.3f}'}  {m.get('created', '')}"
        )


@classifier_app.command("show")
def show_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Classifier name.")],
    json_out: JsonOpt = False,
) -> None:
    """A classifier's manifest: labels, training set, metrics, model hash."""
    from sovra.flows.classify import read_manifest

    try:
        manifest = read_manifest(state(ctx).config.home, name)
    except FlowError as exc:
        fail(str(exc))
    if json_out:
        emit_json({"name": name} | manifest)
        return
    training = manifest.get("training", {})
    metrics = manifest.get("metrics", {})
    out.print(f"classifier {name}")
    out.print(f"  labels      {', '.join(manifest.get('labels', []))}")
    out.print(
        f"  trained     {manifest.get('created', '?')} on {training.get('size', '?')} rows"
        f" (sha256 {str(training.get('sha256', ''))[:16]}…)"
    )
    out.print(f"  design      {manifest.get('design', '?')}")
    if metrics:
        out.print(
            f"  held-out    macro-F1 {metrics.get('macro_f1')}  accuracy {metrics.get('accuracy')}"
            f"  calibration error {metrics.get('ece')}  ({metrics.get('test_size')} rows)"
        )
    out.print(f"  model       sha256 {manifest.get('model_sha256', '?')}")
