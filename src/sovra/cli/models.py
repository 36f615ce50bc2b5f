"""`sovra model list|add|add-default|verify|remove|export`: the local model registry from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sovra.cli.kit import JsonOpt, emit_json, fail, out, progress_bar, state
from sovra.config import ConfigError
from sovra.models.base import ModelError
from sovra.models.registry import (
    DEFAULT_GGUF_NAME,
    ModelEntry,
    ModelRegistry,
    ensure_default_gguf,
)

app = typer.Typer(
    help="Register and inspect local models (GGUF generation models, embedding model folders).",
    no_args_is_help=True,
)


def _registry(ctx: typer.Context) -> ModelRegistry:
    try:
        return ModelRegistry(state(ctx).config.home)
    except ConfigError as exc:
        fail(str(exc))


def _row(entry: ModelEntry, registry: ModelRegistry) -> dict[str, Any]:
    data = entry.model_dump()
    data["resolved_path"] = str(registry.resolve(entry))
    return data


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _print_entry(entry: ModelEntry, registry: ModelRegistry, verb: str) -> None:
    tuned = (
        "instruction-tuned"
        if entry.instruction_tuned
        else "base model (does not follow instructions)"
    )
    out.print(
        f"{verb} [bold]{entry.name}[/]: {entry.kind}, {_size(entry.size_bytes)}, "
        f"{entry.quantisation or 'unquantised/unknown'}, context {entry.context_length or '?'}, "
        f"{tuned}\n  {registry.resolve(entry)}\n  sha256 {entry.sha256}",
        highlight=False,
    )


def _hashing(description: str, enabled: bool) -> Any:
    return progress_bar(description, None, enabled=enabled)


@app.command("list")
def list_models(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Show the registered models."""
    registry = _registry(ctx)
    try:
        entries = registry.entries()
    except ModelError as exc:
        fail(str(exc))
    if json_out:
        emit_json([_row(e, registry) for e in entries])
        return
    if not entries:
        out.print(
            "no models registered; `sovra model add NAME PATH` registers a local GGUF, "
            "`sovra model add-default` the packaged Gemma 3 270M base model"
        )
        return
    from rich.table import Table

    table = Table()
    # Narrow terminals (and pipes, 80 columns) fold the long cells instead of eliding the name.
    for column in ("name", "kind", "quant", "context", "instr."):
        table.add_column(column, no_wrap=True)
    for column in ("licence", "languages", "size", "path"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            e.name,
            e.kind,
            e.quantisation or "",
            str(e.context_length or ""),
            "yes" if e.instruction_tuned else "no",
            e.licence,
            ",".join(e.languages),
            _size(e.size_bytes),
            str(registry.resolve(e)),
        )
    out.print(table)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name to refer to the model by (lower case).")],
    path: Annotated[
        Path,
        typer.Argument(
            help="A .gguf file, a folder with one .gguf, or a sentence-transformers folder."
        ),
    ],
    licence: Annotated[str, typer.Option(help="Licence the model is used under.")] = "unknown",
    context_length: Annotated[
        int | None, typer.Option(help="Tokens to use (default: the GGUF's trained length).", min=1)
    ] = None,
    language: Annotated[
        list[str] | None, typer.Option("--language", help="ISO 639-1 code; repeat for several.")
    ] = None,
    quantisation: Annotated[
        str | None, typer.Option(help="Default: read from the GGUF header.")
    ] = None,
    instruction_tuned: Annotated[
        bool,
        typer.Option(
            "--instruction-tuned/--base",
            help="Whether the model follows instructions (chat/IT models) or only continues text.",
        ),
    ] = True,
    replace: Annotated[bool, typer.Option(help="Overwrite an entry of the same name.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Register a local model: hashes it (sha256, verified on every load) and records its facts."""
    registry = _registry(ctx)
    try:
        with _hashing(f"sha256 {path.name}", not json_out) as advance:
            seen = [0]

            def progress(done: int, total: int) -> None:
                advance(done - seen[0], total=total)
                seen[0] = done

            entry = registry.add(
                name,
                path,
                licence=licence,
                context_length=context_length,
                languages=tuple(language or ()),
                quantisation=quantisation,
                instruction_tuned=instruction_tuned,
                replace=replace,
                progress=progress,
            )
    except ModelError as exc:
        fail(str(exc))
    _show_registered(entry, registry, json_out)


def _show_registered(entry: ModelEntry, registry: ModelRegistry, json_out: bool) -> None:
    if json_out:
        emit_json(_row(entry, registry))
    else:
        _print_entry(entry, registry, "registered")


@app.command("add-default")
def add_default(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Assemble the packaged Gemma 3 270M (base, Q4_K_M) into the data directory and register it.

    It is a base model: good for checking the generation machinery, not for answering questions.
    """
    registry = _registry(ctx)
    try:
        with _hashing("assemble + sha256", not json_out) as advance:
            seen = [0]

            def progress(done: int, total: int) -> None:
                advance(max(0, done - seen[0]), total=total)
                seen[0] = done

            entry = ensure_default_gguf(registry.home, progress)
    except ModelError as exc:
        fail(str(exc))
    _show_registered(entry, registry, json_out)


@app.command("verify")
def verify(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=f"A registered model, e.g. {DEFAULT_GGUF_NAME}.")],
    json_out: JsonOpt = False,
) -> None:
    """Re-hash a registered model and compare with its recorded sha256 (exit 1 if it changed)."""
    registry = _registry(ctx)
    try:
        entry, path = registry.verify(name)
    except ModelError as exc:
        fail(str(exc))
    if json_out:
        emit_json({"name": entry.name, "path": str(path), "sha256": entry.sha256, "ok": True})
    else:
        out.print(f"{entry.name}: ok ({path}, sha256 {entry.sha256})", highlight=False)


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A registered model.")],
    json_out: JsonOpt = False,
) -> None:
    """Forget a model; its file is left where it is."""
    registry = _registry(ctx)
    try:
        entry = registry.remove(name)
    except ModelError as exc:
        fail(str(exc))
    if json_out:
        emit_json(_row(entry, registry))
    else:
        out.print(f"removed {entry.name} (file kept: {registry.resolve(entry)})", highlight=False)


@app.command("export")
def export(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help="A registered sentence-transformers model (default: the [embedding] model)."
        ),
    ] = None,
    int8: Annotated[
        bool | None,
        typer.Option(
            "--int8/--fp32", help="Also build the int8 model (default: [embedding] quantize)."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export an embedding model to ONNX Runtime now (otherwise it happens on first use).

    The export is cached under the data directory by the model's sha256 and checked against
    PyTorch (cosine >= 0.999) before use; the model folder itself is only read.
    """
    from sovra.models.embedding import check_model_dir, default_model_dir
    from sovra.models.onnx import export_model
    from sovra.workspace import onnx_cache_dir

    cfg = state(ctx).config
    registry = _registry(ctx)
    quantize = cfg.embedding.quantize if int8 is None else ("int8" if int8 else "none")
    try:
        if name is None or (name == cfg.embedding.name and name not in _names(registry)):
            path = cfg.resolve(cfg.embedding.path) if cfg.embedding.path else default_model_dir()
            label = cfg.embedding.name
        else:
            entry, path = registry.verify(name)
            if entry.kind != "sentence-transformers":
                fail(f"model {name!r} is a {entry.kind} model; only embedding models export")
            label = entry.name
        with progress_bar(f"export {label} to ONNX", None, enabled=not json_out):
            folder = export_model(check_model_dir(path), onnx_cache_dir(cfg), quantize)
    except ModelError as exc:
        fail(f"{exc}; the model keeps running on PyTorch")
    files = sorted(p.name for p in folder.glob("*.onnx"))
    if json_out:
        emit_json(
            {"name": label, "model_dir": str(path), "export_dir": str(folder), "files": files}
        )
    else:
        out.print(f"{label}: ONNX {', '.join(files)} in {folder}", highlight=False)


def _names(registry: ModelRegistry) -> set[str]:
    try:
        return {e.name for e in registry.entries()}
    except ModelError:
        return set()
