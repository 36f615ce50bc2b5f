"""`sovra search` and `sovra ask`: questions asked as a user of the directory."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from sovra.cli.kit import AsOpt, JsonOpt, emit_json, fail, out, state
from sovra.domain import QueryOptions
from sovra.search.facets import facets_of

if TYPE_CHECKING:
    from sovra.search import SearchResult
    from sovra.search.grouping import DocumentHit

SourceOpt = Annotated[list[str] | None, typer.Option("--source", help="Only these sources.")]
MaxClassificationOpt = Annotated[
    str | None,
    typer.Option("--max-classification", help="Only documents up to this classification."),
]
AfterOpt = Annotated[
    datetime | None, typer.Option("--after", help="Only documents modified at/after this time.")
]
BeforeOpt = Annotated[
    datetime | None, typer.Option("--before", help="Only documents modified before this time.")
]


def search_command(
    ctx: typer.Context,
    query: str,
    as_user: AsOpt,
    k: Annotated[int, typer.Option("--k", min=1, max=1000)] = 10,
    mode: Annotated[str, typer.Option(help="hybrid, text or vector.")] = "hybrid",
    source: SourceOpt = None,
    lang: Annotated[str | None, typer.Option(help="Query language (default: detected).")] = None,
    max_classification: MaxClassificationOpt = None,
    after: AfterOpt = None,
    before: BeforeOpt = None,
    group: Annotated[
        bool, typer.Option("--group/--no-group", help="One result per document (default).")
    ] = True,
    show_facets: Annotated[
        bool,
        typer.Option(
            "--facets",
            help="Also count the matching documents per source, language, classification"
            " and modified date (only documents AS_USER may read).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Search the documents AS_USER may read (one result per document unless --no-group)."""
    from sovra.workspace import Workspace

    if mode not in ("hybrid", "text", "vector"):
        fail(f"--mode {mode!r} is not one of hybrid, text, vector")
    options = QueryOptions(
        k=k,
        mode=mode,  # type: ignore[arg-type]
        sources=tuple(source) if source else None,
        language=lang,
        max_classification=max_classification,
        modified_after=after,
        modified_before=before,
    )
    ws = Workspace.open(state(ctx).config)
    try:
        principal = ws.principal_for(as_user, "search", query)
        if group:
            result, documents = ws.search_documents(principal, query, options)
        else:
            result = ws.search(principal, query, options)
    finally:
        ws.close()
    facets = facets_of(result).to_dict() if show_facets else None
    if group:
        print_documents(result, documents, as_user, json_out=json_out, facets=facets)
        return
    if json_out:
        emit_json({**result.to_dict(), **({"facets": facets} if facets else {})})
        return
    if facets:
        print_facets(facets)
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


def print_facets(facets: dict[str, Any]) -> None:
    for name, values in facets.items():
        if values:
            shown = ", ".join(f"{escape(v['value'])} {v['count']}" for v in values)
            out.print(f"[dim]{name}:[/] {shown}", highlight=False)


def print_documents(
    result: SearchResult,
    documents: list[DocumentHit],
    as_user: str,
    *,
    json_out: bool,
    facets: dict[str, Any] | None = None,
) -> None:
    from sovra.search.grouping import grouped_dict

    if json_out:
        emit_json({**grouped_dict(result, documents), **({"facets": facets} if facets else {})})
        return
    if facets:
        print_facets(facets)
    if not documents:
        out.print(f"no results among the documents {as_user} can access")
        return
    for d in documents:
        c = d.best.chunk
        out.print(
            f"[bold]{d.rank:>2}. {escape(c.title)}[/] [dim]({escape(c.source)},"
            f" {escape(c.classification)}, score {d.score:.4f})[/]",
            highlight=False,
        )
        for p in d.passages:
            heading = " › ".join(p.heading)
            if heading:
                out.print(f"    [cyan]{escape(heading)}[/]", highlight=False)
            text = "".join(
                f"[bold yellow]{escape(s.text)}[/]" if s.marked else escape(s.text)
                for s in p.snippet
            )
            out.print(f"    {text}", highlight=False)
        if d.more:
            out.print(f"    [dim]{d.more} more passages[/]", highlight=False)
        out.print(f"    [dim]{escape(c.uri)}[/]", highlight=False)


def ask_command(
    ctx: typer.Context,
    question: str,
    as_user: AsOpt,
    endpoint: Annotated[
        str | None, typer.Option(help="Answer with this configured endpoint.")
    ] = None,
    extractive: Annotated[
        bool, typer.Option("--extractive", help="Quote the sources; no generation.")
    ] = False,
    source: SourceOpt = None,
    max_classification: MaxClassificationOpt = None,
    after: AfterOpt = None,
    before: BeforeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Answer QUESTION from the documents AS_USER may read, with citations."""
    from sovra.workspace import Workspace

    options = QueryOptions(
        endpoint=endpoint,
        extractive=extractive,
        sources=tuple(source) if source else None,
        max_classification=max_classification,
        modified_after=after,
        modified_before=before,
    )
    ws = Workspace.open(state(ctx).config)
    answer = None
    try:
        principal = ws.principal_for(as_user, "ask", question)
        for event in ws.ask(principal, question, options):
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
