"""The embedded default index: SQLite (WAL) for durability, in-memory numpy arrays for search.

Why this shape (see docs/benchmarks.md "## Index engine" for the measurements):

* **Durability** lives in one SQLite database in WAL mode. A document replace is one
  transaction (delete its rows, insert the new ones, bump the generation), so a crash or a
  `kill -9` mid-write leaves the previous state; reopening rebuilds memory from the database.
  Chunks store their analysed terms as a compact blob of (term id, tf) pairs and the term
  vocabulary lives in the same database, so opening is a few bulk reads and no re-analysis.
* **Fast open**: on close, an index of at least SNAPSHOT_MIN_CHUNKS chunks saves its memory
  structures to `memory.npz` (written then renamed). Opening uses it only when its write
  generation and database id match the database's; otherwise memory is rebuilt from SQLite.
* **Search** runs on in-memory arrays over a dense slot space (one slot per chunk row).
  Deletes and replaces are tombstones in an `alive` mask; when a quarter of the slots are
  dead, memory is compacted.
* **Filtering is inside the search and exact.** Every chunk's governance labels (access
  list, classification, residency, source, language) form a *label combination*; there are
  few distinct ones, so a filter is evaluated with the reference `SearchFilter.admits` once
  per combination and broadcast to a boolean slot mask, ANDed with the modified-time range
  and the alive mask BEFORE scoring. A filtered query therefore ranks exactly the admitted
  chunks: k results whenever k admitted chunks match, recall 1.0 against brute force.
* **BM25** uses postings in log-structured segments (term-sorted arrays, merged like a
  binary counter). Collection statistics (N, df, average length) are computed over the
  admitted chunks only, so scores reveal nothing about chunks the caller cannot read.
* **Vectors** are normalised float32 rows; cosine search is an exact dot product over the
  admitted rows (a gather when the filter is selective, one matrix-vector product when not).
  From `[index] ann_min_chunks` vectors on (`ann = "auto"`), a broad filter searches an HNSW
  graph instead (`sovra.index.ann`): candidates are checked against the same exact mask, so
  the graph changes ranking recall, never what a caller can see.

One process owns an index directory for writing (an exclusive advisory lock enforces it);
threads share one instance safely behind a lock. `read_only=True` takes the lock shared instead:
several processes (the server's workers) then search one directory side by side, each with its
own memory, and a writer waits until the last of them has closed, so no reader's memory can go
stale. Readers may still cache answer-sentence vectors (SQLite serialises those small writes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import sqlite3
import threading
import uuid
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from sovra.domain import Chunk, ScoredChunk, SearchFilter
from sovra.index.analysis import (
    ANALYSIS_VERSION,
    analyze,
    analyze_document,
    normalize_language,
)
from sovra.index.ann import GRAPH_NAME, AnnGraph, AnnSettings
from sovra.index.base import (
    IndexError_,
    decode_sentence_vectors,
    normalised_embedding,
    unit_query_vector,
)
from sovra.storage import (
    Synchronous,
    atomic_writer,
    open_private,
    open_sqlite,
    private_dir,
    write_transaction,
)

SCHEMA_VERSION = "1"
DB_NAME = "index.sqlite"
LOCK_NAME = "index.lock"
SNAPSHOT_NAME = "memory.npz"
SNAPSHOT_FORMAT = 1
SNAPSHOT_MIN_CHUNKS = 20_000
"""Below this size rebuilding memory from SQLite on open is fast enough; no snapshot."""

CHUNK_CACHE = 20_000
"""Parsed chunks kept from recent search hits (about 2-3 KB each; docs/benchmarks.md)."""

BM25_K1 = 1.2
BM25_B = 0.75

_F32 = npt.NDArray[np.float32]
_I32 = npt.NDArray[np.int32]
_I64 = npt.NDArray[np.int64]
_BOOL = npt.NDArray[np.bool_]

_LOAD_BLOCK = 4096
"""Rows per vector assignment while rebuilding memory from the database."""

_NO_TIME = np.iinfo(np.int64).min
"""Sentinel for 'no modified_at'; a time-bounded filter never admits it (as `admits`)."""

# Below this share of admitted slots, gathering the admitted vectors beats a full product.
# Row-major: a row is 1.5-3.5 KiB in one run; column-major: one float per column, each in its
# own cache line and page, so the gather stops paying from a few percent (2-core EPYC VM,
# OpenBLAS 0.3.31, measured over 18k and 200k rows).
_GATHER_SHARE = {"C": 0.3, "F": 0.03}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terms (id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    source TEXT NOT NULL,
    language TEXT NOT NULL,
    access TEXT NOT NULL,
    classification TEXT NOT NULL,
    residency TEXT NOT NULL,
    modified_us INTEGER,
    payload TEXT NOT NULL,
    postings BLOB NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (document_id, position);
-- Answer sentences of a chunk and their vectors, per model: spans are (start, end) int32 pairs
-- into the chunk text, vectors float32 rows; text_sha ties them to the text they were cut from.
-- Added without a schema version bump: an older index simply has none and fills it lazily.
CREATE TABLE IF NOT EXISTS sentences (
    chunk_id TEXT NOT NULL,
    model TEXT NOT NULL,
    document_id TEXT NOT NULL,
    text_sha TEXT NOT NULL,
    spans BLOB NOT NULL,
    vectors BLOB NOT NULL,
    PRIMARY KEY (chunk_id, model)
);
CREATE INDEX IF NOT EXISTS sentences_by_document ON sentences (document_id);
"""


