"""Copy an embedded index into the postgres backend without re-embedding (`sovra index migrate`).

Documents are copied in document-id order, a batch per transaction; the same transaction records
the last document id it copied (a checkpoint in the target's `meta`, tagged with the source
database's id). A rerun after an interruption continues after the checkpoint, so nothing is
copied twice and nothing is lost: a batch is either wholly in the target with its checkpoint, or
not at all. Chunks keep their stored (normalised) embeddings, labels and positions; the stored
answer-sentence vectors are copied too. The source must not be synced meanwhile (its directory
lock, held for the whole copy, makes sure).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sovra.domain import Chunk
from sovra.index.base import IndexError_
from sovra.index.embedded import DB_NAME, EmbeddedIndex
from sovra.index.postgres import PostgresIndex
from sovra.storage import open_sqlite

Progress = Callable[[int, int], None]
"""`progress(documents_done, documents_total)`, after each committed batch."""

CHECKPOINT_KEY = "migrated_through"


@dataclasses.dataclass(frozen=True)
class MigrateResult:
    documents: int
    """Documents in the source."""
    copied: int
    """Documents copied by this run (the rest were copied by an earlier, interrupted one)."""
    chunks: int
    """Chunks in the target afterwards."""
    sentences: int
    """Stored sentence-vector rows copied by this run."""


def embedded_dimension(path: Path) -> int:
    """The embedding dimension an embedded index at `path` was built with (no model needed)."""
    db_path = path / DB_NAME
    if not db_path.exists():
        raise IndexError_(f"no embedded index at {path}; nothing to migrate")
    db = open_sqlite(db_path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'dimension'").fetchone()
    finally:
        db.close()
    if row is None:
        raise IndexError_(f"embedded index {path} has no dimension recorded; rebuild it")
    return int(row[0])


def migrate(
    source: EmbeddedIndex,
    target: PostgresIndex,
    *,
    batch: int = 200,
    progress: Progress | None = None,
) -> MigrateResult:
    """Copy every document of `source` into `target`, resuming after an earlier run's checkpoint."""
    if source.dimension != target.dimension:
        raise IndexError_(
            f"the embedded index holds {source.dimension}-dimensional embeddings, the postgres "
            f"index {target.schema} {target.dimension}-dimensional ones"
        )
    tag = _source_tag(source)
    checkpoint = target.meta_value(CHECKPOINT_KEY)
    after = ""
    if checkpoint is not None:
        stored_tag, _, after = checkpoint.partition("\x1f")
        if stored_tag != tag:
            raise IndexError_(
                f"postgres index {target.schema} holds a migration from another embedded index; "
                "migrate into an empty schema (set [index] pg_schema)"
            )
    elif target.count() > 0:
        raise IndexError_(
            f"postgres index {target.schema} already holds chunks; migrate into an empty schema "
            "(set [index] pg_schema) so no document is mixed with another index's"
        )
    documents = sorted(source.document_ids())
    todo = [d for d in documents if d > after]
    done = len(documents) - len(todo)
    copied = sentences = 0
    if progress:
        progress(done, len(documents))
    for at in range(0, len(todo), batch):
        ids = todo[at : at + batch]
        chunks = {d: source.chunks_of(d) for d in ids}
        rows = _sentence_rows(source, ids)
        target.copy_documents(chunks, rows, meta={CHECKPOINT_KEY: f"{tag}\x1f{ids[-1]}"})
        copied += len(ids)
        sentences += len(rows)
        if progress:
            progress(done + copied, len(documents))
    return MigrateResult(len(documents), copied, target.count(), sentences)


def _source_tag(source: EmbeddedIndex) -> str:
    row = source._db.execute("SELECT value FROM meta WHERE key = 'db_id'").fetchone()
    return str(row[0]) if row else str(source.path.resolve())


def _sentence_rows(
    source: EmbeddedIndex, document_ids: list[str]
) -> list[tuple[str, str, str, str, bytes, bytes]]:
    """(document_id, chunk_id, model, text_sha, spans, vectors) rows of these documents, read
    from the embedded database as stored (no re-embedding, and no re-cutting of sentences)."""
    marks = ",".join("?" * len(document_ids))
    with source._lock:
        rows = source._db.execute(
            "SELECT document_id, chunk_id, model, text_sha, spans, vectors FROM sentences"
            f" WHERE document_id IN ({marks})",
            document_ids,
        ).fetchall()
    return [(str(d), str(c), str(m), str(s), bytes(sp), bytes(v)) for d, c, m, s, sp, v in rows]


def same_chunk(a: Chunk, b: Chunk) -> bool:
    """Equal chunks up to float32 rounding of the embedding (what a migration must preserve)."""
    if dataclasses.replace(a, embedding=None) != dataclasses.replace(b, embedding=None):
        return False
    if (a.embedding is None) != (b.embedding is None):
        return False
    return a.embedding is None or bool(
        np.allclose(np.asarray(a.embedding), np.asarray(b.embedding), atol=1e-6)
    )
