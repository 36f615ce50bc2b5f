"""Incremental sync of one source: list → diff → fetch/parse → language → chunk → embed → index.

Crash safety (kill -9 at any instant) comes from the order of writes, not from a shared
transaction between two stores:

1. documents gone from the source are deleted from the index, then from the state store;
2. for each batch of new or changed documents, the chunks are written to the index in one
   `replace_documents` call (atomic at least per document, and idempotent), then the whole
   batch is recorded in the state store in one transaction.

So the state never claims a version the index does not hold. After a crash the state lags by
at most the in-flight batch: the re-run sees those documents as changed and replaces them
again — no duplicates (replace, not append) and no loss. Documents the index holds but the
state does not know (written just before a crash) are reconciled against the listing, so a
file deleted in between is still removed.

A document that fails (malformed, empty, too large, parser bug) is recorded with its reason
and any older indexed version of it is removed — stale text under stale labels must not stay
searchable; the rest of the sync goes on. A document with nothing to index (an empty page, a
redirect page with front matter only) is recorded as *skipped* with its reason, not failed:
it needs no action, and it is not read again until its version changes. A source that cannot be listed at all aborts the
sync before anything is deleted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sovra.domain import Chunk, Document, DocumentRef
from sovra.index.base import Index
from sovra.ingest.chunk import (
    OVERLAP_TOKENS,
    TARGET_TOKENS,
    TokenCounter,
    chunk_document,
    embedding_text,
    estimate_tokens,
)
from sovra.ingest.language import UNDETERMINED, detect_languages
from sovra.ingest.state import STATUS_OK, STATUS_SKIPPED, StateStore
from sovra.models.base import Embedder
from sovra.sources.base import (
    LABELS_REFUSED,
    Connector,
    DocumentError,
    EmptyDocument,
    SourceUnavailable,
)

ProgressCallback = Callable[[int, int, str | None], None]
"""progress(done, total, current external id): the CLI draws a bar, the API a status field.

Called once as (0, total, None) when the work is known (new + changed + deleted documents;
unchanged ones are not counted), then once per finished document with the absolute `done`
count — set the bar to `done`, don't add to it."""

REPORT_ID_LIMIT = 1000
"""At most this many ids per list in a stored report; counts are always exact."""


@dataclass(frozen=True)
class SyncOptions:
    """Tuning knobs; the defaults suit the packaged MiniLM model on a small CPU machine."""

    target_tokens: int = TARGET_TOKENS
    overlap_tokens: int = OVERLAP_TOKENS
    count_tokens: TokenCounter = estimate_tokens
    batch_chunks: int = 256
    """Chunks embedded together (across documents) and recorded in one state transaction."""
    batch_documents: int = 512
    """Upper bound on documents per batch (matters for BM25-only ingest of tiny records)."""
    embed_context: bool = True
    """Prefix each chunk's title and heading path to the text the model embeds."""
    prefetch: bool = True
    """Prepare the next batch in a thread while the model embeds the current one."""
    language: str | None = None
    """The source's declared language (`[[sources]] language`): documents that carry none get
    it instead of a detection. None: detect each one."""
    embed_window: int | None = None
    """Chunks handed to the model in one call (None: 4 x `batch_chunks`): consecutive batches
    are merged until they hold this many. The embedders sort a call by length, so a wide window
    pads little; 64-chunk calls on short records cost 4x the tokens of one sorted call
    (docs/benchmarks.md, ingest)."""


