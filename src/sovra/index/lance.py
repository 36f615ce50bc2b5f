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

BM25 is scored by sovra, not by Lance: Lance's own scores use statistics over the whole
table, so how many chunks a caller cannot read contain a term would shift the caller's scores
(a side channel). Lance's FTS only finds the admitted candidates (prefiltered); document
count, average length and document frequencies are computed over the admitted chunks, with
the embedded engine's formula (Lucene idf, k1=1.2, b=0.75) — the two backends score alike.
New rows are searched unindexed until `optimize()` folds them into the FTS index.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import FTS
from lancedb.query import MatchQuery

from sovra.domain import Chunk, ScoredChunk, SearchFilter
from sovra.index.analysis import analyze, analyze_document, normalize_language
from sovra.index.base import IndexError_
from sovra.index.embedded import BM25_B, BM25_K1, _to_us
from sovra.storage import private_dir, private_files

TABLE = "chunks"
_STATS_CACHE = 64
"""Per-filter (document count, average length) pairs kept per table version."""
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
        self._stats: OrderedDict[tuple[int, str], tuple[int, float]] = OrderedDict()
        private_dir(self.path)
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
            with private_files():
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
            with private_files():  # Lance writes new fragment and manifest files
                (
                    self._table.merge_insert("id")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(doc_pred)
                    .execute(data)
                )
        else:
            with private_files():
                self._table.delete(doc_pred)

    def delete_documents(self, document_ids: Iterable[str]) -> int:
        self._check_open()
        ids = list(dict.fromkeys(document_ids))
        if not ids:
            return 0
        pred = _in("document_id", ids)
        n = int(self._table.count_rows(pred))
        if n:
            with private_files():
                self._table.delete(pred)
        return n

    def optimize(self) -> None:
        """Build or refresh the FTS index and compact fragments (call after bulk loads)."""
        self._check_open()
        if self._table.count_rows() == 0:
            return
        with private_files():
            self._build_fts()

    def _build_fts(self) -> None:
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
        where = filter_sql(flt)
        n_docs, avgdl = self._admitted_stats(where)
        if n_docs == 0:
            return []
        qtf = Counter(terms)
        # Every admitted chunk holding a query term (the limit is the admitted count, so
        # Lance's own ranking, on global statistics, never decides which are candidates).
        q = (
            self._table.search(cast(Any, MatchQuery)(" ".join(qtf), "terms"))
            .where(where, prefilter=True)
            .select([*_COLUMNS, "terms"])
            .limit(n_docs)
        )
        rows = q.to_arrow().to_pylist()
        tfs = [Counter(str(r["terms"] or "").split()) for r in rows]
        df = {t: sum(1 for tf in tfs if t in tf) for t in qtf}
        scored: list[tuple[float, dict[str, Any]]] = []
        for rec, tf in zip(rows, tfs, strict=True):
            length = sum(tf.values())
            norm = BM25_K1 * (1.0 - BM25_B + BM25_B * length / avgdl)
            score = 0.0
            for term, weight in qtf.items():
                f = tf.get(term, 0)
                if f:
                    # Lucene's BM25 idf (always positive), over the admitted chunks only.
                    idf = math.log(1.0 + (n_docs - df[term] + 0.5) / (df[term] + 0.5))
                    score += idf * weight * f * (BM25_K1 + 1.0) / (f + norm)
            if score > 0:
                scored.append((score, rec))
        scored.sort(key=lambda p: (-p[0], p[1]["id"]))
        return [ScoredChunk(self._chunk(rec), score, "text") for score, rec in scored[:k]]

    def _admitted_stats(self, where: str) -> tuple[int, float]:
        """(number of admitted chunks, their average analysed length), cached per version."""
        key = (int(self._table.version), where)
        cached = self._stats.get(key)
        if cached is not None:
            self._stats.move_to_end(key)
            return cached
        col = (self._table.search().where(where).select(["terms"]).limit(None).to_arrow()).column(
            "terms"
        )
        n_docs = len(col)
        if n_docs:
            filled = pc.fill_null(col, "")
            spaces = pc.count_substring(filled, " ")
            nonempty = pc.greater(pc.utf8_length(filled), 0)
            lengths = pc.add(spaces, pc.cast(nonempty, pa.int64()))
            avgdl = float(pc.sum(lengths).as_py() or 0) / n_docs
        else:
            avgdl = 1.0
        stats = (n_docs, avgdl or 1.0)
        self._stats[key] = stats
        if len(self._stats) > _STATS_CACHE:
            self._stats.popitem(last=False)
        return stats

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
