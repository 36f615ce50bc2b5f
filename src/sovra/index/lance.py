"""LanceDB backend for the `Index` protocol: the measured alternative to the embedded engine.

Mapping of the protocol onto LanceDB (0.40):

* one Lance table `chunks`; every chunk field is a column, plus `terms` (the chunk analysed
  by `sovra.index.analysis`, space separated) and a fixed-size float32 `vector` column;
* full text: LanceDB's native FTS index on `terms` with a whitespace tokenizer and all of
  its own analysis switched off, so stemming and stop words are exactly sovra's; the query
  is analysed the same way and sent as a `MatchQuery` (OR of terms, BM25);
* vectors: exact (flat) cosine search; no ANN index, so recall is 1.0 by construction;
* filters: `SearchFilter` compiled to a SQL predicate (`array_has_any` for access, IN lists
  for classification / residency prefixes / source / language, bounds on `modified_us`) and
  applied with `prefilter=True` on both channels;
* writes: one `merge_insert` per batch (upsert by chunk id, delete the document's other
  chunks via `when_not_matched_by_source_delete`), which is ONE Lance commit: atomic, and a
  crash leaves the previous table version.

Known differences from the embedded engine (see docs/benchmarks.md): BM25 statistics are
global (over all chunks, not only the admitted ones), and new rows are searched unindexed
until `optimize()` folds them into the FTS index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS
from lancedb.query import MatchQuery

from sovra.domain import Chunk, ScoredChunk, SearchFilter
from sovra.index.analysis import analyze, analyze_document, normalize_language
from sovra.index.base import IndexError_
from sovra.index.embedded import _to_us

TABLE = "chunks"
_COLUMNS = [
    "id",
    "document_id",
    "position",
    "source",
    "text",
    "title",
    "uri",
    "heading_path",
    "language",
    "access",
    "classification",
    "residency",
    "start",
    "end",
    "modified_at",
    "vector",
    "has_vec",
]


def _schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("document_id", pa.string()),
            ("position", pa.int64()),
            ("source", pa.string()),
            ("text", pa.string()),
            ("title", pa.string()),
            ("uri", pa.string()),
            ("heading_path", pa.list_(pa.string())),
            ("language", pa.string()),
            ("access", pa.list_(pa.string())),
            ("classification", pa.string()),
            ("residency", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("modified_at", pa.string()),
            ("modified_us", pa.int64()),
            ("terms", pa.string()),
            ("vector", pa.list_(pa.float32(), dimension)),
            ("has_vec", pa.bool_()),
        ]
    )


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in(column: str, values: Iterable[str]) -> str:
    vals = sorted(set(values))
    if not vals:
        return "false"
    return f"{column} IN ({', '.join(_lit(v) for v in vals)})"


def residency_candidates(region: str) -> set[str]:
    """Every residency that contains `region` (see domain.residency_contains)."""
    out = {"*", region}
    out.update(region[:i] for i, ch in enumerate(region) if ch == "-")
    return out


def filter_sql(flt: SearchFilter) -> str:
    """The SearchFilter as a Lance SQL predicate with the same meaning as `admits`."""
    tokens = sorted(flt.access_tokens)
    if not tokens:
        return "false"
    parts = [f"array_has_any(access, [{', '.join(_lit(t) for t in tokens)}])"]
    if flt.max_classification_rank is not None:
        allowed = flt.classification_labels[: max(flt.max_classification_rank + 1, 0)]
        parts.append(_in("classification", allowed))
    if flt.region is not None:
        parts.append(_in("residency", residency_candidates(flt.region)))
    if flt.sources is not None:
        parts.append(_in("source", flt.sources))
    if flt.languages is not None:
        parts.append(_in("language", flt.languages))
    if flt.modified_after is not None:
        parts.append(f"(modified_us IS NOT NULL AND modified_us >= {_to_us(flt.modified_after)})")
    if flt.modified_before is not None:
        parts.append(f"(modified_us IS NOT NULL AND modified_us <= {_to_us(flt.modified_before)})")
    return " AND ".join(parts)


class LanceIndex:
    """`Index` on an embedded LanceDB table in directory `path`."""

    def __init__(self, path: Path | str, dimension: int) -> None:
        if dimension <= 0:
            raise IndexError_(f"embedding dimension must be positive, got {dimension}")
        self.path = Path(path)
        self.dimension = dimension
        self._closed = False
        self._db = lancedb.connect(str(self.path))
        if TABLE in self._db.list_tables().tables:
            self._table = self._db.open_table(TABLE)
            vec_type = self._table.schema.field("vector").type
            if vec_type.list_size != dimension:
                raise IndexError_(
                    f"index {self.path} holds {vec_type.list_size}-dimensional embeddings but "
                    f"the embedding model gives {dimension}; use the model it was built with "
                    "or rebuild the index"
                )
        else:
            self._table = self._db.create_table(TABLE, schema=_schema(dimension))
        self._fts_ready = self._has_fts()

    def _has_fts(self) -> bool:
        return any("terms" in (ix.columns or []) for ix in self._table.list_indices())

    def _check_open(self) -> None:
        if self._closed:
            raise IndexError_(f"index {self.path} is closed")

    def close(self) -> None:
        self._closed = True

    # ----------------------------------------------------------------- writes

    def _row(self, c: Chunk) -> dict[str, Any]:
        if c.embedding is None:
            vec = np.zeros(self.dimension, dtype=np.float32)
            has = False
        else:
            vec = np.asarray(c.embedding, dtype=np.float32).reshape(-1)
            if vec.shape[0] != self.dimension:
                raise IndexError_(
                    f"chunk {c.id!r} has a {vec.shape[0]}-dimensional embedding; this index "
                    f"holds {self.dimension}-dimensional ones"
                )
            norm = float(np.linalg.norm(vec))
            vec = vec / norm if norm > 0 else vec
            has = True
        text = " ".join((c.title, " ".join(c.heading_path), c.text))
        return {
            "id": c.id,
            "document_id": c.document_id,
            "position": c.position,
            "source": c.source,
            "text": c.text,
            "title": c.title,
            "uri": c.uri,
            "heading_path": list(c.heading_path),
            "language": c.language,
            "access": list(c.access),
            "classification": c.classification,
            "residency": c.residency,
            "start": c.start,
            "end": c.end,
            "modified_at": c.modified_at.isoformat() if c.modified_at else None,
            "modified_us": None if c.modified_at is None else _to_us(c.modified_at),
            "terms": " ".join(analyze_document(text, normalize_language(c.language))),
            "vector": vec.tolist(),
            "has_vec": has,
        }

    def replace_document(self, document_id: str, chunks: Sequence[Chunk]) -> None:
        self.replace_documents({document_id: chunks})

    def replace_documents(self, documents: Mapping[str, Sequence[Chunk]]) -> None:
        self._check_open()
        rows: list[dict[str, Any]] = []
        for doc, chunks in documents.items():
            seen: set[str] = set()
            for c in chunks:
                if c.document_id != doc:
                    raise IndexError_(
                        f"chunk {c.id!r} belongs to document {c.document_id!r}, not {doc!r}"
                    )
                if c.id in seen:
                    raise IndexError_(f"chunk id {c.id!r} appears twice in {doc!r}")
                seen.add(c.id)
                rows.append(self._row(c))
        if not documents:
            return
        doc_pred = _in("document_id", documents)
        if rows:
            ids = [r["id"] for r in rows]
            clash = self._table.count_rows(f"{_in('id', ids)} AND NOT ({doc_pred})")
            if clash:
                raise IndexError_(
                    "a chunk id already belongs to another document; chunk ids must be unique"
                )
            data = pa.Table.from_pylist(rows, schema=self._table.schema)
            (
                self._table.merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(doc_pred)
                .execute(data)
            )
        else:
            self._table.delete(doc_pred)

    def delete_documents(self, document_ids: Iterable[str]) -> int:
        self._check_open()
        ids = list(dict.fromkeys(document_ids))
        if not ids:
            return 0
        pred = _in("document_id", ids)
        n = int(self._table.count_rows(pred))
        if n:
            self._table.delete(pred)
        return n

    def optimize(self) -> None:
        """Build or refresh the FTS index and compact fragments (call after bulk loads)."""
        self._check_open()
        if self._table.count_rows() == 0:
            return
        if not self._fts_ready:
            self._table.create_index(
                "terms",
                config=FTS(
                    base_tokenizer="whitespace",
                    lower_case=False,
                    stem=False,
                    remove_stop_words=False,
                    ascii_folding=False,
                    with_position=False,
                    max_token_length=None,
                ),
            )
            self._fts_ready = True
        else:
            self._table.optimize()

    # ----------------------------------------------------------------- search

    def _hits(self, table: pa.Table, channel: str) -> list[ScoredChunk]:
        out: list[ScoredChunk] = []
        score_col = "_score" if channel == "text" else "_distance"
        for rec in table.to_pylist():
            raw = float(rec[score_col])
            score = raw if channel == "text" else 1.0 - raw
            out.append(ScoredChunk(self._chunk(rec), score, channel))
        out.sort(key=lambda s: -s.score)
        return out

    @staticmethod
    def _chunk(rec: Mapping[str, Any]) -> Chunk:
        return Chunk(
            id=rec["id"],
            document_id=rec["document_id"],
            source=rec["source"],
            position=int(rec["position"]),
            text=rec["text"],
            title=rec["title"],
            uri=rec["uri"],
            heading_path=tuple(rec["heading_path"] or ()),
            language=rec["language"],
            access=tuple(rec["access"] or ()),
            classification=rec["classification"],
            residency=rec["residency"],
            start=int(rec["start"]),
            end=int(rec["end"]),
            modified_at=datetime.fromisoformat(rec["modified_at"]) if rec["modified_at"] else None,
            embedding=list(rec["vector"]) if rec["has_vec"] else None,
        )

    def search_text(
        self, query: str, language: str, k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        self._check_open()
        terms = analyze(query, normalize_language(language))
        if k <= 0 or not terms or self._table.count_rows() == 0:
            return []
        if not self._fts_ready:
            self.optimize()
        q = (
            self._table.search(cast(Any, MatchQuery)(" ".join(dict.fromkeys(terms)), "terms"))
            .where(filter_sql(flt), prefilter=True)
            .select(_COLUMNS)
            .limit(k)
        )
        return self._hits(q.to_arrow(), "text")

    def search_vector(
        self, vector: Sequence[float], k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        self._check_open()
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dimension:
            raise IndexError_(
                f"query vector has {q.shape[0]} dimensions; this index holds "
                f"{self.dimension}-dimensional embeddings"
            )
        norm = float(np.linalg.norm(q))
        if not np.isfinite(norm) or norm == 0.0:
            raise IndexError_("query vector is zero or non-finite; cosine is undefined")
        if k <= 0:
            return []
        builder: Any = self._table.search(
            q / norm, vector_column_name="vector", query_type="vector"
        )
        res = (
            builder.distance_type("cosine")
            .where(f"has_vec AND {filter_sql(flt)}", prefilter=True)
            .select(_COLUMNS)
            .limit(k)
            .to_arrow()
        )
        return self._hits(res, "vector")

    # ----------------------------------------------------------------- reads

    def count(self, flt: SearchFilter | None = None) -> int:
        self._check_open()
        if flt is None:
            return int(self._table.count_rows())
        return int(self._table.count_rows(filter_sql(flt)))

    def document_ids(self) -> set[str]:
        self._check_open()
        tbl = self._table.search().select(["document_id"]).limit(None).to_arrow()
        return set(tbl.column("document_id").to_pylist())

    def chunks_of(self, document_id: str) -> list[Chunk]:
        self._check_open()
        tbl = (
            self._table.search()
            .where(f"document_id = {_lit(document_id)}")
            .select(_COLUMNS)
            .limit(None)
            .to_arrow()
        )
        chunks = [self._chunk(r) for r in tbl.to_pylist()]
        return sorted(chunks, key=lambda c: c.position)