@dataclass
class SyncReport:
    """What one sync did; `to_dict()` is what `sovra source show` and the API display."""

    source: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    listed: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Documents that could not be read (malformed, too large, …): they need action."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Documents with nothing to index (empty, front matter only), with why: no action needed."""
    labels_refused: dict[str, str] = field(default_factory=dict)
    """Documents whose own labels (front matter) tried to widen what sovra.toml grants: the
    claim was not applied; the value says what was refused."""
    refused_links: dict[str, str] = field(default_factory=dict)
    """Symbolic links the connector did not follow (they leave the source root)."""
    chunks_written: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    """Set when the sync stopped early (source unavailable, model or index failure)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def _time(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds

    def to_dict(self) -> dict[str, Any]:
        def cap(ids: Sequence[str]) -> list[str]:
            return list(ids[:REPORT_ID_LIMIT])

        return {
            "source": self.source,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "ok": self.ok,
            "error": self.error,
            "listed": self.listed,
            "counts": {
                "added": len(self.added),
                "updated": len(self.updated),
                "unchanged": self.unchanged,
                "deleted": len(self.deleted),
                "failed": len(self.failed),
                "skipped": len(self.skipped),
                "labels_refused": len(self.labels_refused),
                "refused_links": len(self.refused_links),
                "chunks_written": self.chunks_written,
            },
            "added": cap(self.added),
            "updated": cap(self.updated),
            "deleted": cap(self.deleted),
            "failed": dict(list(self.failed.items())[:REPORT_ID_LIMIT]),
            "skipped": dict(list(self.skipped.items())[:REPORT_ID_LIMIT]),
            "labels_refused": dict(list(self.labels_refused.items())[:REPORT_ID_LIMIT]),
            "refused_links": dict(list(self.refused_links.items())[:REPORT_ID_LIMIT]),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


@dataclass
class _Prepared:
    """A batch of documents fetched, parsed, labelled, chunked — ready to embed and write."""

    docs: list[tuple[Document, list[Chunk]]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (ext id, version, why)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (ext id, version, why)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (ext id, refused labels)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def chunk_count(self) -> int:
        return sum(len(cs) for _, cs in self.docs)

    def extend(self, other: _Prepared) -> _Prepared:
        """This batch followed by `other` (one embed call and one write for both)."""
        self.docs.extend(other.docs)
        self.failed.extend(other.failed)
        self.skipped.extend(other.skipped)
        self.refused.extend(other.refused)
        for name, secs in other.timings.items():
            self.timings[name] = self.timings.get(name, 0.0) + secs
        return self


def embed_chunks(embedder: Embedder, chunks: list[Chunk], embed_context: bool) -> None:
    """Set each chunk's embedding (title and heading path prepended with `embed_context`): the one
    embed step of the local pipeline and of the Ray engine's actors."""
    if not chunks:
        return
    texts = [embedding_text(c) if embed_context else c.text for c in chunks]
    vectors = embedder.embed(texts)
    if len(vectors) != len(chunks):
        raise RuntimeError(
            f"embedder {embedder.name} returned {len(vectors)} vectors for {len(chunks)} texts"
        )
    for c, v in zip(chunks, vectors, strict=True):
        c.embedding = v.tolist()


