"""`sovra index migrate --to postgres`: move the embedded index into PostgreSQL + pgvector."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sovra.cli.kit import JsonOpt, emit_json, out, progress_bar, state

index_app = typer.Typer(help="Manage the search index (backends, migration).", no_args_is_help=True)


@index_app.command("migrate")
def migrate_command(
    ctx: typer.Context,
    to: Annotated[
        Literal["postgres"], typer.Option("--to", help="The backend to copy the index into.")
    ],
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Documents per transaction.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Copy the embedded index (chunks, vectors, labels, sentence vectors) into the postgres
    backend named by [index] url / [workspace] database_url, without re-embedding. Rerun after
    an interruption to continue where it stopped; then set [index] backend = "postgres"."""
    from sovra.index.embedded import EmbeddedIndex
    from sovra.index.migrate import embedded_dimension, migrate
    from sovra.index.postgres import HnswBuild, PostgresIndex

    config = state(ctx).config
    path = config.home / "index"
    dimension = embedded_dimension(path)
    url = config.postgres_index_url()
    with (
        EmbeddedIndex(path, dimension) as source,
        PostgresIndex(
            url,
            dimension,
            schema=config.index.pg_schema,
            vector_type=config.index.vector_type,
            hnsw=HnswBuild(*config.index.hnsw_build),
        ) as target,
        progress_bar(f"copying to postgres ({target.schema})", None, enabled=not as_json) as bar,
    ):
        result = migrate(
            source,
            target,
            batch=batch,
            progress=lambda done, total: bar(completed=done, total=total),
        )
    if as_json:
        emit_json({"to": to, "schema": config.index.pg_schema, **result.__dict__})
        return
    out.print(
        f"{result.copied} of {result.documents} documents copied "
        f"({result.documents - result.copied} by an earlier run), {result.chunks} chunks and "
        f"{result.sentences} sentence-vector rows in schema {config.index.pg_schema}; "
        'set [index] backend = "postgres" to search there.',
        highlight=False,
    )


@index_app.command("install")
def install_command(
    ctx: typer.Context,
    owner_url: Annotated[
        str,
        typer.Option(
            "--owner-url",
            help="env:NAME or file:/path holding the URL of the role that will OWN the tables.",
        ),
    ],
    app_role: Annotated[
        str, typer.Option("--app-role", help="The role sovra connects as ([index] url).")
    ],
    dimension: Annotated[int, typer.Option(min=1, help="Embedding dimension of the model.")],
) -> None:
    """Create the postgres index schema as its owner and grant the app role only row reads and
    writes, so sovra's own connection can neither drop the row-security policies nor switch
    them off (docs/scale-out.md, "Index backend")."""
    from sovra.config import ConfigError, is_secret_reference
    from sovra.index.postgres import HnswBuild, PostgresIndex
    from sovra.sources.sql import read_secret

    config = state(ctx).config
    if not is_secret_reference(owner_url):
        raise ConfigError("--owner-url must be env:NAME or file:/path (it carries credentials)")
    PostgresIndex.install(
        read_secret(owner_url, "--owner-url"),
        dimension,
        app_role=app_role,
        schema=config.index.pg_schema,
        vector_type=config.index.vector_type,
        hnsw=HnswBuild(*config.index.hnsw_build),
    )
    out.print(
        f"schema {config.index.pg_schema} installed; {app_role} may read and write rows only",
        highlight=False,
    )
