"""The search index behind one protocol: the embedded default and other backends.

`open_index(path, dimension=...)` is the one way the rest of sovra opens an index; the
backend name comes from `sovra.toml` (`embedded` by default, `lance` for the LanceDB
comparison backend, `postgres` for PostgreSQL + pgvector, where `url` says which database and
`schema` which index in it; `path` is then unused).
"""

from __future__ import annotations

from pathlib import Path

from sovra.index.analysis import analyze, normalize_language, supported_languages
from sovra.index.ann import AnnSettings
from sovra.index.base import Index, IndexError_
from sovra.index.embedded import EmbeddedIndex

BACKENDS = ("embedded", "lance", "postgres")


def open_index(
    path: Path | str,
    *,
    dimension: int,
    backend: str = "embedded",
    url: str | None = None,
    schema: str = "sovra_index",
    vector_type: str = "vector",
    text_ranking: str = "bm25",
    ann: AnnSettings | None = None,
    ef_search: int | None = None,
    hnsw: tuple[int, int] | None = None,
    read_only: bool = False,
) -> Index:
    """Open (or create) the index in directory `path` for `dimension`-long embeddings
    (`ann`: the embedded engine's approximate vector search settings; `ef_search`: the postgres
    backend's HNSW candidates per scan step, None = its default; `hnsw`: its graph's build
    settings (m, ef_construction), None = its defaults; `read_only`: the embedded
    engine shares the directory with other reading processes and refuses writes)."""
    if backend == "embedded":
        return EmbeddedIndex(path, dimension, ann=ann, read_only=read_only)
    if backend == "lance":
        from sovra.index.lance import LanceIndex

        return LanceIndex(path, dimension)
    if backend == "postgres":
        if not url:
            raise IndexError_(
                "the postgres index backend needs a database: set [index] url (env:NAME or "
                "file:/path) or [workspace] database_url"
            )
        from sovra.index.postgres import HNSW_EF_SEARCH, HnswBuild, PostgresIndex

        return PostgresIndex(
            url,
            dimension,
            schema=schema,
            vector_type=vector_type,
            text_ranking=text_ranking,
            ef_search=HNSW_EF_SEARCH if ef_search is None else ef_search,
            hnsw=HnswBuild() if hnsw is None else HnswBuild(*hnsw),
        )
    raise IndexError_(f"unknown index backend {backend!r}; use one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "AnnSettings",
    "EmbeddedIndex",
    "Index",
    "IndexError_",
    "analyze",
    "normalize_language",
    "open_index",
    "supported_languages",
]
