"""Appends to an audit log, printing `ack <index> <n>` once each append returned (i.e. is
durable): forever for the crash test (which kills it with SIGKILL mid-burst), or `limit`
events for the two-writer test. Usage: worker HOME URL SCHEMA [LIMIT [FIRST_N]]."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.support

from sovra.audit import AuditLog
from tests.support.audit import make_event


def main() -> None:
    home, url, schema = Path(sys.argv[1]), sys.argv[2] or None, sys.argv[3]
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
    n = start = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    log = AuditLog.open(home, url, schema=schema)
    while limit is None or n - start < limit:
        if n % 3 == 2:
            receipts = log.append_many([make_event(n + k) for k in range(7)])
            for k, r in enumerate(receipts):
                print(f"ack {r.index} {n + k}", flush=True)
            n += 7
        else:
            r = log.append(make_event(n))
            print(f"ack {r.index} {n}", flush=True)
            n += 1
    log.close()


if __name__ == "__main__":
    main()
