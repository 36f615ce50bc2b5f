"""A throwaway MariaDB server for tests: Debian's `mariadbd` on 127.0.0.1, a free port, a temp
datadir, stopped (and its files removed) at the end of the session.

Without the binaries the tests skip locally but fail under CI=true (`.ci/run` installs
mariadb-server), so CI cannot silently drop them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MariaDB:
    host: str
    port: int
    socket: Path

    def url(self, database: str = "", user: str = "root", password: str = "") -> str:
        auth = f"{user}:{password}" if password else user
        return f"mysql+pymysql://{auth}@{self.host}:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()),
        None,
    )


@contextlib.contextmanager
def running_mariadb() -> Iterator[MariaDB]:
    server, install = _binary("mariadbd"), _binary("mariadb-install-db")
    if server is None or install is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but mariadbd is not installed (.ci/run installs mariadb-server)")
        pytest.skip("mariadbd not installed (apt-get install mariadb-server)")
    root = Path(tempfile.mkdtemp(prefix="sovra-mariadb-"))
    data, sock, port = root / "data", root / "mysqld.sock", _free_port()
    user = [] if os.geteuid() != 0 else ["--user=root"]
    subprocess.run(
        [install, f"--datadir={data}", "--auth-root-authentication-method=normal",
         "--skip-test-db", *user],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
         "--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin",
         f"--pid-file={root / 'mysqld.pid'}", "--innodb-buffer-pool-size=16M",
         "--innodb-log-file-size=8M", "--performance-schema=OFF", *user],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    "mariadbd exited: " + (root / "server.log").read_text(errors="replace")[-2000:]
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not listen within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        yield MariaDB("127.0.0.1", port, sock)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