def _to_us(when: datetime) -> int:
    """Microseconds since the epoch; naive datetimes are taken as UTC (exact, no float)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _text_sha(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _payload(chunk: Chunk) -> str:
    return json.dumps(
        {
            "source": chunk.source,
            "text": chunk.text,
            "title": chunk.title,
            "uri": chunk.uri,
            "heading_path": list(chunk.heading_path),
            "language": chunk.language,
            "access": list(chunk.access),
            "classification": chunk.classification,
            "residency": chunk.residency,
            "start": chunk.start,
            "end": chunk.end,
            "modified_at": chunk.modified_at.isoformat() if chunk.modified_at else None,
        },
        ensure_ascii=False,
    )


def _chunk_from_row(
    chunk_id: str, document_id: str, position: int, payload: str, emb: bytes | None
) -> Chunk:
    p = json.loads(payload)
    return Chunk(
        id=chunk_id,
        document_id=document_id,
        source=p["source"],
        position=position,
        text=p["text"],
        title=p["title"],
        uri=p["uri"],
        heading_path=tuple(p["heading_path"]),
        language=p["language"],
        access=tuple(p["access"]),
        classification=p["classification"],
        residency=p["residency"],
        start=p["start"],
        end=p["end"],
        modified_at=datetime.fromisoformat(p["modified_at"]) if p["modified_at"] else None,
        embedding=np.frombuffer(emb, dtype=np.float32).tolist() if emb else None,
    )


@dataclasses.dataclass
class _Segment:
    """Postings of a set of slots, sorted by term: term t owns rows[indptr[t]:indptr[t+1]]."""

    indptr: _I64
    rows: _I32
    tfs: _F32

    @property
    def size(self) -> int:
        return int(self.rows.shape[0])

    def postings(self, term: int) -> tuple[_I32, _F32]:
        if term + 1 >= self.indptr.shape[0]:
            return _EMPTY_I32, _EMPTY_F32
        a, b = int(self.indptr[term]), int(self.indptr[term + 1])
        return self.rows[a:b], self.tfs[a:b]

    def coo(self) -> tuple[_I64, _I32, _F32]:
        terms = np.repeat(np.arange(self.indptr.shape[0] - 1, dtype=np.int64), np.diff(self.indptr))
        return terms, self.rows, self.tfs


_EMPTY_I32: _I32 = np.empty(0, dtype=np.int32)
_EMPTY_F32: _F32 = np.empty(0, dtype=np.float32)


def _build_segment(terms: _I64, rows: _I32, tfs: _F32, vocab_size: int) -> _Segment:
    # Callers pass postings whose rows already ascend within each term (slots only grow and
    # segments are concatenated oldest first), so a stable sort by term is enough.
    order = np.argsort(terms, kind="stable")
    terms_sorted = terms[order]
    counts = (
        np.bincount(terms_sorted, minlength=vocab_size)
        if terms.size
        else np.zeros(vocab_size, dtype=np.int64)
    )
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return _Segment(indptr, rows[order].astype(np.int32), tfs[order].astype(np.float32))


def _merge_segments(segs: Sequence[_Segment], vocab_size: int) -> _Segment:
    parts = [s.coo() for s in segs]
    return _build_segment(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        vocab_size,
    )


def _encode_postings(term_ids: Sequence[int], counts: Sequence[int]) -> tuple[_I32, _F32, bytes]:
    ids = np.asarray(term_ids, dtype=np.int32)
    tf = np.asarray(counts, dtype=np.int32)
    return ids, tf.astype(np.float32), ids.tobytes() + tf.tobytes()


def _decode_postings(blob: bytes) -> tuple[_I32, _F32]:
    arr = np.frombuffer(blob, dtype=np.int32)
    m = arr.shape[0] // 2
    return arr[:m], arr[m:].astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Labels:
    """The governance labels of a chunk that filters look at (one 'label combination')."""

    access: tuple[str, ...]
    classification: str
    residency: str
    source: str
    language: str

    def probe(self) -> Chunk:
        """A stand-in chunk carrying these labels, to ask `SearchFilter.admits` about them."""
        return Chunk(
            id="",
            document_id="",
            source=self.source,
            position=0,
            text="",
            title="",
            uri="",
            heading_path=(),
            language=self.language,
            access=self.access,
            classification=self.classification,
            residency=self.residency,
        )


class _Memory:
    """All search structures over the dense slot space; rebuilt from SQLite on open.

    The vectors are column-major ("F") while broad searches scan them all: OpenBLAS's
    matrix-vector product over one model's columns runs twice as fast that way on the 2-core
    VM (18k x 384: 0.8 vs 2.0 ms; 200k: 14.6 vs 29.1 ms), and that scan is the largest single
    cost of a search below the graph's size. Once the HNSW graph takes broad searches
    (`graph_wanted`: `AnnSettings.wanted`, the `[index] ann` switch), exact search only serves
    selective filters, which gather admitted rows, and row-major ("C") gathers 10-30x faster.
    The layout is chosen whenever the array is allocated (open, growth, compaction), so it
    follows the index's size without a copy per write.
    """

    def __init__(
        self, dimension: int, graph_wanted: Callable[[int], bool] = lambda _: False
    ) -> None:
        self.dimension = dimension
        self.graph_wanted = graph_wanted
        self.n = 0
        cap = 1024
        self.alive: _BOOL = np.zeros(cap, dtype=np.bool_)
        self.rowid: _I64 = np.zeros(cap, dtype=np.int64)
        self.combo: _I32 = np.zeros(cap, dtype=np.int32)
        self.modified: _I64 = np.full(cap, _NO_TIME, dtype=np.int64)
        self.length: _F32 = np.zeros(cap, dtype=np.float32)
        self.has_vec: _BOOL = np.zeros(cap, dtype=np.bool_)
        self.order = self.order_for(cap)  # by capacity, as _grow
        self.vectors: _F32 = np.zeros((cap, dimension), dtype=np.float32, order=self.order)
        self.doc_slots: dict[str, list[int]] = {}
        self.combos: list[_Labels] = []
        self.combo_ids: dict[_Labels, int] = {}
        self.vocab: dict[str, int] = {}
        self.segments: list[_Segment] = []
        self.pending_terms: list[_I32] = []
        self.pending_rows: list[_I32] = []
        self.pending_tfs: list[_F32] = []
        self.dead = 0

    def order_for(self, vectors: int) -> Literal["C", "F"]:
        """The vector layout for an index of this many vectors (see the class docstring)."""
        return "C" if self.graph_wanted(vectors) else "F"

    def _grow(self, need: int) -> None:
        cap = self.alive.shape[0]
        if need <= cap:
            return
        new = max(need, cap * 2)
        # By the new capacity: the layout then suits the index until the next growth.
        self.order = self.order_for(new)

        def grow(a: Any, fill: Any = 0) -> Any:
            out = np.full((new, *a.shape[1:]), fill, dtype=a.dtype, order=self.order)
            out[: self.n] = a[: self.n]
            return out

        self.alive = grow(self.alive, False)
        self.rowid = grow(self.rowid)
        self.combo = grow(self.combo)
        self.modified = grow(self.modified, _NO_TIME)
        self.length = grow(self.length)
        self.has_vec = grow(self.has_vec, False)
        self.vectors = grow(self.vectors)

    def put_vectors(self, rows: list[tuple[int, bytes]]) -> None:
        """Store float32 vectors (slot, raw bytes) in one assignment."""
        if not rows:
            return
        slots = np.fromiter((slot for slot, _ in rows), dtype=np.int64, count=len(rows))
        block = np.frombuffer(b"".join(raw for _, raw in rows), dtype=np.float32)
        block = block.reshape(len(rows), self.dimension)
        if int(slots[-1] - slots[0]) + 1 == len(rows):  # consecutive: a slice, not a scatter
            self.vectors[int(slots[0]) : int(slots[-1]) + 1] = block
        else:
            self.vectors[slots] = block
        self.has_vec[slots] = True

    def combo_id(self, labels: _Labels) -> int:
        cid = self.combo_ids.get(labels)
        if cid is None:
            cid = len(self.combos)
            self.combos.append(labels)
            self.combo_ids[labels] = cid
        return cid

    def add(
        self,
        document_id: str,
        rowid: int,
        labels: _Labels,
        modified_us: int | None,
        term_ids: _I32,
        tfs: _F32,
        vector: _F32 | None,
    ) -> None:
        slot = self.n
        self._grow(slot + 1)
        self.n += 1
        self.alive[slot] = True
        self.rowid[slot] = rowid
        self.combo[slot] = self.combo_id(labels)
        self.modified[slot] = _NO_TIME if modified_us is None else modified_us
        self.length[slot] = float(tfs.sum())
        if vector is not None:
            self.vectors[slot] = vector
            self.has_vec[slot] = True
        self.doc_slots.setdefault(document_id, []).append(slot)
        if term_ids.size:
            self.pending_terms.append(term_ids)
            self.pending_rows.append(np.full(term_ids.shape[0], slot, dtype=np.int32))
            self.pending_tfs.append(tfs)

    def remove_document(self, document_id: str) -> int:
        slots = self.doc_slots.pop(document_id, None)
        if not slots:
            return 0
        self.alive[slots] = False
        self.dead += len(slots)
        return len(slots)

    def seal(self) -> None:
        """Turn pending postings into a segment; merge segments like a binary counter."""
        if self.pending_terms:
            seg = _build_segment(
                np.concatenate(self.pending_terms).astype(np.int64),
                np.concatenate(self.pending_rows),
                np.concatenate(self.pending_tfs),
                len(self.vocab),
            )
            self.pending_terms, self.pending_rows, self.pending_tfs = [], [], []
            self.segments.append(seg)
        # Keep O(log n) segments: merge the newest two while the newer is at least half the
        # size of the older, so each posting is rewritten O(log n) times in total.
        while len(self.segments) >= 2 and self.segments[-1].size * 2 >= self.segments[-2].size:
            b = self.segments.pop()
            a = self.segments.pop()
            self.segments.append(_merge_segments([a, b], len(self.vocab)))

    def compact(self) -> None:
        """Drop dead slots: renumber the live ones densely and rewrite the postings."""
        self.seal()
        live = np.flatnonzero(self.alive[: self.n])
        remap = np.full(self.n, -1, dtype=np.int64)
        remap[live] = np.arange(live.shape[0])
        if self.segments:
            terms, rows, tfs = (
                np.concatenate(p) for p in zip(*(s.coo() for s in self.segments), strict=True)
            )
            keep = remap[rows] >= 0
            seg = _build_segment(
                terms[keep].astype(np.int64),
                remap[rows[keep]].astype(np.int32),
                tfs[keep].astype(np.float32),
                len(self.vocab),
            )
            self.segments = [seg]
        m = live.shape[0]
        self.alive = self.alive[live].copy()
        self.rowid = self.rowid[live].copy()
        self.combo = self.combo[live].copy()
        self.modified = self.modified[live].copy()
        self.length = self.length[live].copy()
        self.has_vec = self.has_vec[live].copy()
        self.vectors = self.vectors[live]  # _grow below copies it into its layout
        self.n = m
        self.doc_slots = {d: [int(remap[s]) for s in slots] for d, slots in self.doc_slots.items()}
        self.dead = 0
        self._grow(max(m + 1, 1024))


def _nonzero_span(q: _F32) -> slice:
    """The smallest column range holding every non-zero of `q` (a unit vector: never empty)."""
    nz = np.flatnonzero(q)
    return slice(int(nz[0]), int(nz[-1]) + 1)


def _hashable(flt: SearchFilter) -> SearchFilter:
    """The filter with sets frozen, so it can key the caches (callers may pass plain sets)."""
    try:
        hash(flt)
        return flt
    except TypeError:
        return dataclasses.replace(
            flt,
            access_tokens=frozenset(flt.access_tokens),
            classification_labels=tuple(flt.classification_labels),
            sources=None if flt.sources is None else frozenset(flt.sources),
            languages=None if flt.languages is None else frozenset(flt.languages),
        )


class _FilterCache:
    """Slot masks per filter, valid for one write generation (hybrid = 2 searches, 1 mask)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.generation = -1
        self.masks: OrderedDict[SearchFilter, _BOOL] = OrderedDict()
        self.verdicts: dict[SearchFilter, list[bool]] = {}
        self.stats: dict[SearchFilter, tuple[int, float]] = {}
        self.vector_masks: dict[tuple[str, SearchFilter], tuple[_BOOL, int]] = {}

    def reset(self, generation: int) -> None:
        if generation != self.generation:
            self.generation = generation
            self.masks.clear()
            self.stats.clear()
            self.vector_masks.clear()