class _Syncer:
    def __init__(
        self,
        connector: Connector,
        source: str,
        index: Index,
        embedder: Embedder | None,
        state: StateStore,
        progress: ProgressCallback | None,
        options: SyncOptions,
    ) -> None:
        self.connector = connector
        self.source = source
        self.index = index
        self.embedder = embedder
        self.state = state
        self.progress = progress
        self.options = options
        self.report = SyncReport(source=source)
        # Chunks depend on more than the document: a new model, BM25-only vs full, or new
        # chunk sizes must re-index even unchanged documents, so the state remembers these.
        model = f"{embedder.name}/{embedder.dimension}" if embedder is not None else "none"
        self.pipeline = (
            f"embed={model};ctx={int(options.embed_context)};"
            f"chunk={options.target_tokens}/{options.overlap_tokens}"
            # Only when declared, so the fingerprint of every existing sync stays what it was.
            + (f";lang={options.language}" if options.language else "")
        )
        self.done = 0
        self.total = 0

    def tick(self, external_id: str | None) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, external_id)

    # -- preparation (runs in the prefetch thread) ---------------------------------------

    def prepare(self, refs: Sequence[DocumentRef]) -> _Prepared:
        out = _Prepared()
        t = time.perf_counter()
        docs: list[Document] = []
        for ref in refs:
            try:
                doc = self.connector.fetch(ref.external_id)
            except EmptyDocument as exc:
                out.skipped.append((ref.external_id, ref.version, exc.reason))
                continue
            except DocumentError as exc:
                out.failed.append((ref.external_id, ref.version, exc.reason))
                continue
            except Exception as exc:  # a parser bug must not stop the sync
                out.failed.append(
                    (ref.external_id, ref.version, f"internal error: {type(exc).__name__}: {exc}")
                )
                continue
            if doc.external_id != ref.external_id:
                # State and index are keyed by the listed id; a mismatch would orphan chunks.
                out.failed.append(
                    (ref.external_id, ref.version, f"connector returned id {doc.external_id!r}")
                )
                continue
            if doc.source != self.source:
                doc.source = self.source
            refused = doc.metadata.pop(LABELS_REFUSED, None)
            if refused is not None:
                out.refused.append((doc.external_id, refused))
            docs.append(doc)
        t2 = time.perf_counter()
        out.timings["fetch_parse"] = t2 - t
        declared = self.options.language
        unknown = [d for d in docs if d.language == UNDETERMINED]
        langs = (
            [declared] * len(unknown) if declared else detect_languages([d.text for d in unknown])
        )
        for d, lang in zip(unknown, langs, strict=True):
            d.language = lang
        t3 = time.perf_counter()
        out.timings["language"] = t3 - t2
        opts = self.options
        for d in docs:
            chunks = chunk_document(
                d,
                target_tokens=opts.target_tokens,
                overlap_tokens=opts.overlap_tokens,
                count_tokens=opts.count_tokens,
            )
            if chunks:
                out.docs.append((d, chunks))
            else:
                out.skipped.append((d.external_id, d.version, "no text to index"))
        out.timings["chunk"] = time.perf_counter() - t3
        return out

    # -- writing (main thread) ----------------------------------------------------------

    def write(self, batch: _Prepared, indexed: set[str]) -> None:
        report = self.report
        for name, secs in batch.timings.items():
            report._time(name, secs)
        report.labels_refused.update(batch.refused)
        if self.embedder is not None and batch.docs:
            t = time.perf_counter()
            embed_chunks(
                self.embedder,
                [c for _, cs in batch.docs for c in cs],
                self.options.embed_context,
            )
            report._time("embed", time.perf_counter() - t)

        t = time.perf_counter()
        ok: list[tuple[str, str, int]] = []
        if batch.docs:
            # One bulk call per batch: the engine commits once (all or nothing where it can,
            # at least atomic per document — either way the state write below comes after).
            self.index.replace_documents({doc.id: chunks for doc, chunks in batch.docs})
        for doc, chunks in batch.docs:
            ok.append((doc.external_id, doc.version, len(chunks)))
            report.chunks_written += len(chunks)
        unindexed = [*batch.failed, *batch.skipped]
        stale = [f"{self.source}:{eid}" for eid, _, _ in unindexed if eid in indexed]
        if stale:
            self.index.delete_documents(stale)
        t2 = time.perf_counter()
        report._time("index", t2 - t)
        # State after index: see the module docstring for why this order is crash-safe.
        if ok:
            self.state.record_ok(self.source, ok, pipeline=self.pipeline)
        if batch.failed:
            self.state.record_failed(self.source, batch.failed, pipeline=self.pipeline)
        if batch.skipped:
            self.state.record_failed(
                self.source, batch.skipped, pipeline=self.pipeline, status=STATUS_SKIPPED
            )
        report._time("state", time.perf_counter() - t2)

        for doc, _ in batch.docs:
            (report.updated if doc.external_id in indexed else report.added).append(doc.external_id)
            self.tick(doc.external_id)
        for eid, _, reason in batch.failed:
            report.failed[eid] = reason
            self.tick(eid)
        for eid, _, reason in batch.skipped:
            report.skipped[eid] = reason
            self.tick(eid)

    def batches(self, work: Sequence[DocumentRef]) -> list[list[DocumentRef]]:
        """Split work so a batch holds about `batch_chunks` chunks (estimated from size)."""
        opts = self.options
        if self.embedder is None:
            size = opts.batch_documents
        else:
            # Documents average a few chunks; the exact number is known only after parsing,
            # so batches are sized by documents and tuned to keep the model's batches full.
            size = max(1, min(opts.batch_documents, opts.batch_chunks // 4))
        return [list(work[i : i + size]) for i in range(0, len(work), size)]

    def _windows(self, batches: Sequence[Sequence[DocumentRef]]) -> Callable[[], _Prepared | None]:
        """A function giving the next embed window (batches prepared in order and merged until
        they hold `embed_window` chunks), None when all are done. BM25-only: batch by batch."""
        remaining = iter(batches)
        opts = self.options
        window = opts.embed_window or 4 * opts.batch_chunks
        if self.embedder is None:
            window = 0

        def next_window() -> _Prepared | None:
            merged: _Prepared | None = None
            for refs in remaining:
                prepared = self.prepare(refs)
                merged = prepared if merged is None else merged.extend(prepared)
                if merged.chunk_count >= window:
                    break
            return merged

        return next_window

    def run(self) -> SyncReport:
        report = self.report
        t_all = time.perf_counter()
        try:
            t = time.perf_counter()
            refs = list(self.connector.list())
            report._time("list", time.perf_counter() - t)
            # Optional part of the connector interface: links a folder listing did not follow.
            report.refused_links.update(getattr(self.connector, "refused_links", None) or {})
            report.listed = len(refs)

            t = time.perf_counter()
            prefix = f"{self.source}:"
            indexed = {i[len(prefix) :] for i in self.index.document_ids() if i.startswith(prefix)}
            stored = self.state.versions(self.source)
            listed: dict[str, DocumentRef] = {}
            for ref in refs:
                listed.setdefault(ref.external_id, ref)
            work: list[DocumentRef] = []
            for eid, ref in listed.items():
                st = stored.get(eid)
                if st is not None and (
                    (st == (ref.version, STATUS_OK, self.pipeline) and eid in indexed)
                    # Nothing to index last time and the same version now: nothing to redo.
                    or st == (ref.version, STATUS_SKIPPED, self.pipeline)
                ):
                    report.unchanged += 1
                else:
                    work.append(ref)
            gone = sorted((set(stored) | indexed) - set(listed))
            report._time("diff", time.perf_counter() - t)

            self.total = len(work) + len(gone)
            if self.progress is not None:
                self.progress(0, self.total, None)

            if gone:
                t = time.perf_counter()
                self.index.delete_documents([prefix + eid for eid in gone])
                self.state.forget(self.source, gone)
                report.deleted.extend(gone)
                report._time("delete", time.perf_counter() - t)
                for eid in gone:
                    self.tick(eid)

            batches = self.batches(work)
            next_window = self._windows(batches)
            if self.options.prefetch and self.embedder is not None and len(batches) > 1:
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sovra-prep") as pool:
                    ahead: Future[_Prepared | None] = pool.submit(next_window)
                    while (current := ahead.result()) is not None:
                        ahead = pool.submit(next_window)
                        self.write(current, indexed)
            else:
                while (current := next_window()) is not None:
                    self.write(current, indexed)
        except SourceUnavailable as exc:
            report.error = str(exc)
            raise
        except BaseException as exc:
            report.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            report.finished_at = datetime.now(UTC)
            report._time("total", time.perf_counter() - t_all)
            try:
                self.state.save_report(self.source, report.to_dict())
            except Exception:  # never hide the original error behind a reporting failure
                if report.error is None:
                    raise
        return report


def sync_source(
    connector: Connector,
    source_name: str | None,
    index: Index,
    embedder: Embedder | None,
    state_store: StateStore,
    progress: ProgressCallback | None = None,
    *,
    options: SyncOptions | None = None,
) -> SyncReport:
    """Bring the index in line with the source; returns what changed.

    `embedder=None` is the BM25-only mode (chunks are written without embeddings).
    Raises SourceUnavailable (nothing changed) when the source cannot be listed; model and
    index errors propagate after the report is saved — a re-run resumes where it stopped.
    """
    name = source_name or connector.name
    # Two syncs of one source in one process (CLI thread, API, scheduler) would race on the
    # same documents; the second waits and then finds them unchanged.
    with _source_lock(state_store, name):
        return _Syncer(
            connector, name, index, embedder, state_store, progress, options or SyncOptions()
        ).run()


_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _source_lock(state: StateStore, source: str) -> threading.Lock:
    where = state.path.resolve() if state.path is not None else state.engine.url
    key = (str(where), source)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())
