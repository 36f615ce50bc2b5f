"""Connector listing cost: git tree diff vs a full tree walk, sql updated_at vs row-hash listing.

    python -m bench.bench_connectors [--files 5000] [--changed 10] [--rows 20000]

The git repository and the SQLite table are built in a temp folder; nothing is indexed, only
`list()` is timed (what every sync pays before fetching anything). Writes
bench/results/connectors.json.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from sovra.config import GitSource, SqlSource
from sovra.sources.git import GitConnector
from sovra.sources.sql import SqlConnector
from tests.sources.gitrepo import Repo

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _timed(conn: GitConnector | SqlConnector) -> tuple[float, int]:
    started = time.perf_counter()
    n = sum(1 for _ in conn.list())
    return time.perf_counter() - started, n


def bench_git(tmp: Path, files: int, changed: int) -> dict[str, float | int]:
    repo = Repo(tmp / "repo", bare=True)
    content = {
        f"team{i % 20}/area{i % 7}/doc{i}.md": f"# Doc {i}\n\nbody {i}\n".encode()
        for i in range(files)
    }
    repo.commit(content)
    source = GitSource(name="b", kind="git", path=repo.path, access=("group:x",))
    conn = GitConnector(source, repo.path, cache_dir=tmp / "cache")
    full_s, n = _timed(conn)
    for i in range(changed):
        content[f"team{i % 20}/area{i % 7}/doc{i}.md"] = f"# Doc {i}\n\nedited\n".encode()
    repo.commit(content)
    diff_s, _ = _timed(conn)
    assert not conn.walked_full_tree
    return {"files": n, "changed": changed, "full_walk_s": full_s, "tree_diff_s": diff_s}


def bench_sql(tmp: Path, rows: int) -> dict[str, float | int]:
    db = tmp / "rows.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, body TEXT, ts TEXT)")
        c.executemany(
            "INSERT INTO t VALUES (?, ?, ?, '2026-01-01T00:00:00')",
            ((i, f"row {i}", "lorem ipsum " * 40) for i in range(rows)),
        )
    out: dict[str, float | int] = {"rows": rows}
    for label, extra in (("row_hash_s", {}), ("updated_at_s", {"updated_at_column": "ts"})):
        src = SqlSource.model_validate(
            {"name": "b", "kind": "sql", "url": f"sqlite:///{db}", "table": "t",
             "id_column": "id", "title_column": "name", **extra}
        )  # fmt: skip
        conn = SqlConnector(src)
        out[label], _ = _timed(conn)
        conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--out", default=str(RESULTS / "connectors.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "git": bench_git(Path(tmp), args.files, args.changed),
            "sql_sqlite": bench_sql(Path(tmp), args.rows),
        }
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
