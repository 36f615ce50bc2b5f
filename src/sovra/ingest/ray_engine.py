"""Distributed ingestion on Ray: `sovra source sync --engine ray [--address HOST:PORT]`.

The Ray engine runs the local pipeline (`sovra.ingest.pipeline`) with its two heavy stages
moved onto a Ray cluster, and nothing else changed:

- fetch → parse → language → chunk of each batch is a Ray *task* (the local `prepare`);
- embedding is done by Ray *actors* that hold the model (`num_gpus` pins them to GPU nodes);
- listing, the diff against the state store, deletions, index writes and state writes stay on
  the driver, in batch order, through the local `write` — so chunk ids, texts, labels and the
  pipeline fingerprint are the ones a local sync makes, and the crash-safety argument of the
  local pipeline (index first, state second, replace not append) holds unchanged.

Tasks and actor calls are pure (they read the source and return chunks; they write nothing), so
Ray may retry them after a worker or node dies without doubling anything: a lost task is re-run
(`max_retries`), a dead embedding actor is restarted and its in-flight calls re-sent
(`max_restarts`, `max_task_retries`).

Ray is an optional extra (`pip install 'sovra[ray]'`) imported only here, inside functions.
Ray's usage statistics are switched off before it is imported (`RAY_USAGE_STATS_ENABLED=0`),
a local Ray starts without the dashboard, and nothing here reaches the network
beyond the cluster named by `address`.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sovra.errors import Invalid, Unavailable
from sovra.index.base import Index
from sovra.ingest.pipeline import (
    ProgressCallback,
    SyncOptions,
    SyncReport,
    _Prepared,
    _source_lock,
    _Syncer,
    embed_chunks,
)
from sovra.ingest.state import StateStore
from sovra.models.base import Embedder
from sovra.sources.base import Connector

if TYPE_CHECKING:
    from types import ModuleType

    from sovra.domain import DocumentRef

EmbedderFactory = Callable[[], Embedder]
"""Builds the embedder inside an embedding actor (so the model loads on the worker node)."""


class RayEngineError(Unavailable):
    """Ray is missing, the cluster cannot be reached, or it cannot run the sync."""


class RayAddressError(Invalid, RayEngineError):
    """`--address` is malformed or names no running Ray cluster."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray engine runs; the defaults start a private local Ray."""

    address: str | None = None
    """`HOST:PORT` of a running cluster's GCS (`ray start --head` prints it), `auto`, or
    `ray://HOST:PORT` (Ray Client); None starts a local Ray for this sync and stops it after."""
    num_cpus: int | None = None
    """CPUs of the local Ray that `address=None` starts (None: all of this machine's)."""
    embed_actors: int = 1
    """Embedding actors; each loads the model once."""
    embed_cpus: float = 0.0
    """CPUs each embedding actor reserves. 0 leaves every CPU slot to parse/chunk tasks (the
    model's own threads still run); raise it on big nodes to keep the two apart."""
    num_gpus: float = 0.0
    """GPUs each embedding actor needs: > 0 places the actors on GPU nodes only."""
    in_flight: int | None = None
    """Batches prepared ahead of the writer (None: twice the cluster's CPUs, at least 2)."""
    task_retries: int = 5
    """Re-runs of a parse/chunk task whose worker died."""
    actor_restarts: int = 5
    """Restarts of an embedding actor whose process died (its pending calls are re-sent)."""
    connect_timeout_s: float = 5.0
    """How long to wait for `address` to answer before giving up with a clear error."""


def _import_ray() -> ModuleType:
    # Telemetry off before Ray is imported: a sovereign deployment phones nobody.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        import ray
    except ImportError:
        raise RayEngineError(
            "the Ray engine needs the `ray` extra",
            hint="install it with `pip install 'sovra[ray]'`, or sync with --engine local",
        ) from None
    return ray


