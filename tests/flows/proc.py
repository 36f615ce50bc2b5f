"""Runs one flows command in its own process (so a test can SIGKILL it): `python proc.py DIR CMD`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flows_support import TICKET, adapters, classifiers, config

from sovra.flows.service import Flows


def main() -> None:
    tmp, cmd, *args = sys.argv[1:]
    site = Path(tmp)
    flows = Flows(config(site), adapters=adapters(site), classifiers=classifiers())
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
