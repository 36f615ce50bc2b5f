"""Model slots: how many requests may use the CPU-bound models at once (a transport concern).

The permission path itself is `Workspace.search/ask/document` (the same one the CLI and
workflows use); the server only decides how many of those calls run at the same time.
Model work (query embedding, answer composition) is CPU-bound: more concurrent calls than
cores only thrash and grow per-thread buffers, so requests queue for a slot.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from sovra.workspace import Workspace

P = ParamSpec("P")
T = TypeVar("T")


def one_blas_thread() -> bool:
    """numpy's BLAS on one thread in this process, unless the operator set
    `OPENBLAS_NUM_THREADS` (an empty value counts as unset, as OpenBLAS reads it). True when
    the limit was applied.

    The server's products (the vector scan) are small and run beside other requests: OpenBLAS's
    helper thread spin-waits after each one and takes the core the other requests need
    (measured on the demo index, one worker on 2 cores: server CPU per search 27.8 -> 13.0 ms,
    wall time unchanged). `sovra serve --workers` sets the variable for its workers; this covers
    a single process, where numpy is already loaded before the server starts.
    """
    if os.environ.get("OPENBLAS_NUM_THREADS"):
        return False
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return True


def freeze_startup_heap() -> int:
    """Collect once, then move every object alive now (the models, the tokenizers'
    vocabularies, the index's tables, the web framework) into the collector's permanent
    generation, so a full collection while serving walks only what requests created. The
    count of objects frozen.

    A warmed server holds ~230k container objects; one full collection of them took 150-280 ms
    (small site, 2-core VM), a pause that every request in flight in that worker waits out.
    Frozen objects are still freed when their last reference goes; only cycles among them are
    never collected, and start-up leaves none behind once collected here. For the serving
    process only (`create_app(freeze_heap=True)`): a test process that builds many apps would
    pin each one's cycles.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class ModelSlots:
    """One per process: a bounded number of concurrent model calls on one Workspace."""

    def __init__(
        self, ws: Workspace, model_slots: int | None = None, *, processes: int = 1
    ) -> None:
        """`processes`: server workers sharing the cores, so each takes its share of them."""
        self.ws = ws
        self._lock = threading.Lock()
        slots = model_slots or max(1, (os.cpu_count() or 1) // processes)
        self._slots = threading.BoundedSemaphore(slots)
        if slots * processes > 1 and ws.config.embedding.threads is None:
            # Each slot is one model call; a call that also spreads over every core makes the
            # calls spin against each other (measured: 1.4-1.8 s per question embedding with
            # two threads under load, 68-113 ms with one). One intra-op thread per call.
            import torch

            torch.set_num_threads(1)
        one_blas_thread()

    def warm(self) -> None:
        """Open every store and load the model now, not on the first request."""
        with self._lock:
            _ = self.ws.index, self.ws.embedder, self.ws.state, self.ws.audit

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one model-using call (a search) in a slot."""
        with self._slots:
            return fn(*args, **kwargs)

    def stream(self, events: Iterator[T]) -> Iterator[T]:
        """Hold a slot while `events` (an answer stream) runs; it is released when the stream
        ends, fails, or is closed (a client that disconnects closes the generator)."""
        self._slots.acquire()
        try:
            yield from events
        finally:
            self._slots.release()