def _check_address(address: str, timeout: float) -> None:
    """Fail fast and clearly on a bad address; ray.init alone retries for a long time."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayAddressError(
            f"Ray address {address!r} is not HOST:PORT",
            hint="pass the head node's GCS address, e.g. --address 10.0.0.5:6379, or "
            "ray://HOST:10001 for Ray Client, or leave --address out for a local Ray",
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise RayAddressError(
            f"no Ray cluster answers at {address!r}: {exc.strerror or exc}",
            hint="start one with `ray start --head` and pass the address it prints, "
            "or leave --address out for a local Ray",
        ) from None


@contextmanager
def ray_session(options: RayOptions) -> Iterator[ModuleType]:
    """Ray connected for the duration: reuses a connection the caller already made (tests,
    notebooks), else connects to `address` or starts a local Ray, and disconnects after."""
    ray = _import_ray()
    if options.address is not None:
        _check_address(options.address, options.connect_timeout_s)
    if ray.is_initialized():
        yield ray
        return
    common: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": "WARNING",
        "configure_logging": False,
    }
    if options.address is None:
        kwargs = {**common, "num_cpus": options.num_cpus}
    else:
        kwargs = {"address": options.address, "log_to_driver": False}
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = options.address or "a local Ray"
        raise RayEngineError(
            f"cannot start or join {where}: {exc}",
            hint="check the address and that the cluster runs Ray "
            f"{getattr(ray, '__version__', '?')} with Python of the same minor version",
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


class _Ship:
    """A value sent to an embedding actor that builds its embedder from it."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def __call__(self) -> Embedder:
        return self.embedder


def _prepare(connector: Connector, source: str, options: SyncOptions, refs: list[Any]) -> Any:
    """Runs in a Ray worker: the local pipeline's fetch/parse/language/chunk of one batch."""
    # Only `prepare` is used: it needs the connector, the source name and the options.
    worker = _Syncer(
        connector, source, cast(Index, None), None, cast(StateStore, None), None, options
    )
    return worker.prepare(refs)


def actor_threads(embed_cpus: float) -> int:
    """Intra-op threads of an embedding actor: the CPUs it reserves, or, reserving none, every
    CPU of its node (what the local pipeline gives its model)."""
    if embed_cpus >= 1:
        return int(embed_cpus)
    return max(1, len(os.sched_getaffinity(0)))


def _use_threads(threads: int) -> None:
    # Ray starts every worker with OMP_NUM_THREADS=<its CPU reservation>, 1 for a reservation
    # of 0; PyTorch reads it, so an actor's model ran on one thread (half the local speed on
    # 2 cores). ONNX embedders set their own thread count and are not affected by this.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class _EmbedActor:
    """Holds one embedder (the model stays loaded between batches) and embeds batches."""

    def __init__(self, factory: EmbedderFactory, embed_context: bool, embed_cpus: float) -> None:
        _use_threads(actor_threads(embed_cpus))
        self.embedder = factory()
        self.embed_context = embed_context

    def describe(self) -> tuple[str, int]:
        return self.embedder.name, self.embedder.dimension

    def pid(self) -> int:
        return os.getpid()

    def embed(self, batch: _Prepared) -> _Prepared:
        t = time.perf_counter()
        embed_chunks(
            self.embedder,
            [c for _, cs in batch.docs for c in cs],
            self.embed_context,
        )
        batch.timings["embed"] = batch.timings.get("embed", 0.0) + time.perf_counter() - t
        return batch


