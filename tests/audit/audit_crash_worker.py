"""Appends to an audit log forever, printing `ack <index> <n>` once each append returned
(i.e. is durable); the crash test kills it with SIGKILL mid-burst."""

from __future__ import annotations

import sys
from pathlib import Path

from audit_helpers import make_event

from sovra.audit import AuditLog


def main() -> None:
    home, url, schema = Path(sys.argv[1]), sys.argv[2] or None, sys.argv[3]
    log = AuditLog.open(home, url, schema=schema)
    n = 0
    while True:
        if n % 3 == 2:
            receipts = log.append_many([make_event(n + k) for k in range(7)])
            for k, r in enumerate(receipts):
                print(f"ack {r.index} {n + k}", flush=True)
            n += 7
        else:
            r = log.append(make_event(n))
            print(f"ack {r.index} {n}", flush=True)
            n += 1


if __name__ == "__main__":
    main()
