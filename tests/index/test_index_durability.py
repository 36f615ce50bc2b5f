"""Crash safety: kill -9 in the middle of a stream of writes leaves a consistent index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.index import Opener, everyone

WORKER = Path(__file__).with_name("index_crash_worker.py")


def _kill_mid_write(
    backend: str, path: Path, progress: Path, min_version: int, url: str | None
) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    if url is not None:
        env["SOVRA_TEST_INDEX_URL"] = url
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), backend, str(path), str(progress)], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if progress.exists() and int(progress.read_text()) >= min_version:
                break
            if proc.poll() is not None:
                pytest.fail(f"crash worker exited early with {proc.returncode}")
            time.sleep(0.01)
        else:
            pytest.fail("crash worker made no progress")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("round_", [1, 2])
def test_kill_9_mid_write_keeps_previous_state(
    backend: str, opener: Opener, tmp_path: Path, round_: int, request: pytest.FixtureRequest
) -> None:
    path = tmp_path / "index"
    progress = tmp_path / "progress"
    url = str(request.getfixturevalue("pg_app_url")) if backend == "postgres" else None
    _kill_mid_write(backend, path, progress, min_version=3 * round_, url=url)
    idx = opener(dimension=4, path=path)
    try:
        assert idx.count() == 15
        assert idx.document_ids() == {"d0", "d1", "d2"}
        versions = set()
        for doc in ("d0", "d1", "d2"):
            chunks = idx.chunks_of(doc)
            assert [c.position for c in chunks] == [0, 1, 2, 3, 4]
            versions.update(c.text.split()[0] for c in chunks)
        # One batch is one transaction: all 15 chunks come from the same version.
        assert len(versions) == 1, versions
        (version,) = versions
        assert int(version[1:]) >= int(progress.read_text())
        hits = idx.search_text(version, "en", 20, everyone())
        assert len(hits) == 15
    finally:
        idx.close()
