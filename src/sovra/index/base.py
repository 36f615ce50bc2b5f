"""The one protocol every search index backend implements (embedded default, scale-out later)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sovra.domain import Chunk, ScoredChunk, SearchFilter
from sovra.errors import Unavailable


class IndexError_(Unavailable):  # noqa: N801 (name fixed by the lead; others import it)
    """The index cannot serve the request (corrupt store, dimension mismatch, ...)."""


@runtime_checkable
class Index(Protocol):
    """A chunk store with full-text and vector search that filters inside the index.

    Every search takes a SearchFilter and must return only chunks it admits
    (`SearchFilter.admits` is the reference), and must return k results whenever k admitted
    chunks match (pre-filtering, not post-filtering). Writes are atomic per document.

    Shared contract, checked by tests/index/test_index_conformance.py for every backend:
    * results are ordered by descending score; k <= 0 or a query with no searchable term
      (only stop words) gives [];
    * embeddings are stored normalised (cosine); a chunk without one is never a vector hit;
    * a chunk id belongs to one document; a chunk whose `document_id` differs from the
      document being replaced, an embedding or query vector of the wrong dimension, or a
      closed index raise IndexError_ and change nothing;
    * title and heading path are searchable text as well as the chunk text;
    * deleted or replaced chunks are never returned again, also after reopening.
    * search hits may leave `Chunk.embedding` unset (None); `chunks_of` returns it.
    """

    def replace_document(self, document_id: str, chunks: Sequence[Chunk]) -> None:
        """Atomically replace every chunk of `document_id` by `chunks` (empty deletes it)."""
        ...

    def replace_documents(self, documents: Mapping[str, Sequence[Chunk]]) -> None:
        """Replace several documents at once (bulk ingest); all or nothing (the embedded and
        LanceDB backends commit the whole batch as one transaction)."""
        ...

    def delete_documents(self, document_ids: Iterable[str]) -> int:
        """Delete all chunks of these documents; returns the number of chunks removed."""
        ...

    def search_text(
        self, query: str, language: str, k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        """Full-text (BM25) search, analysed for `language` (ISO 639-1, `und` if unknown)."""
        ...

    def search_vector(
        self, vector: Sequence[float], k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        """Nearest chunks by cosine similarity of normalised embeddings."""
        ...

    def count(self, flt: SearchFilter | None = None) -> int:
        """Number of chunks, or of chunks the filter admits."""
        ...

    def document_ids(self) -> set[str]:
        """Ids of all documents with at least one chunk."""
        ...

    def chunks_of(self, document_id: str) -> list[Chunk]:
        """The chunks of one document in position order (no filter: callers check access)."""
        ...

    def close(self) -> None: ...


def normalised_embedding(chunk: Chunk, dimension: int) -> npt.NDArray[np.float32] | None:
    """The chunk's embedding as a unit float32 vector (None without one); a wrong dimension or
    a non-finite value is an IndexError_ naming the chunk (shared by the backends)."""
    if chunk.embedding is None:
        return None
    vec = np.asarray(chunk.embedding, dtype=np.float32).reshape(-1)
    if vec.shape[0] != dimension:
        raise IndexError_(
            f"chunk {chunk.id!r} has a {vec.shape[0]}-dimensional embedding; this index "
            f"holds {dimension}-dimensional ones"
        )
    if not np.all(np.isfinite(vec)):
        raise IndexError_(f"chunk {chunk.id!r} has a non-finite embedding value")
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def unit_query_vector(vector: Sequence[float], dimension: int) -> npt.NDArray[np.float32]:
    """A query vector as a unit float32 vector; a wrong dimension, a non-finite value or an
    all-zero vector is an IndexError_ (shared by the backends)."""
    q = np.asarray(vector, dtype=np.float32).reshape(-1)
    if q.shape[0] != dimension:
        raise IndexError_(
            f"query vector has {q.shape[0]} dimensions; this index holds "
            f"{dimension}-dimensional embeddings"
        )
    if not np.all(np.isfinite(q)):
        raise IndexError_("query vector holds a non-finite value")
    norm = float(np.linalg.norm(q))
    if norm == 0.0:
        raise IndexError_("query vector is all zeros; cosine similarity is undefined")
    return q / norm


def decode_sentence_vectors(
    spans: bytes, vectors: bytes
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """A chunk's stored sentence spans (n x 2 int32) and vectors (n x width float32), as both
    backends keep them; a chunk without answer sentences stores no rows (and no width)."""
    span = np.frombuffer(spans, dtype=np.int32).reshape(-1, 2)
    flat = np.frombuffer(vectors, dtype=np.float32)
    return span, flat.reshape(len(span), -1) if len(span) else flat.reshape(0, 0)


def checked_chunks(documents: Mapping[str, Sequence[Chunk]]) -> Iterable[Chunk]:
    """Every chunk of a replace, after the protocol's checks: each belongs to the document it
    is filed under, and no chunk id repeats within a document."""
    for document_id, chunks in documents.items():
        seen: set[str] = set()
        for chunk in chunks:
            if chunk.document_id != document_id:
                raise IndexError_(
                    f"chunk {chunk.id!r} belongs to document {chunk.document_id!r}, "
                    f"not {document_id!r}"
                )
            if chunk.id in seen:
                raise IndexError_(f"chunk id {chunk.id!r} appears twice in {document_id!r}")
            seen.add(chunk.id)
            yield chunk
