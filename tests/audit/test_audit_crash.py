"""kill -9 during a burst of appends: every acknowledged entry survives, no half entry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.audit import LogFactory, make_event

WORKER = Path(__file__).with_name("audit_crash_worker.py")


def test_kill_9_loses_no_acknowledged_entry(logs: LogFactory) -> None:
    logs.home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(logs.home), logs.url or "", logs.schema],
        stdout=subprocess.PIPE,
        text=True,
        env=logs.env(),
    )
    assert proc.stdout is not None
    acked: dict[int, int] = {}
    for line in proc.stdout:
        _, index, n = line.split()
        acked[int(index)] = int(n)
        if len(acked) >= 150:
            os.kill(proc.pid, signal.SIGKILL)
            break
    # Lines already written to the pipe before the kill were acknowledged too.
    for line in proc.stdout:
        _, index, n = line.split()
        acked[int(index)] = int(n)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    log = logs.open()
    report = log.verify()
    assert report.ok, report.problem
    assert log.size >= max(acked) + 1
    stored = {e.index: e.view for e in log.events()}
    for index, n in acked.items():
        assert stored[index]["request_id"] == f"req-{n}", index
    # Every stored entry is whole: parseable and hashing into the verified tree.
    for e in log.events():
        assert json.loads(e.entry)["v"] == 1
    # And the log keeps working after the crash.
    assert log.append(make_event(10_000)).index == log.size - 1
    assert log.verify().ok


def test_two_processes_append_to_one_log(logs: LogFactory) -> None:
    """Two writers (say the server and a CLI) interleave commits; nothing is lost or forked."""
    logs.open().close()  # create the log (origin, key) before the writers race
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(logs.home),
                logs.url or "",
                logs.schema,
                "60",
                str(base),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=logs.env(),
        )
        for base in (0, 100_000)
    ]
    acked: dict[int, int] = {}
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        for line in out.splitlines():
            _, index, n = line.split()
            assert int(index) not in acked, "two writers got the same index"
            acked[int(index)] = int(n)
    log = logs.open()
    assert log.verify().ok
    stored = {e.index: e.view for e in log.events()}
    assert len(stored) == len(acked) >= 120
    for index, n in acked.items():
        assert stored[index]["request_id"] == f"req-{n}"
