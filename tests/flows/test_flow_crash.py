"""kill -9 mid-run, before and after an action: the next process resumes the run and every
action happens exactly once. Each command runs in its own process
(tests/flows/flow_crash_worker.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sovra.workspace import open_flows
from tests.support.flows import TICKET, adapters, calls, classifiers, config, effects, make_site

WORKER = Path(__file__).with_name("flow_crash_worker.py")


def _proc(site: Path, *args: str, crash: str = "", slow: str = "") -> subprocess.Popen[str]:
    env = {**os.environ, "SOVRA_TEST_CRASH": crash, "SOVRA_TEST_SLOW": slow}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(site), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ok(site: Path, *args: str, crash: str = "") -> dict[str, Any]:
    p = _proc(site, *args, crash=crash)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _killed(site: Path, *args: str, crash: str) -> None:
    p = _proc(site, *args, crash=crash)
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, err


@pytest.mark.parametrize("point", ["before", "after"])
def test_kill_9_around_an_action_then_resume_exactly_once(tmp_path: Path, point: str) -> None:
    make_site(tmp_path)
    run = _ok(tmp_path, "start", "3")
    assert run["status"] == "waiting_approval"

    # The approval's process dies by SIGKILL just before / just after the ticket store acts.
    _killed(tmp_path, "approve", run["id"], crash=f"store:{point}")
    db = tmp_path / "effects.db"
    assert len(effects(db, "store")) == (1 if point == "after" else 0)
    assert effects(db, "mail") == []

    resumed = _ok(tmp_path, "recover", run["id"])
    assert resumed["status"] == "completed"
    assert [k for _, k, _ in effects(db, "store")] == [f"{run['id']}:update"]
    assert [k for _, k, _ in effects(db, "mail")] == [f"{run['id']}:notify"]
    if point == "after":  # the adapter saw the key again and changed nothing
        assert calls(db, "store") == 2
        with open_flows(config(tmp_path), adapters=adapters(tmp_path)) as flows:
            update = flows.show(run["id"])["steps"][3]
        assert update["output"]["replayed"] is True


def test_approval_while_the_killed_segment_is_still_pending(tmp_path: Path) -> None:
    """Killed just after the approval opened (DBOS has not checkpointed that step); an approver
    decides before anything recovered. The replayed old segment must not reopen the approval."""
    make_site(tmp_path)
    _killed(tmp_path, "start", "3", crash="approval:after")
    with open_flows(
        config(tmp_path), adapters=adapters(tmp_path), classifiers=classifiers()
    ) as flows:
        (run,) = flows.runs()
        assert run.status == "waiting_approval"
    done = _ok(tmp_path, "approve", run.id)
    assert done["status"] == "completed"
    with open_flows(config(tmp_path), adapters=adapters(tmp_path)) as flows:
        steps = {s["id"]: s for s in flows.show(run.id)["steps"]}
    assert steps["approval"]["status"] == "done"
    assert steps["approval"]["output"] == {"approved": True, "approvers": ["erin"]}
    db = tmp_path / "effects.db"
    assert len(effects(db, "store")) == 1 and len(effects(db, "mail")) == 1


def test_kill_9_from_outside_mid_step(tmp_path: Path) -> None:
    make_site(tmp_path)
    db = tmp_path / "effects.db"
    p = _proc(tmp_path, "start", "4", slow="mail")
    deadline = time.monotonic() + 60
    while calls(db, "mail") == 0:  # wait until the run is inside the e-mail step
        assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert len(effects(db, "store")) == 1 and effects(db, "mail") == []

    with open_flows(
        config(tmp_path), adapters=adapters(tmp_path), classifiers=classifiers()
    ) as flows:
        (run,) = flows.runs()
        assert run.status == "running"  # as the killed process left it
        flows.recover()
        assert flows.run(run.id).status == "completed"
    assert len(effects(db, "store")) == 1 and len(effects(db, "mail")) == 1


def test_killed_between_approval_and_continuation(tmp_path: Path) -> None:
    """The vote is stored and the run marked running, but no DBOS segment was started."""
    make_site(tmp_path)
    with open_flows(
        config(tmp_path), adapters=adapters(tmp_path), classifiers=classifiers()
    ) as flows:
        run = flows.start("ticket", TICKET, "bob")
        flows.store.set_step(run.id, "approval", "done", {"approved": True, "approvers": ["erin"]})
        flows.store.update_approval(run.id, "approval", status="approved")
        flows.store.next_segment(run.id, 3)
    with open_flows(
        config(tmp_path), adapters=adapters(tmp_path), classifiers=classifiers()
    ) as flows:
        flows.recover()
        assert flows.run(run.id).status == "completed"
    assert len(effects(tmp_path / "effects.db")) == 2
