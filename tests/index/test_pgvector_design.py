"""Checks, on the bundled PostgreSQL + pgvector, the two properties the postgres index backend
is designed around: row-level security keyed on a per-transaction token setting hides rows even
from hand-written SQL on a non-owner role, and HNSW with iterative scans still returns k rows
when a permission filter keeps only 1 % of them."""

from __future__ import annotations

import random

import pytest

from tests.support.pgserver import pgvector_url  # noqa: F401  (session fixture)

psycopg = pytest.importorskip("psycopg")
from psycopg import Connection  # noqa: E402

# The principal's tokens arrive per transaction; no setting means the empty set: deny.
READABLE = """tokens && coalesce(
    string_to_array(nullif(current_setting('sovra.tokens', true), ''), ','), ARRAY[]::text[])"""

SCHEMA = """
CREATE TABLE chunk (
    id bigint PRIMARY KEY,
    tokens text[] NOT NULL,
    embedding vector(16) NOT NULL
);
CREATE INDEX chunk_tokens ON chunk USING gin (tokens);
CREATE INDEX chunk_hnsw ON chunk USING hnsw (embedding vector_cosine_ops);
ALTER TABLE chunk ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunk FORCE ROW LEVEL SECURITY;
CREATE POLICY chunk_read ON chunk FOR SELECT USING ({READABLE});
CREATE ROLE sovra_reader NOLOGIN;
GRANT SELECT ON chunk TO sovra_reader;
""".replace("{READABLE}", READABLE)


def _vec(rng: random.Random) -> str:
    return "[" + ",".join(f"{rng.gauss(0, 1):.5f}" for _ in range(16)) + "]"


@pytest.fixture(scope="module")
def loaded(pgvector_url: str) -> str:  # noqa: F811
    rng = random.Random(7)
    with psycopg.connect(pgvector_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS chunk; DROP ROLE IF EXISTS sovra_reader")
        conn.execute(SCHEMA)
        with conn.cursor() as cur:
            # 1 row in 100 carries the selective token; every row carries "all".
            rows = [
                (i, ["all", "rare"] if i % 100 == 0 else ["all"], _vec(rng)) for i in range(3000)
            ]
            cur.executemany("INSERT INTO chunk VALUES (%s, %s, %s::vector)", rows)
    return pgvector_url


def _as_reader(conn: Connection[tuple[object, ...]], tokens: str) -> None:
    conn.execute("SET LOCAL ROLE sovra_reader")
    conn.execute("SELECT set_config('sovra.tokens', %s, true)", (tokens,))


def test_pgvector_is_at_least_0_8(loaded: str) -> None:
    with psycopg.connect(loaded) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()
    assert row is not None
    major, minor = (int(p) for p in str(row[0]).split(".")[:2])
    assert (major, minor) >= (0, 8)


def test_rls_hides_rows_from_hand_written_sql(loaded: str) -> None:
    with psycopg.connect(loaded) as conn, conn.transaction():
        _as_reader(conn, "rare")
        count = conn.execute("SELECT count(*) FROM chunk").fetchone()
        assert count is not None and count[0] == 30
        leaked = conn.execute("SELECT count(*) FROM chunk WHERE NOT ('rare' = ANY(tokens))")
        assert leaked.fetchone() == (0,)
    # No setting at all (unknown principal) means no rows.
    with psycopg.connect(loaded) as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE sovra_reader")
        assert conn.execute("SELECT count(*) FROM chunk").fetchone() == (0,)
    # The setting is per transaction: it does not survive into the next one.
    with psycopg.connect(loaded) as conn:
        with conn.transaction():
            _as_reader(conn, "all")
        with conn.transaction():
            conn.execute("SET LOCAL ROLE sovra_reader")
            assert conn.execute("SELECT count(*) FROM chunk").fetchone() == (0,)


def test_iterative_scan_returns_k_under_a_one_percent_filter(loaded: str) -> None:
    query = _vec(random.Random(99))
    sql = "SELECT id FROM chunk ORDER BY embedding <=> %s::vector LIMIT 10"
    with psycopg.connect(loaded) as conn, conn.transaction():
        _as_reader(conn, "rare")
        # The planner rightly prefers GIN + exact sort for a 1 % filter on a small table; force
        # the HNSW path here, since that is the one that must not come back short at scale.
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        conn.execute("SET LOCAL hnsw.ef_search = 20")
        conn.execute("SET LOCAL hnsw.iterative_scan = off")
        plain = [r[0] for r in conn.execute(sql, (query,)).fetchall()]
        conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        iterative = [r[0] for r in conn.execute(sql, (query,)).fetchall()]
        plan = "\n".join(str(r[0]) for r in conn.execute("EXPLAIN " + sql, (query,)).fetchall())
    assert "chunk_hnsw" in plan
    assert len(iterative) == 10 and all(i % 100 == 0 for i in iterative)
    # Without iterative scans, ef_search=20 candidates hold few of the 30 readable rows.
    assert len(plain) < 10


def test_ts_rank_does_not_depend_on_rows_the_caller_cannot_read(pgvector_url: str) -> None:  # noqa: F811
    """ts_rank uses only the document's own lexemes (no corpus statistics), so hidden rows
    cannot shift a reader's scores."""
    ddl = """
    DROP TABLE IF EXISTS passage;
    CREATE TABLE passage (id bigint PRIMARY KEY, tokens text[] NOT NULL, body text NOT NULL);
    ALTER TABLE passage ENABLE ROW LEVEL SECURITY;
    ALTER TABLE passage FORCE ROW LEVEL SECURITY;
    CREATE POLICY passage_read ON passage FOR SELECT USING ({READABLE});
    DO $$ BEGIN CREATE ROLE passage_reader NOLOGIN; EXCEPTION WHEN duplicate_object THEN END $$;
    GRANT SELECT ON passage TO passage_reader;
    """.replace("{READABLE}", READABLE)
    rank = (
        "SELECT id, ts_rank(to_tsvector('english', body), plainto_tsquery('english', %s))"
        " FROM passage ORDER BY id"
    )

    def scores() -> list[tuple[object, ...]]:
        with psycopg.connect(pgvector_url) as conn, conn.transaction():
            conn.execute("SET LOCAL ROLE passage_reader")
            conn.execute("SELECT set_config('sovra.tokens', 'open', true)")
            rows: list[tuple[object, ...]] = conn.execute(rank, ("merger payroll",)).fetchall()
            return rows

    with psycopg.connect(pgvector_url, autocommit=True) as conn:
        conn.execute(ddl)
        conn.execute(
            "INSERT INTO passage VALUES (1, '{open}', 'payroll runs monthly'),"
            " (2, '{open}', 'the merger closes in march, payroll moves')"
        )
    before = scores()
    with psycopg.connect(pgvector_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO passage VALUES (%s, '{secret}', %s)",
            [(i, "merger merger payroll secret terms") for i in range(10, 510)],
        )
    after = scores()
    assert [r[0] for r in after] == [1, 2]
    assert after == before
