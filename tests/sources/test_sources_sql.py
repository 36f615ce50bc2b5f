"""SqlConnector against real PostgreSQL and MariaDB: rows in, changed, gone and moved between
teams show up in search after the next sync; writes, timeouts and credentials are contained."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from sovra.config import ConfigError, SqlSource, parse_config
from sovra.sources import SourceUnavailable
from sovra.sources.sql import SqlConnector
from tests.sources.conftest import Database
from tests.sources.harness import Synced

TEAMS = {"sales": ["group:sales"], "support": ["group:support"]}


def sql_source(env: str, **kw: Any) -> SqlSource:
    spec: dict[str, Any] = {
        "name": "catalogue",
        "kind": "sql",
        "url": f"env:{env}",
        "id_column": "id",
        "title_column": "name",
        "text_columns": ["description"],
        "metadata_columns": ["price"],
        "access": ["group:staff"],
        "access_column": "team",
        "access_map": TEAMS,
        **kw,
    }
    return SqlSource.model_validate(spec)


def new_table(db: Database) -> str:
    name = f"products_{uuid.uuid4().hex[:8]}"
    db.run(
        f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name VARCHAR(200), description TEXT,"
        " price DECIMAL(10,2), team VARCHAR(50), updated_at TIMESTAMP NULL)"
    )
    rows = [
        (1, "Aurora lamp", "A brass desk lamp with a warm amber glow", "19.90", "sales"),
        (2, "Borealis kettle", "Stainless kettle, whistles when boiling", "34.00", "support"),
        (3, "Cirrus pillow", "Memory foam pillow for side sleepers", "25.50", "unmapped"),
    ]
    for rid, title, desc, price, team in rows:
        db.run(
            f"INSERT INTO {name} VALUES (:id, :n, :d, :p, :t, CURRENT_TIMESTAMP)",
            id=rid, n=title, d=desc, p=price, t=team,
        )  # fmt: skip
    return name


@pytest.mark.parametrize("incremental", ["updated_at", "row_hash"])
def test_insert_update_delete_and_move_reach_search(
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    db_url_env: str,
    incremental: str,
) -> None:
    table = new_table(database)
    monkeypatch.setenv(db_url_env, database.url)
    extra = {"updated_at_column": "updated_at"} if incremental == "updated_at" else {}
    conn = SqlConnector(sql_source(db_url_env, table=table, **extra))
    synced = Synced(tmp_path, conn)
    try:
        first = synced.sync()
        assert (sorted(first.added), first.failed) == (["1", "2", "3"], {})
        assert synced.documents("brass lamp", ["sales"]) == {"catalogue:1"}
        assert synced.documents("brass lamp", ["support"]) == set()
        # An unmapped team keeps the source default access.
        assert synced.documents("memory foam pillow", ["staff"]) == {"catalogue:3"}
        hit = synced.search("brass lamp", ["sales"])[0]
        assert hit.title == "Aurora lamp" and hit.uri.endswith(f"/{table}#1")

        assert synced.sync().unchanged == 3  # nothing changed, nothing re-read

        database.run(
            f"INSERT INTO {table} VALUES (4, 'Dune rug', 'Handwoven wool rug in sand tones',"
            " 80, 'sales', CURRENT_TIMESTAMP)",
            f"UPDATE {table} SET description = 'Copper kettle with a walnut handle',"
            " updated_at = CURRENT_TIMESTAMP + INTERVAL '1' HOUR WHERE id = 2",
            f"DELETE FROM {table} WHERE id = 3",
        )
        report = synced.sync()
        assert (report.added, report.updated, report.deleted) == (["4"], ["2"], ["3"])
        assert synced.documents("handwoven wool rug", ["sales"]) == {"catalogue:4"}
        assert synced.documents("copper walnut kettle", ["support"]) == {"catalogue:2"}
        assert synced.documents("stainless whistles", ["support"]) == set()
        assert synced.documents("memory foam pillow", ["staff"]) == set()

        # The lamp moves to support without touching updated_at: it leaves sales' results.
        database.run(f"UPDATE {table} SET team = 'support' WHERE id = 1")
        assert synced.sync().updated == ["1"]
        assert synced.documents("brass lamp", ["sales"]) == set()
        assert synced.documents("brass lamp", ["support"]) == {"catalogue:1"}
    finally:
        conn.close()
        synced.close()


def test_max_rows_refuses_the_sync_and_keeps_the_index(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url_env: str
) -> None:
    table = new_table(database)
    monkeypatch.setenv(db_url_env, database.url)
    conn = SqlConnector(sql_source(db_url_env, table=table, max_rows=3, batch_rows=2))
    synced = Synced(tmp_path, conn)
    try:
        assert len(synced.sync().added) == 3
        database.run(f"INSERT INTO {table} VALUES (9, 'Extra', 'one row too many', 1, 'x', NULL)")
        with pytest.raises(SourceUnavailable, match="max_rows=3"):
            synced.sync()
        assert synced.documents("brass lamp", ["sales"]) == {"catalogue:1"}
    finally:
        conn.close()
        synced.close()


def test_query_source_runs_read_only(
    database: Database, monkeypatch: pytest.MonkeyPatch, db_url_env: str
) -> None:
    """A SELECT that passes the keyword check but calls a function that writes is stopped by
    the read-only transaction, and nothing is written."""
    table = new_table(database)
    log = f"writes_{uuid.uuid4().hex[:6]}"
    fn = f"sneaky_{uuid.uuid4().hex[:6]}"
    database.run(f"CREATE TABLE {log} (n INTEGER)")
    if database.kind == "postgres":
        database.run(
            f"CREATE FUNCTION {fn}() RETURNS integer LANGUAGE plpgsql AS"
            f" $$ BEGIN INSERT INTO {log} VALUES (1); RETURN 1; END $$"
        )
    else:
        database.run(
            f"CREATE FUNCTION {fn}() RETURNS INTEGER MODIFIES SQL DATA"
            f" BEGIN INSERT INTO {log} VALUES (1); RETURN 1; END"
        )
    monkeypatch.setenv(db_url_env, database.url)
    query = f"SELECT id, name, description, price, team, {fn}() AS x FROM {table}"
    conn = SqlConnector(sql_source(db_url_env, query=query))
    try:
        with pytest.raises(SourceUnavailable, match=r"(?i)read[- ]only"):
            list(conn.list())
    finally:
        conn.close()
    assert database.scalar(f"SELECT COUNT(*) FROM {log}") == 0


def test_statement_timeout_stops_a_slow_query(
    database: Database, monkeypatch: pytest.MonkeyPatch, db_url_env: str
) -> None:
    table = new_table(database)
    sleep = "pg_sleep(5)" if database.kind == "postgres" else "SLEEP(5)"
    monkeypatch.setenv(db_url_env, database.url)
    query = f"SELECT id, name, description, {sleep} AS z FROM {table}"
    conn = SqlConnector(
        sql_source(db_url_env, query=query, statement_timeout_s=0.5, access_column=None,
                   access_map={}, metadata_columns=[])
    )  # fmt: skip
    started = time.monotonic()
    try:
        with pytest.raises(SourceUnavailable, match=r"(?i)timeout|cancel|interrupt"):
            list(conn.list())
    finally:
        conn.close()
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM products",
        "SELECT 1; DROP TABLE products",
        "WITH gone AS (DELETE FROM products RETURNING *) SELECT * FROM gone",
        "SELECT * INTO copy FROM products",
        "UPDATE products SET price = 0",
        "SELECT * FROM products FOR UPDATE",
    ],
)
def test_writing_queries_are_refused_in_the_config(tmp_path: Path, query: str) -> None:
    data = {
        "sources": [{"name": "c", "kind": "sql", "url": "env:X", "id_column": "id", "query": query}]
    }
    with pytest.raises(ConfigError, match=r"sources\.0\.sql\.query"):
        parse_config(data, tmp_path)


def test_inline_password_is_refused_without_repeating_it(tmp_path: Path) -> None:
    secret = "Hunter2-" + uuid.uuid4().hex[:8]
    data = {
        "sources": [
            {
                "name": "c",
                "kind": "sql",
                "url": f"postgresql://reader:{secret}@db.example/shop",
                "id_column": "id",
                "table": "products",
            }
        ]
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path)
    assert "sources.0.sql.url" in str(info.value) and secret not in str(info.value)


def test_credentials_never_reach_errors_or_logs(
    mariadb_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    db_url_env: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong password and an unreachable server: the error names the source, not the secret."""
    secret = "S3cret-" + uuid.uuid4().hex[:8]
    urls = [
        mariadb_server.url("mysql", user="root", password=secret),
        f"postgresql+psycopg://reader:{secret}@127.0.0.1:1/shop",
    ]
    caplog.set_level(logging.DEBUG)
    for url in urls:
        monkeypatch.setenv(db_url_env, url)
        conn = SqlConnector(sql_source(db_url_env, table="products"))
        with pytest.raises(SourceUnavailable) as info:
            list(conn.list())
        conn.close()
        message = str(info.value)
        assert "catalogue" in message and secret not in message, message
        assert secret not in repr(info.value.__cause__) and info.value.__suppress_context__
    assert secret not in caplog.text


def test_missing_environment_variable_names_it(db_url_env: str) -> None:
    conn = SqlConnector(sql_source(db_url_env, table="products"))
    with pytest.raises(SourceUnavailable, match=db_url_env):
        list(conn.list())


def test_url_from_a_file_and_sqlite_relative_to_the_config(tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, description TEXT)")
        db.execute("INSERT INTO products VALUES (7, 'Gizmo', 'A small gizmo')")
    secret = tmp_path / "db-url"
    secret.write_text("sqlite:///shop.db\n")
    src = sql_source("UNUSED", url=f"file:{secret}", table="products", access_column=None,
                     access_map={}, metadata_columns=[])  # fmt: skip
    conn = SqlConnector(src, base_dir=tmp_path)
    assert [r.external_id for r in conn.list()] == ["7"]
    doc = conn.fetch("7")
    assert (doc.title, doc.text, doc.access) == ("Gizmo", "A small gizmo", ("group:staff",))
    conn.close()