class _RaySyncer(_Syncer):
    """The local syncer with `prepare` (and the embedding inside `write`) served by Ray."""

    def __init__(
        self,
        ray: ModuleType,
        ray_options: RayOptions,
        embedder_factory: EmbedderFactory | None,
        connector: Connector,
        source: str,
        index: Index,
        embedder: Embedder | None,
        state: StateStore,
        progress: ProgressCallback | None,
        options: SyncOptions,
    ) -> None:
        super().__init__(connector, source, index, embedder, state, progress, options)
        self.ray = ray
        self.ray_options = ray_options
        self.embedder_factory = embedder_factory
        self.actors: list[Any] = []
        self.pending: deque[tuple[tuple[str, ...], Any]] = deque()
        self.queued: deque[list[DocumentRef]] = deque()
        self.submitted = 0

    def start(self) -> None:
        ray, ro = self.ray, self.ray_options
        try:
            self.connector_ref = ray.put(self.connector)
        except Exception as exc:  # cloudpickle raises many kinds
            raise RayEngineError(
                f"source {self.source!r}: its connector cannot be sent to Ray workers "
                f"({type(exc).__name__}: {exc})",
                hint="sync this source with --engine local",
            ) from None
        self.prepare_task = ray.remote(_prepare).options(
            num_cpus=1, max_retries=ro.task_retries, retry_exceptions=False
        )
        if self.embedder is None:
            return
        factory = self.embedder_factory or _Ship(self.embedder)
        actor_cls = ray.remote(_EmbedActor).options(
            num_cpus=ro.embed_cpus,
            num_gpus=ro.num_gpus,
            max_restarts=ro.actor_restarts,
            max_task_retries=ro.actor_restarts,
        )
        self.actors = [
            actor_cls.remote(factory, self.options.embed_context, ro.embed_cpus)
            for _ in range(max(1, ro.embed_actors))
        ]
        want = (self.embedder.name, self.embedder.dimension)
        try:
            seen = ray.get([a.describe.remote() for a in self.actors])
        except Exception as exc:
            raise RayEngineError(
                f"the embedding actors could not load the model: {type(exc).__name__}: {exc}",
                hint="every Ray node needs the models at the paths sovra.toml names",
            ) from None
        for got in seen:
            if tuple(got) != want:
                # The state's pipeline fingerprint names the driver's model: a different
                # model on a worker would store vectors the fingerprint does not describe.
                raise RayEngineError(
                    f"a Ray worker loaded embedder {got[0]}/{got[1]}, this sync expects "
                    f"{want[0]}/{want[1]}",
                    hint="install the same model on every node",
                )

    def batches(self, work: Sequence[DocumentRef]) -> list[list[DocumentRef]]:
        out = super().batches(work)
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.window = self.ray_options.in_flight or max(2, 2 * cpus)
        self.queued.extend(out)
        self._fill()
        return out

    def _fill(self) -> None:
        while self.queued and len(self.pending) < self.window:
            refs = self.queued.popleft()
            ref = self.prepare_task.remote(self.connector_ref, self.source, self.options, refs)
            if self.actors:
                actor = self.actors[self.submitted % len(self.actors)]
                ref = actor.embed.remote(ref)
            self.submitted += 1
            self.pending.append((tuple(r.external_id for r in refs), ref))

    def prepare(self, refs: Sequence[DocumentRef]) -> _Prepared:
        # The local loop asks for batches in order; Ray has had them running since `batches`.
        key, ref = self.pending.popleft()
        if key != tuple(r.external_id for r in refs):
            raise RuntimeError("Ray engine: batches came back out of order")
        self._fill()
        batch: _Prepared = self.ray.get(ref)
        return batch

    def write(self, batch: _Prepared, indexed: set[str]) -> None:
        # The batch is already embedded by an actor: the local write must not embed again.
        embedder, self.embedder = self.embedder, None
        try:
            super().write(batch, indexed)
        finally:
            self.embedder = embedder


def sync_source_ray(
    connector: Connector,
    source_name: str | None,
    index: Index,
    embedder: Embedder | None,
    state_store: StateStore,
    progress: ProgressCallback | None = None,
    *,
    options: SyncOptions | None = None,
    ray_options: RayOptions | None = None,
    embedder_factory: EmbedderFactory | None = None,
) -> SyncReport:
    """`sync_source` with parse/chunk/embed on Ray; same result, same report, same state.

    `embedder` (on the driver) names the model and dimension the state records;
    `embedder_factory` builds the same embedder in each actor (default: the driver's embedder,
    pickled). Raises RayEngineError when Ray is missing or the cluster cannot be reached.
    """
    name = source_name or connector.name
    ro = ray_options or RayOptions()
    with ray_session(ro) as ray, _source_lock(state_store, name):
        syncer = _RaySyncer(
            ray,
            ro,
            embedder_factory,
            connector,
            name,
            index,
            embedder,
            state_store,
            progress,
            options or SyncOptions(),
        )
        try:
            syncer.start()
            return syncer.run()
        finally:
            for actor in syncer.actors:
                ray.kill(actor, no_restart=True)