class EmbeddedIndex:
    """The embedded default `Index`: one directory, no server. See the module docstring."""

    def __init__(
        self,
        path: Path | str,
        dimension: int,
        *,
        synchronous: str = "NORMAL",
        snapshot_min_chunks: int = SNAPSHOT_MIN_CHUNKS,
        ann: AnnSettings | None = None,
        read_only: bool = False,
        chunk_cache: int = CHUNK_CACHE,
    ) -> None:
        if dimension <= 0:
            raise IndexError_(f"embedding dimension must be positive, got {dimension}")
        self.path = Path(path)
        self.dimension = dimension
        self._lock = threading.RLock()
        self._closed = False
        try:
            private_dir(self.path)
        except OSError as exc:
            raise IndexError_(f"cannot create index directory {self.path}: {exc}") from exc
        self.read_only = read_only
        self._lockfile = open_private(self.path / LOCK_NAME)
        try:
            fcntl.flock(
                self._lockfile.fileno(),
                (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB,
            )
        except BlockingIOError:
            self._lockfile.close()
            holder = "being written by another process" if read_only else "open in another process"
            raise IndexError_(
                f"index {self.path} is {holder} (a sync, or `sovra serve`); stop it there first"
            ) from None
        try:
            # NORMAL in WAL mode: a process crash never loses or tears a committed write;
            # only a power cut may drop the last commits (the database stays consistent).
            level = synchronous.upper()
            if level not in ("NORMAL", "FULL", "EXTRA"):
                raise IndexError_(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
            self._db = open_sqlite(self.path / DB_NAME, synchronous=cast(Synchronous, level))
            self._db.executescript(_SCHEMA)
            self._check_meta()
            self._ann_settings = ann or AnnSettings()
            self._mem = self._new_memory()
            self._generation = int(self._meta("generation") or 0)
            self._opened_generation = self._generation
            self._filters = _FilterCache()
            self._snapshot_min = snapshot_min_chunks
            self._snapshot_generation = -1
            self._ann: AnnGraph | None = None  # built or loaded on the first search needing it
            self._chunk_cache: OrderedDict[int, Chunk] = OrderedDict()
            self._chunk_cache_size = chunk_cache
            if not self._load_snapshot():
                self._load()
        except BaseException:
            self._release()
            raise

    # ----------------------------------------------------------------- lifecycle

    def _new_memory(self) -> _Memory:
        return _Memory(self.dimension, self._ann_settings.wanted)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _check_meta(self) -> None:
        version = self._meta("schema_version")
        dim = self._meta("dimension")
        if version is None:
            with self._transaction():
                # OR IGNORE: readers opening a new directory together create it once.
                self._db.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema_version", SCHEMA_VERSION),
                        ("dimension", str(self.dimension)),
                        ("analysis", ANALYSIS_VERSION),
                        ("generation", "0"),
                        ("db_id", uuid.uuid4().hex),
                    ],
                )
            # What is stored now, ours or a process's that created it at the same moment.
            version, dim = self._meta("schema_version"), self._meta("dimension")
        if version != SCHEMA_VERSION:
            raise IndexError_(
                f"index {self.path} has schema version {version}, this sovra reads "
                f"{SCHEMA_VERSION}; delete {self.path} and sync again (sovra source sync --all)"
            )
        rebuild = f"delete {self.path} and sync again (sovra source sync --all)"
        if dim is not None and int(dim) != self.dimension:
            # Typically an upgrade that added the multilingual channel ([embedding] multilingual):
            # old vectors cannot be searched with the new model, so refuse instead of guessing.
            raise IndexError_(
                f"index {self.path} holds {dim}-dimensional embeddings but the embedding model "
                f"gives {self.dimension}; set [embedding] back to the model it was built with, "
                f"or {rebuild} to re-embed with the current one"
            )
        # Indexes from before the script-aware analyser have no entry: their terms (one token per
        # run of Chinese characters, no NFKC) would silently miss this version's queries.
        analysis = self._meta("analysis") or "1"
        if analysis != ANALYSIS_VERSION:
            raise IndexError_(
                f"index {self.path} was analysed by text analysis version {analysis}, this sovra "
                f"uses {ANALYSIS_VERSION}; {rebuild}"
            )

    def _load(self) -> None:
        """Rebuild memory from the database in bulk (no per-row analysis, one segment)."""
        mem = self._mem
        for tid, term in self._db.execute("SELECT id, term FROM terms ORDER BY id"):
            mem.vocab[term] = int(tid)
        if mem.vocab and max(mem.vocab.values()) != len(mem.vocab) - 1:
            raise IndexError_(f"index {self.path} has a damaged term table; rebuild the index")
        (n,) = self._db.execute("SELECT count(*) FROM chunks").fetchone()
        # Iterate the cursor rather than fetchall(): peak memory stays near the final size.
        rows = self._db.execute(
            "SELECT rowid, document_id, source, language, access, classification, residency,"
            " modified_us, postings, embedding FROM chunks ORDER BY rowid"
        )
        mem._grow(n + 1)
        raw_combos: dict[tuple[str, str, str, str, str], int] = {}
        combo = np.empty(n, dtype=np.int32)
        modified = np.empty(n, dtype=np.int64)
        term_parts: list[_I32] = []
        tf_parts: list[_F32] = []
        lengths = np.empty(n, dtype=np.int64)
        # Vectors go in by blocks of rows: one row into a column-major array touches a page
        # per column.
        block: list[tuple[int, bytes]] = []
        for slot, (rowid, doc, source, lang, access, cls, res, mod, post, emb) in enumerate(rows):
            mem.rowid[slot] = rowid
            mem.doc_slots.setdefault(doc, []).append(slot)
            key = (access, cls, res, source, lang)
            cid = raw_combos.get(key)
            if cid is None:
                cid = mem.combo_id(_Labels(tuple(json.loads(access)), cls, res, source, lang))
                raw_combos[key] = cid
            combo[slot] = cid
            modified[slot] = _NO_TIME if mod is None else mod
            ids, tfs = _decode_postings(post)
            term_parts.append(ids)
            tf_parts.append(tfs)
            lengths[slot] = ids.shape[0]
            if emb:
                block.append((slot, emb))
                if len(block) == _LOAD_BLOCK:
                    mem.put_vectors(block)
                    block = []
        mem.put_vectors(block)
        mem.n = n
        mem.alive[:n] = True
        mem.combo[:n] = combo
        mem.modified[:n] = modified
        if n:
            tfs_all = np.concatenate(tf_parts)
            slots = np.repeat(np.arange(n, dtype=np.int32), lengths)
            mem.length[:n] = np.bincount(slots, weights=tfs_all, minlength=n)
            mem.segments = [
                _build_segment(
                    np.concatenate(term_parts).astype(np.int64), slots, tfs_all, len(mem.vocab)
                )
            ]

    def _release(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)
        self._lockfile.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._sole_holder():
                    self._save_snapshot()
                    if not self.read_only and (
                        self._generation != self._opened_generation
                        or not (self.path / GRAPH_NAME).exists()
                    ):
                        # A writer past `ann_min_chunks` builds the graph here, once: server
                        # workers open read-only and would each build it on a user's first
                        # broad search otherwise (68-123 s at 1M chunks on 2 cores). A writer
                        # that changed nothing leaves a saved graph unread.
                        self._graph()
                    self._save_graph()
            finally:
                self._release()

    def _sole_holder(self) -> bool:
        """Whether this process may write the caches on close: a writer always; a reader only
        as the last one open (its shared lock converts to exclusive). A conversion that fails
        has given up the shared lock; this instance is closing anyway, and saves nothing."""
        if not self.read_only:
            return True
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    # ----------------------------------------------------------------- snapshot
    #
    # The snapshot is a cache of the memory structures, never a source of truth: it is used
    # only when its generation and database id equal the database's (every write bumps the
    # generation in the same transaction), so a stale or foreign snapshot can never bring
    # back a deleted chunk. A crash while writing it leaves the old file (write + rename).

    def _snapshot_key(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "schema": SCHEMA_VERSION,
            "generation": self._generation,
            "db_id": self._meta("db_id") or "",
            "dimension": self.dimension,
        }

    def _save_snapshot(self) -> None:
        mem = self._mem
        path = self.path / SNAPSHOT_NAME
        if self._generation == self._snapshot_generation:
            return
        if mem.n - mem.dead < self._snapshot_min:
            path.unlink(missing_ok=True)
            return
        mem.compact()  # one segment, no dead slots: what is saved is exactly the live state
        n = mem.n
        doc_of = [""] * n
        for doc, slots in mem.doc_slots.items():
            for slot in slots:
                doc_of[slot] = doc
        vocab = sorted(mem.vocab, key=mem.vocab.__getitem__)
        header = dict(self._snapshot_key(), n=n, vocab_size=len(vocab))
        seg = (
            mem.segments[0]
            if mem.segments
            else _build_segment(np.empty(0, np.int64), _EMPTY_I32, _EMPTY_F32, len(vocab))
        )
        blobs = {
            "header": json.dumps(header),
            "vocab": json.dumps(vocab, ensure_ascii=False),
            "docs": json.dumps(doc_of, ensure_ascii=False),
            "combos": json.dumps([dataclasses.astuple(c) for c in mem.combos], ensure_ascii=False),
        }
        # The snapshot is only a cache: when it cannot be written, opening rebuilds it.
        with contextlib.suppress(OSError), atomic_writer(path) as fh:
            arrays: dict[str, Any] = {
                "rowid": mem.rowid[:n],
                "combo": mem.combo[:n],
                "modified": mem.modified[:n],
                "length": mem.length[:n],
                "has_vec": mem.has_vec[:n],
                "vectors": mem.vectors[:n],
                "indptr": seg.indptr,
                "rows": seg.rows,
                "tfs": seg.tfs,
            }
            arrays.update({k: np.frombuffer(v.encode(), dtype=np.uint8) for k, v in blobs.items()})
            np.savez(fh, **arrays)

    def _load_snapshot(self) -> bool:
        path = self.path / SNAPSHOT_NAME
        if not path.exists():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:

                def text(key: str) -> Any:
                    return json.loads(z[key].tobytes().decode())

                header = text("header")
                (n,) = self._db.execute("SELECT count(*) FROM chunks").fetchone()
                (terms,) = self._db.execute("SELECT count(*) FROM terms").fetchone()
                expected = dict(self._snapshot_key(), n=n, vocab_size=terms)
                if header != expected:
                    return False
                mem = self._mem
                mem._grow(n + 1)
                mem.n = n
                mem.alive[:n] = True
                mem.rowid[:n] = z["rowid"]
                mem.combo[:n] = z["combo"]
                mem.modified[:n] = z["modified"]
                mem.length[:n] = z["length"]
                mem.has_vec[:n] = z["has_vec"]
                vectors = z["vectors"]
                for start in range(0, n, _LOAD_BLOCK):  # by blocks: 4x faster into "F"
                    stop = min(start + _LOAD_BLOCK, n)
                    mem.vectors[start:stop] = vectors[start:stop]
                mem.segments = [_Segment(z["indptr"], z["rows"], z["tfs"])]
                vocab = text("vocab")
                mem.vocab = dict(zip(vocab, range(len(vocab)), strict=True))
                for access, cls, res, source, lang in text("combos"):
                    mem.combo_id(_Labels(tuple(access), cls, res, source, lang))
                for slot, doc in enumerate(text("docs")):
                    mem.doc_slots.setdefault(doc, []).append(slot)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            self._mem = self._new_memory()  # unreadable or partial: rebuild from SQLite
            return False
        self._snapshot_generation = self._generation
        return True

    def __enter__(self) -> EmbeddedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise IndexError_(f"index {self.path} is closed")

    # ----------------------------------------------------------------- writes

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._db)

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise IndexError_(
                f"index {self.path} is open read-only here (the server searches, never writes "
                "it); stop `sovra serve`, then sync or delete with the CLI"
            )

    def _vector(self, chunk: Chunk) -> _F32 | None:
        return normalised_embedding(chunk, self.dimension)

    def replace_document(self, document_id: str, chunks: Sequence[Chunk]) -> None:
        self.replace_documents({document_id: chunks})

    def replace_documents(self, documents: Mapping[str, Sequence[Chunk]]) -> None:
        """Replace several documents in ONE transaction (all or nothing); fast bulk ingest."""
        prepared: list[tuple[str, list[tuple[Chunk, Counter[str], _F32 | None]]]] = []
        for document_id, chunks in documents.items():
            items = []
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
                # Title and heading path are searchable text too.
                text = " ".join((chunk.title, " ".join(chunk.heading_path), chunk.text))
                terms = Counter(analyze_document(text, normalize_language(chunk.language)))
                items.append((chunk, terms, self._vector(chunk)))
            prepared.append((document_id, items))
        with self._lock:
            self._check_writable()
            self._write(prepared)

    def _write(
        self, prepared: list[tuple[str, list[tuple[Chunk, Counter[str], _F32 | None]]]]
    ) -> None:
        mem = self._mem
        new_terms: list[str] = []
        staged: list[tuple[str, int, _Labels, int | None, _I32, _F32, _F32 | None]] = []
        try:
            with self._transaction():
                for document_id, items in prepared:
                    self._db.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
                    self._db.execute("DELETE FROM sentences WHERE document_id = ?", (document_id,))
                    for chunk, terms, vec in items:
                        term_ids = []
                        for t in terms:  # `terms` maps each distinct term to its frequency
                            tid = mem.vocab.get(t)
                            if tid is None:
                                tid = len(mem.vocab)
                                mem.vocab[t] = tid
                                new_terms.append(t)
                            term_ids.append(tid)
                        ids, tfs, blob = _encode_postings(term_ids, list(terms.values()))
                        mod = None if chunk.modified_at is None else _to_us(chunk.modified_at)
                        try:
                            cur = self._db.execute(
                                "INSERT INTO chunks (id, document_id, position, source, language,"
                                " access, classification, residency, modified_us, payload,"
                                " postings, embedding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                                (
                                    chunk.id,
                                    document_id,
                                    chunk.position,
                                    chunk.source,
                                    chunk.language,
                                    json.dumps(list(chunk.access)),
                                    chunk.classification,
                                    chunk.residency,
                                    mod,
                                    _payload(chunk),
                                    blob,
                                    None if vec is None else vec.tobytes(),
                                ),
                            )
                        except sqlite3.IntegrityError:
                            raise IndexError_(
                                f"chunk id {chunk.id!r} already belongs to another document; "
                                "chunk ids must be unique across the index"
                            ) from None
                        labels = _Labels(
                            tuple(chunk.access),
                            chunk.classification,
                            chunk.residency,
                            chunk.source,
                            chunk.language,
                        )
                        assert cur.lastrowid is not None
                        staged.append((document_id, cur.lastrowid, labels, mod, ids, tfs, vec))
                if new_terms:
                    base = len(mem.vocab) - len(new_terms)
                    self._db.executemany(
                        "INSERT INTO terms (id, term) VALUES (?, ?)",
                        [(base + i, t) for i, t in enumerate(new_terms)],
                    )
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'generation'",
                    (str(self._generation + 1),),
                )
        except BaseException:
            # The transaction rolled back: forget the terms it introduced so ids stay dense.
            for t in new_terms:
                del mem.vocab[t]
            raise
        # Committed: mirror it in memory (tombstone the old slots, append the new ones).
        self._generation += 1
        self._chunk_cache.clear()  # replaced or erased text must not stay in memory
        self._graph_forget([doc for doc, _ in prepared])
        for document_id, _ in prepared:
            mem.remove_document(document_id)
        for document_id, rowid, labels, mod, ids, tfs, vec in staged:
            mem.add(document_id, rowid, labels, mod, ids, tfs, vec)
        if self._ann is not None:
            added = [(rowid, vec) for _, rowid, _, _, _, _, vec in staged if vec is not None]
            if added:
                self._ann.queue_add([r for r, _ in added], np.stack([v for _, v in added]))
        if mem.dead > max(1024, mem.n // 4):
            mem.compact()

    def delete_documents(self, document_ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(document_ids))
        with self._lock:
            self._check_writable()
            with self._transaction():
                removed = 0
                for doc in ids:
                    cur = self._db.execute("DELETE FROM chunks WHERE document_id = ?", (doc,))
                    removed += cur.rowcount
                    self._db.execute("DELETE FROM sentences WHERE document_id = ?", (doc,))
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'generation'",
                    (str(self._generation + 1),),
                )
            self._generation += 1
            self._chunk_cache.clear()
            self._graph_forget(ids)
            for doc in ids:
                self._mem.remove_document(doc)
            if self._mem.dead > max(1024, self._mem.n // 4):
                self._mem.compact()
            return removed

    # ----------------------------------------------------------------- filtering

    def _mask(self, flt: SearchFilter) -> _BOOL:
        """Boolean mask over slots of the live chunks `flt` admits (exact `admits` semantics)."""
        cache = self._filters
        cache.reset(self._generation)
        flt = _hashable(flt)
        hit = cache.masks.get(flt)
        if hit is not None:
            cache.masks.move_to_end(flt)
            return hit
        mem = self._mem
        labels_only = dataclasses.replace(flt, modified_after=None, modified_before=None)
        verdicts = cache.verdicts.setdefault(labels_only, [])
        if len(cache.verdicts) > 4 * cache.size:
            cache.verdicts = {labels_only: verdicts}
        # Label combinations only ever get added, so earlier verdicts stay valid.
        for labels in mem.combos[len(verdicts) :]:
            verdicts.append(labels_only.admits(labels.probe()))
        ok = np.asarray(verdicts, dtype=np.bool_)
        n = mem.n
        mask = ok[mem.combo[:n]] if ok.size else np.zeros(n, dtype=np.bool_)
        mask &= mem.alive[:n]
        if flt.modified_after is not None:
            mask &= mem.modified[:n] >= _to_us(flt.modified_after)
        if flt.modified_before is not None:
            mod = mem.modified[:n]
            mask &= (mod <= _to_us(flt.modified_before)) & (mod != _NO_TIME)
        if flt.modified_after is not None:
            mask &= mem.modified[:n] != _NO_TIME
        cache.masks[flt] = mask
        if len(cache.masks) > cache.size:
            cache.masks.popitem(last=False)
        return mask

    # ----------------------------------------------------------------- search

    def search_text(
        self, query: str, language: str, k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        terms = analyze(query, normalize_language(language))
        with self._lock:
            self._check_open()
            mem = self._mem
            # A term repeated in the query weighs more (long, keyword-list queries rely on it).
            qtf = Counter(mem.vocab[t] for t in terms if t in mem.vocab)
            qids = sorted(qtf)
            if k <= 0 or not qids:
                return []
            mem.seal()
            flt = _hashable(flt)
            mask = self._mask(flt)
            stats = self._filters.stats.get(flt)
            if stats is None:
                n_docs = int(np.count_nonzero(mask))
                avgdl = float(mem.length[: mem.n][mask].mean()) if n_docs else 1.0
                stats = (n_docs, avgdl or 1.0)
                if len(self._filters.stats) > 4 * self._filters.size:
                    self._filters.stats.clear()
                self._filters.stats[flt] = stats
            n_docs, avgdl = stats
            if n_docs == 0:
                return []
            all_rows: list[_I32] = []
            all_scores: list[_F32] = []
            for tid in qids:
                parts = [seg.postings(tid) for seg in mem.segments]
                rows = np.concatenate([p[0] for p in parts])
                if rows.size == 0:
                    continue
                tfs = np.concatenate([p[1] for p in parts])
                keep = mask[rows]
                rows, tfs = rows[keep], tfs[keep]
                df = rows.shape[0]
                if df == 0:
                    continue
                # Lucene's BM25 idf (always positive), over the admitted chunks only.
                idf = math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
                norm = BM25_K1 * (1.0 - BM25_B + BM25_B * mem.length[rows] / avgdl)
                all_rows.append(rows)
                weight = idf * qtf[tid]
                all_scores.append(
                    (weight * tfs * (BM25_K1 + 1.0) / (tfs + norm)).astype(np.float32)
                )
            if not all_rows:
                return []
            rows = np.concatenate(all_rows)
            scores = np.concatenate(all_scores)
            if len(all_rows) > 1:
                rows, inverse = np.unique(rows, return_inverse=True)
                scores = np.bincount(inverse, weights=scores).astype(np.float32)
            return self._top(rows, scores, k, "text")

    def search_vector(
        self, vector: Sequence[float], k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        q = unit_query_vector(vector, self.dimension)
        with self._lock:
            self._check_open()
            if k <= 0:
                return []
            mem = self._mem
            key = ("vector", _hashable(flt))
            # A write since the last search invalidates every cached mask (slots may move).
            self._filters.reset(self._generation)
            cached = self._filters.vector_masks.get(key)
            if cached is None:
                vmask = self._mask(flt) & mem.has_vec[: mem.n]
                cached = (vmask, int(np.count_nonzero(vmask)))
                if len(self._filters.vector_masks) > self._filters.size:
                    self._filters.vector_masks.clear()
                self._filters.vector_masks[key] = cached
            vmask, admitted = cached
            if admitted == 0:
                return []
            if admitted > self._ann_settings.exact_max:
                graph = self._graph()
                if graph is not None:
                    hits = self._search_graph(graph, q, k, vmask, admitted)
                    if hits is not None:
                        return hits
            # A fused embedder's query is one model's vector with zeros elsewhere: only that
            # model's columns can score, so the product reads them alone (half the memory
            # traffic with two models; the scores are the same).
            cols = _nonzero_span(q)
            if admitted <= _GATHER_SHARE[mem.order] * mem.n:
                # Selective filter: score only the admitted rows (exact, and cheap).
                rows = np.flatnonzero(vmask).astype(np.int32)
                scored = (mem.vectors[rows, cols] @ q[cols]).astype(np.float32)
                return self._top(rows, scored, k, "vector")
            # Broad filter: one matrix-vector product over all slots, the rest masked out.
            scores = (mem.vectors[: mem.n, cols] @ q[cols]).astype(np.float32)
            scores[~vmask] = -np.inf
            top = np.argpartition(-scores, min(k, mem.n) - 1)[:k]
            top = top[vmask[top]]  # fewer than k admitted rows: drop the masked fill-ins
            return self._top(top.astype(np.int32), scores[top], k, "vector")

    # ----------------------------------------------------------------- ANN graph

    def _vector_rowids(self) -> _I64:
        mem = self._mem
        live = mem.alive[: mem.n] & mem.has_vec[: mem.n]
        return mem.rowid[: mem.n][live]

    def _slots_of(self, rowids: npt.NDArray[Any]) -> _I64:
        """Slots of live vector rows with these rowids (slots ascend with rowid); -1 if none."""
        mem = self._mem
        keys = np.asarray(rowids, dtype=np.int64)
        slots = np.searchsorted(mem.rowid[: mem.n], keys).astype(np.int64)
        slots[slots >= mem.n] = 0
        ok = (mem.rowid[slots] == keys) & mem.alive[slots] & mem.has_vec[slots]
        return np.where(ok, slots, -1)

    def _graph(self) -> AnnGraph | None:
        """The HNSW graph when the settings want one at this size (loaded or built lazily)."""
        mem = self._mem
        live = int(np.count_nonzero(mem.alive[: mem.n] & mem.has_vec[: mem.n]))
        if not self._ann_settings.wanted(live):
            return None
        if self._ann is None:
            graph = AnnGraph.load(
                self.path, self.dimension, self._ann_settings, self._meta("db_id") or ""
            )
            # Loaded or empty, the graph is brought to the database's state before first use.
            graph.reconcile(self._vector_rowids(), lambda r: mem.vectors[self._slots_of(r)].copy())
            self._ann = graph
        return self._ann

    def _graph_forget(self, document_ids: Iterable[str]) -> None:
        """Queue removal of these documents' current vectors from the graph, if there is one."""
        if self._ann is None:
            return
        mem = self._mem
        slots = [s for doc in document_ids for s in mem.doc_slots.get(doc, ())]
        if slots:
            arr = np.asarray(slots, dtype=np.int64)
            self._ann.queue_remove(mem.rowid[arr[mem.has_vec[arr]]])

    def _search_graph(
        self, graph: AnnGraph, q: _F32, k: int, vmask: _BOOL, admitted: int
    ) -> list[ScoredChunk] | None:
        """Top k admitted chunks via the graph, or None to fall back to exact search.

        The fetch is sized by the filter's selectivity and widened until k admitted candidates
        are found; each candidate is checked against the exact mask and re-scored exactly. A
        fetch reaching `exact_share` of the graph goes exact instead: scoring the admitted rows
        is then cheaper (at most `total` dot products, where the walk computes about `count` x
        connectivity) and exact (ann.py says why that matters).
        """
        total = len(graph)
        if total == 0:
            return None
        share = admitted / total
        count = max(10 * k, math.ceil(8 * k / share))
        while True:
            if count >= self._ann_settings.exact_share * total:
                return None
            keys = graph.search(q, count)
            slots = self._slots_of(keys)
            slots = slots[slots >= 0]
            cand = slots[vmask[slots]].astype(np.int32)
            if cand.shape[0] >= min(k, admitted):
                scores = (self._mem.vectors[cand] @ q).astype(np.float32)
                return self._top(cand, scores, k, "vector")
            if count >= total or count >= 8 * self._ann_settings.exact_max:
                return None
            count *= 4

    def _save_graph(self) -> None:
        if self._ann is None:
            return
        if self._ann.dirty or not (self.path / GRAPH_NAME).exists():
            self._ann.save(self.path, self._meta("db_id") or "")

    def _top(self, rows: _I32, scores: _F32, k: int, channel: str) -> list[ScoredChunk]:
        if rows.size > k:
            part = np.argpartition(-scores, k - 1)[:k]
            rows, scores = rows[part], scores[part]
        # Highest score first; ties by slot (insertion order) so results are deterministic.
        order = np.lexsort((rows, -scores))
        rows, scores = rows[order], scores[order]
        chunks = self._fetch([int(self._mem.rowid[r]) for r in rows])
        return [ScoredChunk(c, float(s), channel) for c, s in zip(chunks, scores, strict=True)]

    def _fetch(self, rowids: list[int]) -> list[Chunk]:
        """The chunks of these rows, from the cache of recent hits or the database.

        A hybrid search fetches ~300 candidates to return 10, and reading and parsing them was
        a sixth of a search's CPU. A cached row is never wrong (rows are never updated, a
        replace deletes and inserts, and AUTOINCREMENT never reuses a rowid), but every write
        clears the cache anyway, so replaced or erased text does not linger in memory. Readers
        (the server) see no writes while open, so theirs stays warm.
        """
        cache = self._chunk_cache
        missing = [r for r in rowids if r not in cache]
        if missing:
            # Search hits carry no embedding: nothing downstream of a search reads it, and
            # turning ~200 candidate vectors per query into lists cost more than BM25 scoring.
            marks = ",".join("?" * len(missing))
            for r in self._db.execute(
                "SELECT rowid, id, document_id, position, payload, NULL FROM chunks"
                f" WHERE rowid IN ({marks})",
                missing,
            ):
                cache[r[0]] = _chunk_from_row(*r[1:])
        out = []
        for r in rowids:
            cache.move_to_end(r)
            out.append(cache[r])
        while len(cache) > self._chunk_cache_size:
            cache.popitem(last=False)
        return out

    # ----------------------------------------------------------------- reads

    def sentence_vectors(self, model: str, chunks: Sequence[Chunk]) -> dict[str, tuple[_I32, _F32]]:
        """Stored (spans, vectors) of `model` by chunk id, for chunks whose text is unchanged."""
        wanted = {c.id: _text_sha(c.text) for c in chunks}
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                f"SELECT chunk_id, text_sha, spans, vectors FROM sentences "
                f"WHERE model = ? AND chunk_id IN ({marks})",
                (model, *wanted),
            ).fetchall()
        out: dict[str, tuple[_I32, _F32]] = {}
        for chunk_id, sha, spans, vectors in rows:
            if wanted.get(chunk_id) != sha:
                continue  # cut from another text of this id: recomputed by the caller
            out[chunk_id] = decode_sentence_vectors(spans, vectors)
        return out

    def store_sentence_vectors(
        self, model: str, entries: Sequence[tuple[Chunk, _I32, _F32]]
    ) -> None:
        """Keep each chunk's sentence spans and `model`'s vectors of them, replacing older ones."""
        if not entries:
            return
        rows = [
            (
                c.id,
                model,
                c.document_id,
                _text_sha(c.text),
                np.ascontiguousarray(spans, dtype=np.int32).tobytes(),
                np.ascontiguousarray(vectors, dtype=np.float32).tobytes(),
            )
            for c, spans, vectors in entries
        ]
        with self._lock:
            self._check_open()
            try:
                with self._transaction():
                    self._db.executemany(
                        "INSERT OR REPLACE INTO sentences VALUES (?, ?, ?, ?, ?, ?)", rows
                    )
            except sqlite3.OperationalError:
                # A cache fill at question time: a sync holding the write lock (or a read-only
                # file) must not fail the answer; the vectors are computed again next time.
                return

    def count(self, flt: SearchFilter | None = None) -> int:
        with self._lock:
            self._check_open()
            if flt is None:
                return int(np.count_nonzero(self._mem.alive[: self._mem.n]))
            return int(np.count_nonzero(self._mask(flt)))

    def document_ids(self) -> set[str]:
        with self._lock:
            self._check_open()
            return set(self._mem.doc_slots)

    def chunks_of(self, document_id: str) -> list[Chunk]:
        with self._lock:
            self._check_open()
            return [
                _chunk_from_row(*r)
                for r in self._db.execute(
                    "SELECT id, document_id, position, payload, embedding FROM chunks"
                    " WHERE document_id = ? ORDER BY position, rowid",
                    (document_id,),
                )
            ]

    def iter_chunks(self) -> Iterator[Chunk]:
        """Every chunk in insertion order (no filter: for rebuilds and exports by admins)."""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT id, document_id, position, payload, embedding FROM chunks ORDER BY rowid"
            ).fetchall()
        for r in rows:
            yield _chunk_from_row(*r)
