"""The approximate vector path of the embedded index: a usearch HNSW graph over chunk rowids.

Why this shape (docs/configuration.md, "`[index] ann`"):

* **The graph is a cache, never a source of truth.** Keys are SQLite rowids, which are never
  reused (AUTOINCREMENT) and change whenever a chunk is replaced, so the set of keys the graph
  should hold is exactly the live rowids with an embedding. A stale graph (a crash before it was
  saved, an older file) is reconciled against that set when it is loaded: stale keys removed,
  missing ones added. Saving writes a temp file and renames it.
* **The permission filter is exact.** usearch 2.26's Python binding has no search predicate, so
  the caller over-fetches candidates in proportion to the filter's selectivity and keeps only
  the ones the filter's exact slot mask admits, widening until k admitted candidates are found,
  and falls back to exact search otherwise. A candidate the mask excludes is never returned: the
  graph decides only which admitted chunks are considered, never what a caller may see.
* **Selective filters skip the graph.** When few chunks are admitted (`exact_max`), or the
  over-fetch a filter needs would walk a large share of the graph (`exact_share`), scoring the
  admitted rows exactly is both faster and exact (recall 1.0). A walk that wide still misses
  the few nodes an HNSW graph reaches poorly: one CI run measured recall 0.987 at 1%
  selectivity with a fetch of 80% of the graph.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from usearch.index import Index as _Hnsw

AnnMode = Literal["auto", "off", "on"]

ANN_MIN_CHUNKS = 200_000
"""Default switch-on size of `auto`: below it exact search meets p99 <= 100 ms (cost curve)."""

ANN_EXACT_MAX = 30_000
"""A filter admitting at most this many vector rows is searched exactly over that subset."""

GRAPH_NAME = "ann.usearch"


def _hnsw_class() -> type[_Hnsw]:
    """usearch, loaded only when a graph is built. Its extension links libstdc++ statically, so
    if it is the first pybind11 module of the process a later `import onnxruntime` (the query
    embedder) segfaults in libstdc++ (the pattern of pytorch/pytorch#109923; reproduced with
    usearch 2.26.6 + onnxruntime 1.32.0). onnxruntime is loaded first: in that order both work."""
    import onnxruntime  # type: ignore[import-untyped]  # noqa: F401
    from usearch.index import Index

    return Index


GRAPH_META = "ann.json"
GRAPH_FORMAT = 1

_F32 = npt.NDArray[np.float32]
_U64 = npt.NDArray[np.uint64]


@dataclasses.dataclass(frozen=True)
class AnnSettings:
    """How the embedded index uses the graph (`[index] ann`, `ann_min_chunks` in sovra.toml).

    `mode`: `off` never builds one; `on` always uses it; `auto` once at least `min_chunks`
    vectors are indexed. A filtered search goes exact when it admits at most `exact_max` rows
    or its over-fetch would reach `exact_share` of the graph (above 1: never by share, which
    tests use to drive every search through the graph). HNSW parameters: `connectivity` (M),
    `expansion_add` (efConstruction) and `expansion_search` (ef, raised to the candidate count
    of each query).
    """

    mode: AnnMode = "auto"
    min_chunks: int = ANN_MIN_CHUNKS
    exact_max: int = ANN_EXACT_MAX
    exact_share: float = 0.5
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 256

    def wanted(self, vectors: int) -> bool:
        """Whether an index of `vectors` embedded chunks should search through the graph."""
        if self.mode == "off":
            return False
        return self.mode == "on" or vectors >= self.min_chunks


class AnnGraph:
    """An HNSW graph of normalised vectors keyed by chunk rowid, with batched pending updates.

    Writes to the index only queue additions and removals (cheap, inside the write lock);
    `flush` applies them in one multi-threaded batch before the next search.
    """

    def __init__(self, dimension: int, settings: AnnSettings) -> None:
        self.dimension = dimension
        self.settings = settings
        self._graph = self._new()
        self._add: dict[int, _F32] = {}
        self._remove: set[int] = set()
        self.dirty = False

    def _new(self) -> _Hnsw:
        s = self.settings
        return _hnsw_class()(
            ndim=self.dimension,
            metric="ip",  # vectors are stored normalised: inner product is cosine
            dtype="f32",
            connectivity=s.connectivity,
            expansion_add=s.expansion_add,
            expansion_search=s.expansion_search,
        )

    def __len__(self) -> int:
        return len(self._graph) + len(self._add)

    def queue_add(self, rowids: npt.ArrayLike, vectors: _F32) -> None:
        for r, v in zip(np.asarray(rowids).tolist(), vectors, strict=True):
            self._add[int(r)] = v
        self.dirty = True

    def queue_remove(self, rowids: npt.ArrayLike) -> None:
        for r in np.asarray(rowids).tolist():
            if self._add.pop(int(r), None) is None:
                self._remove.add(int(r))
        self.dirty = True

    def flush(self) -> None:
        if self._remove:
            keys = np.fromiter(self._remove, dtype=np.uint64, count=len(self._remove))
            present = np.asarray(self._graph.contains(keys), dtype=np.bool_).reshape(-1)
            if present.any():
                self._graph.remove(keys[present])
            self._remove.clear()
        if self._add:
            keys = np.fromiter(self._add, dtype=np.uint64, count=len(self._add))
            vecs = np.stack(list(self._add.values())).astype(np.float32, copy=False)
            self._graph.add(keys, vecs, threads=0)
            self._add.clear()

    def search(self, query: _F32, count: int) -> _U64:
        """Keys of about the `count` nearest vectors, best first (apply pending writes first)."""
        self.flush()
        if len(self._graph) == 0:
            return np.empty(0, dtype=np.uint64)
        count = min(count, len(self._graph))
        # Raising ef to the candidate count keeps recall up when a filter forces a wide fetch.
        # usearch declares the setter after another property; mypy misreads it as read-only.
        self._graph.expansion_search = max(self.settings.expansion_search, count)  # type: ignore[misc]
        found = self._graph.search(query, count, threads=1)
        return np.asarray(found.keys, dtype=np.uint64).reshape(-1)

    def reconcile(
        self, live_rowids: npt.NDArray[np.int64], vector_of: Callable[[npt.NDArray[np.int64]], _F32]
    ) -> None:
        """Make the key set equal `live_rowids` (a loaded graph may lag the database)."""
        self.flush()
        have = np.asarray(self._graph.keys, dtype=np.uint64).reshape(-1).astype(np.int64)
        stale = have[~np.isin(have, live_rowids)]
        missing = live_rowids[~np.isin(live_rowids, have)]
        if stale.size:
            self.queue_remove(stale)
        if missing.size:
            self.queue_add(missing, vector_of(missing))
        self.flush()

    # ----------------------------------------------------------------- persistence

    def save(self, directory: Path, db_id: str) -> None:
        """Write the graph (temp file + rename); failure only means a rebuild on next open."""
        self.flush()
        path = directory / GRAPH_NAME
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            self._graph.save(str(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            meta = directory / GRAPH_META
            mtmp = meta.with_suffix(".tmp")
            mtmp.write_text(json.dumps(self._meta(db_id)), encoding="utf-8")
            os.chmod(mtmp, 0o600)
            os.replace(mtmp, meta)
            self.dirty = False

    def _meta(self, db_id: str) -> dict[str, object]:
        s = self.settings
        return {
            "format": GRAPH_FORMAT,
            "db_id": db_id,
            "dimension": self.dimension,
            "connectivity": s.connectivity,
        }

    @classmethod
    def load(cls, directory: Path, dimension: int, settings: AnnSettings, db_id: str) -> AnnGraph:
        """The saved graph of this database if readable and compatible, else an empty one."""
        graph = cls(dimension, settings)
        path, meta = directory / GRAPH_NAME, directory / GRAPH_META
        try:
            if json.loads(meta.read_text(encoding="utf-8")) != graph._meta(db_id):
                return graph
            graph._graph.load(str(path))
        except (OSError, ValueError, RuntimeError):
            return cls(dimension, settings)  # unreadable or foreign: rebuilt from memory
        if graph._graph.ndim != dimension:
            return cls(dimension, settings)
        return graph

    @staticmethod
    def discard(directory: Path) -> None:
        for name in (GRAPH_NAME, GRAPH_META):
            (directory / name).unlink(missing_ok=True)
