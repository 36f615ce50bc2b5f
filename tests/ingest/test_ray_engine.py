"""`sync_source_ray` on a real local Ray cluster (head + one extra node) against the local sync.

The cluster is started once per session (about 10-15 s, ~1 GB RSS for both nodes); when Ray
cannot start, the fixture fails — the Ray engine is part of `make test`, not optional there.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sovra.ingest import StateStore, SyncOptions, sync_source
from sovra.ingest.ray_engine import RayAddressError, RayOptions, sync_source_ray
from tests.support.ingest import FakeEmbedder, MemoryIndex, connector, copy_tree
from tests.support.ray_ingest import PidConnector, PidEmbedder, TorchThreadsEmbedder

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    assert time.perf_counter() - started < 90, "the Ray test cluster took too long to start"
    assert ray.cluster_resources().get("CPU") == 2
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "hb"
    copy_tree("handbook/content/benefits-pay-perks", r / "benefits")
    copy_tree("runbooks/alerts/cluster-etcd-operator", r / "runbooks")
    copy_tree("handbook/content/company", r / "company", limit=20)
    return r


def chunks_of(index: MemoryIndex) -> dict[str, dict[str, Any]]:
    """chunk id → every field of the chunk (text, labels, offsets, embedding)."""
    return {c.id: dataclasses.asdict(c) for c in index.all_chunks()}


def local_sync(root: Path, tmp: Path) -> tuple[MemoryIndex, StateStore]:
    index, state = MemoryIndex(), StateStore(tmp / "local-state.db")
    report = sync_source(connector(root), "hb", index, FakeEmbedder(), state)
    assert report.ok and not report.failed
    return index, state


def test_ray_sync_gives_exactly_the_local_chunks_and_state(
    ray_cluster: Any, root: Path, tmp_path: Path
) -> None:
    local_index, local_state = local_sync(root, tmp_path)
    index, state = MemoryIndex(), StateStore(tmp_path / "ray-state.db")
    seen: list[tuple[int, int, str | None]] = []
    # Small batches so the work really spreads over several tasks and both nodes.
    report = sync_source_ray(
        connector(root),
        "hb",
        index,
        FakeEmbedder(),
        state,
        lambda *a: seen.append(a),
        options=SyncOptions(batch_chunks=16),
        ray_options=RayOptions(embed_actors=2),
    )
    assert report.ok and not report.failed
    expected = chunks_of(local_index)
    assert len(expected) > 100
    assert chunks_of(index) == expected  # same ids, texts, labels, offsets and vectors
    assert index.bulk_calls > 4
    assert state.versions("hb") == local_state.versions("hb")  # versions and pipeline
    assert state.counts("hb") == local_state.counts("hb")
    n = len(local_state.versions("hb"))
    assert sorted(report.added) == sorted(local_state.versions("hb")) and len(report.added) == n
    assert seen[0][:2] == (0, n) and seen[-1][:2] == (n, n)
    assert "fetch_parse" in report.timings and "embed" in report.timings


def test_second_ray_sync_skips_unchanged_and_applies_changes(
    ray_cluster: Any, root: Path, tmp_path: Path
) -> None:
    index, state = MemoryIndex(), StateStore(tmp_path / "state.db")
    first = sync_source_ray(connector(root), "hb", index, FakeEmbedder(), state)
    total = len(first.added)
    before = len(index.replace_calls)

    again = sync_source_ray(connector(root), "hb", index, FakeEmbedder(), state)
    assert again.unchanged == total and not again.added and not again.updated
    assert again.chunks_written == 0 and len(index.replace_calls) == before

    # A local sync after a Ray sync sees the same fingerprint: nothing to do either.
    local = sync_source(connector(root), "hb", index, FakeEmbedder(), state)
    assert local.unchanged == total and local.chunks_written == 0

    changed = sorted(root.rglob("*.md"))[0]
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\nA new paragraph.\n")
    gone = sorted(root.rglob("*.md"))[-1]
    gone.unlink()
    third = sync_source_ray(connector(root), "hb", index, FakeEmbedder(), state)
    rel = changed.relative_to(root).as_posix()
    assert third.updated == [rel] and third.deleted == [gone.relative_to(root).as_posix()]
    assert third.unchanged == total - 2
    assert f"hb:{gone.relative_to(root).as_posix()}" not in index.document_ids()
    assert any("A new paragraph." in c.text for c in index.chunks_of(f"hb:{rel}"))


def test_killing_workers_mid_sync_loses_and_doubles_nothing(
    ray_cluster: Any, root: Path, tmp_path: Path
) -> None:
    local_index, local_state = local_sync(root, tmp_path)
    pids = tmp_path / "pids"
    pids.mkdir()
    base = connector(root)
    conn = PidConnector(base.source, root)
    conn.pids = pids
    killed: list[str] = []

    def kill_some(done: int, total: int, current: str | None) -> None:
        if killed or done < 3:
            return
        # One embedding actor process and one parse/chunk worker process, SIGKILL.
        for kind in ("embed", "fetch"):
            victims = sorted(p for p in pids.iterdir() if p.name.startswith(kind + "-"))
            if victims:
                pid = int(victims[0].name.split("-")[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(f"{kind}-{pid}")

    index, state = MemoryIndex(), StateStore(tmp_path / "ray-state.db")
    report = sync_source_ray(
        conn,
        "hb",
        index,
        FakeEmbedder(),
        state,
        kill_some,
        options=SyncOptions(batch_chunks=8),
        ray_options=RayOptions(in_flight=2),
        embedder_factory=lambda: PidEmbedder(pids, delay=0.05),
    )
    assert any(k.startswith("embed-") for k in killed) and any(
        k.startswith("fetch-") for k in killed
    ), killed
    # The actor was restarted in a new process and went on embedding.
    assert len([p for p in pids.iterdir() if p.name.startswith("embed-")]) >= 2
    assert report.ok and not report.failed
    assert chunks_of(index) == chunks_of(local_index)
    ids = [c.id for c in index.all_chunks()]
    assert len(ids) == len(set(ids))
    assert state.versions("hb") == local_state.versions("hb")
    assert sorted(report.added) == sorted(local_state.versions("hb"))


def _actor_threads(root: Path, out: Path, ray_options: RayOptions) -> set[int]:
    """The PyTorch thread counts of the embedding actors of one Ray sync of `root`."""
    out.mkdir()
    report = sync_source_ray(
        connector(root),
        out.name,
        MemoryIndex(),
        FakeEmbedder(),
        StateStore(out / "state.db"),
        ray_options=ray_options,
        embedder_factory=lambda: TorchThreadsEmbedder(out),
    )
    assert report.ok and report.chunks_written
    return {int(p.name.rsplit("-", 1)[1]) for p in out.glob("threads-*")}


def test_embedding_actor_runs_its_model_on_every_cpu_of_its_node(
    ray_cluster: Any, root: Path, tmp_path: Path
) -> None:
    # Ray starts workers with OMP_NUM_THREADS=1 for a 0-CPU actor; a PyTorch model there ran
    # single-threaded, half the local pipeline's speed on this 2-core machine.
    every_cpu = {len(os.sched_getaffinity(0))}
    assert _actor_threads(root, tmp_path / "unreserved", RayOptions()) == every_cpu
    # A reservation sets the count instead: 1 CPU reserved, one thread.
    assert _actor_threads(root, tmp_path / "reserved", RayOptions(embed_cpus=1)) == {1}


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("not an address", "is not HOST:PORT"),
        ("127.0.0.1:99999", "is not HOST:PORT"),
        ("127.0.0.1:1", "no Ray cluster answers at '127.0.0.1:1'"),
    ],
)
def test_bad_address_is_a_clear_error(
    ray_cluster: Any, root: Path, tmp_path: Path, address: str, message: str
) -> None:
    index, state = MemoryIndex(), StateStore(tmp_path / "state.db")
    started = time.perf_counter()
    with pytest.raises(RayAddressError, match=message) as err:
        sync_source_ray(
            connector(root),
            "hb",
            index,
            FakeEmbedder(),
            state,
            ray_options=RayOptions(address=address, connect_timeout_s=2),
        )
    assert "--address" in (err.value.hint or "")
    assert time.perf_counter() - started < 10
    assert not index.docs and not state.versions("hb")
