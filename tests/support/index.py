"""Builders shared by the index tests: chunks with chosen labels and random unit vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np

from sovra.domain import Chunk, ScoredChunk, SearchFilter
from sovra.index import Index

Opener = Callable[..., Index]
"""`opener(dimension=8)` opens the test index of the current backend (again after close)."""

DIM = 8


def unit(rng: np.random.Generator, dim: int = DIM) -> list[float]:
    v = rng.normal(size=dim)
    return list((v / np.linalg.norm(v)).astype(np.float32))


def chunk(
    doc: str,
    pos: int,
    text: str = "common words here",
    *,
    rng: np.random.Generator | None = None,
    access: Sequence[str] = ("public",),
    classification: str = "internal",
    residency: str = "eu",
    source: str = "files",
    language: str = "en",
    modified_at: datetime | None = None,
    embedding: Sequence[float] | None = None,
    title: str = "",
    heading_path: tuple[str, ...] = (),
    with_embedding: bool = True,
) -> Chunk:
    if embedding is None and with_embedding:
        embedding = unit(rng or np.random.default_rng(hash((doc, pos)) % 2**32))
    return Chunk(
        id=f"{doc}#{pos}",
        document_id=doc,
        source=source,
        position=pos,
        text=text,
        title=title,
        uri=f"file:///{doc}",
        heading_path=heading_path,
        language=language,
        access=tuple(access),
        classification=classification,
        residency=residency,
        modified_at=modified_at,
        embedding=embedding,
    )


def ids(hits: Sequence[ScoredChunk]) -> list[str]:
    return [h.chunk.id for h in hits]


def everyone(*extra: str) -> SearchFilter:
    return SearchFilter(access_tokens=frozenset({"public", *extra}))
