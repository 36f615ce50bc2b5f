"""Query-time wrappers around an embedder: an LRU cache of query vectors and a micro-batcher.

A single-text `embed` call is a query: it is answered from the cache (keyed by the model's
identity and the whitespace-normalised text, so no entry can serve another model), or joins the
other queries arriving within a few milliseconds and is encoded with them as one batch. Calls
with several texts (ingestion) go straight to the model.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sovra.models.base import Embedder, Vectors, WrappedEmbedder

MAX_CACHED_CHARS = 2000
"""Longer texts are documents, not questions: they are not worth a cache slot."""


def identity_of(embedder: Embedder) -> str:
    """What distinguishes this model's vectors from any other's (runtime and weights included)."""
    value = getattr(embedder, "identity", None)
    return value if isinstance(value, str) else embedder.name


def normalise_query(text: str) -> str:
    """Whitespace runs → one space, ends stripped: tokenisers split on whitespace, so the
    vectors are the same; anything else (case, Unicode form) can change them and is kept."""
    return " ".join(text.split())


class QueryCache:
    """A thread-safe LRU of query vectors keyed by (model identity, normalised text)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Vectors] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, model: str, text: str) -> Vectors | None:
        key = (model, normalise_query(text))
        with self._lock:
            vec = self._items.get(key)
            if vec is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return vec

    def put(self, model: str, text: str, vector: Vectors) -> None:
        if self.size <= 0 or len(text) > MAX_CACHED_CHARS:
            return
        frozen = np.array(vector, dtype=np.float32)
        frozen.flags.writeable = False  # callers share it: nobody may change a cached vector
        key = (model, normalise_query(text))
        with self._lock:
            self._items[key] = frozen
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Pending:
    text: str
    done: threading.Event = field(default_factory=threading.Event)
    vector: Vectors | None = None
    error: BaseException | None = None
    lead: bool = False


class MicroBatcher:
    """Collects concurrent single queries for up to `window_s` and encodes them as one batch.

    The first caller of a round leads it: it waits the window (or until `max_batch` callers
    have joined), encodes, hands each caller its row, and passes the lead to the first caller
    still queued. One batch is encoded at a time; each caller gets its own vector or its error.

    A leader waits only while the previous round had company (more than one caller in its
    batch, or callers queued while it encoded): a caller that nobody can join — one model slot
    per worker, or a quiet server — would otherwise sit out the window for nothing, holding its
    slot idle. `waits` counts the rounds that waited.
    """

    def __init__(
        self, encode: Callable[[list[str]], Vectors], *, window_s: float, max_batch: int = 32
    ) -> None:
        self._encode = encode
        self.window_s = window_s
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._leading = False
        self._company = False
        self.batches = 0
        self.waits = 0

    def submit(self, text: str) -> Vectors:
        mine = _Pending(text)
        with self._cond:
            self._queue.append(mine)
            if self._leading:
                self._cond.notify_all()
            else:
                self._leading = mine.lead = True
        if not mine.lead:
            mine.done.wait()
        if mine.lead and mine.vector is None and mine.error is None:
            self._lead()
        if mine.error is not None:
            raise mine.error
        assert mine.vector is not None
        return mine.vector

    def _lead(self) -> None:
        deadline = time.monotonic() + self.window_s
        with self._cond:
            if self._company:
                self.waits += 1
            while self._company and len(self._queue) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        try:
            vectors = self._encode([p.text for p in batch])
            for p, row in zip(batch, vectors, strict=True):
                p.vector = np.array(row, dtype=np.float32)
        except BaseException as exc:  # every waiting caller must learn of the failure
            for p in batch:
                p.error = exc
        self.batches += 1
        with self._cond:
            self._company = len(batch) > 1 or bool(self._queue)
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].done.set()  # wakes it to lead the next round
            else:
                self._leading = False
        for p in batch:
            p.done.set()


class ServingEmbedder(WrappedEmbedder):
    """An embedder whose single-text calls are cached and (optionally) micro-batched."""

    def __init__(
        self,
        inner: Embedder,
        *,
        cache_size: int = 1024,
        batch_window_ms: float = 0.0,
        max_batch: int = 32,
    ) -> None:
        super().__init__(inner)
        self.cache = QueryCache(cache_size)
        self.batcher = (
            MicroBatcher(
                lambda t: inner.embed(t), window_s=batch_window_ms / 1000, max_batch=max_batch
            )
            if batch_window_ms > 0
            else None
        )

    @property
    def identity(self) -> str:
        return identity_of(self.inner)

    def __getattr__(self, attr: str) -> Any:
        # The wrapped model's own facts (path, runtime, fallback_reason) stay visible.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def embed(self, texts: Sequence[str]) -> Vectors:
        if len(texts) != 1:
            return self.inner.embed(texts)
        text = texts[0]
        model = self.identity
        hit = self.cache.get(model, text)
        if hit is None:
            hit = self.batcher.submit(text) if self.batcher else self.inner.embed([text])[0]
            self.cache.put(model, text, hit)
        return np.array(hit, dtype=np.float32).reshape(1, -1)
