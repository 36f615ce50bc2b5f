"""Runs one flows command in its own process (so a test can SIGKILL it):
`python flow_crash_worker.py DIR CMD`."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.support

from sovra.workspace import open_flows
from tests.support.flows import TICKET, adapters, classifiers, config


def _crash_after_opening_approvals() -> None:
    """SIGKILL right after the approval is opened, before DBOS checkpoints the step."""
    from sovra.flows.runner import Engine

    original = Engine._open_approval

    def crashing(self: Engine, run: Any, step: Any) -> dict[str, Any]:
        result = original(self, run, step)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    Engine._open_approval = crashing  # type: ignore[method-assign]


def main() -> None:
    if os.environ.get("SOVRA_TEST_CRASH") == "approval:after":
        _crash_after_opening_approvals()
    tmp, cmd, *args = sys.argv[1:]
    site = Path(tmp)
    flows = open_flows(config(site), adapters=adapters(site), classifiers=classifiers())
    try:
        if cmd == "start":
            run = flows.start("ticket", {**TICKET, "impact": int(args[0])}, "bob")
        elif cmd == "approve":
            run = flows.approve(args[0], "erin")
        else:
            flows.recover()
            run = flows.run(args[0])
        print(json.dumps(run.to_dict()))
    finally:
        flows.close()


if __name__ == "__main__":
    main()
