"""The scale-out index: PostgreSQL + pgvector, with permissions enforced inside the database.

Why this shape (docs/scale-out.md "## Index backend" has the measurements):

* **One table of chunks** in its own schema, with the governance labels as plain indexed columns
  (`access text[]`, classification, residency, source, language, modified_at) and the
  embedding as `vector(d)` or `halfvec(d)` under an HNSW cosine index.
* **Row-level security** (ENABLE + FORCE) keyed on per-transaction settings: a read sees only
  rows whose `visible` (`access` plus INGEST_TOKEN, a generated column under GIN) overlaps
  `sovra.tokens`, which every search sets from its SearchFilter with `set_config(..., true)`
  inside its own transaction. SQL that sets nothing sees nothing (unknown means deny), also a
  hand-written query through sovra's connection. Ingestion reads with INGEST_TOKEN as its only
  token and writes with `sovra.ingest = on`. The one SELECT policy is what makes the GIN index
  usable: PostgreSQL never pushes the filter's own (not leakproof) array operators below row
  security, so only the policy's qual can be an index condition. The connecting role must be
  neither superuser nor BYPASSRLS (checked on open: those roles skip RLS); deployments give the
  tables to another owner role (`PostgresIndex.install`) so sovra's role cannot switch RLS off.
* **Full text = BM25 in SQL over sovra's own analyser terms**, from a postings table: one row
  per (chunk, term) with the term frequency, the chunk's length and a copy of its governance
  labels, under a btree on the term and the same row policy as the chunks. `term = ANY(...)`
  is leakproof, so PostgreSQL uses that index beneath row security (the array overlap a term
  array under GIN needed is not, and every text search read every admitted chunk: 0.8 s at
  100k). Collection statistics (N, df, average length) are computed in the same transaction
  over the admitted rows only, and RLS hides the others from those aggregates as well, so no
  score depends on a document the caller cannot read. (PostgreSQL's `ts_rank` would be
  per-document only, but measured worse: docs/scale-out.md.)
* **Vectors**: up to EXACT_MAX_ROWS chunks reachable by the caller's tokens (counted per token
  set and write generation), exact distances over them; above, HNSW with
  `hnsw.iterative_scan = relaxed_order`, so a filter still returns k rows, and the outer query
  re-sorts the relaxed order exactly. The plan
  is chosen here, from the real count, not by the planner, which cannot estimate the policy.
* **Citus-ready SQL**: the distribution column is `document_id` (part of every primary key), no
  sequences in keys, no cross-table foreign keys, no triggers; see docs/scale-out.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from sovra.domain import Chunk, ScoredChunk, SearchFilter
from sovra.index.analysis import ANALYSIS_VERSION, analyze, analyze_document, normalize_language
from sovra.index.base import (
    IndexError_,
    checked_chunks,
    decode_sentence_vectors,
    normalised_embedding,
    unit_query_vector,
)
from sovra.index.embedded import _hashable

SCHEMA_VERSION = "3"
"""2: reads are admitted by `visible` (access plus INGEST_TOKEN) under one indexable policy.
3: full text from the `postings` table instead of term arrays on the chunks. An index of an
older version is upgraded in place on open by its owner (nothing is re-analysed)."""
BM25_K1 = 1.2
BM25_B = 0.75
VECTOR_TYPES = ("vector", "halfvec")
TEXT_RANKINGS = ("bm25", "ts_rank")
"""`bm25` (default): BM25 over sovra's analyser terms. `ts_rank`: PostgreSQL's own text search,
a regconfig per chunk language (REGCONFIGS), kept only to measure against (docs/scale-out.md)."""
REGCONFIGS = {
    "ar": "arabic", "ca": "catalan", "da": "danish", "de": "german", "el": "greek",
    "en": "english", "es": "spanish", "eu": "basque", "fi": "finnish", "fr": "french",
    "hi": "hindi", "hu": "hungarian", "hy": "armenian", "id": "indonesian", "it": "italian",
    "lt": "lithuanian", "ne": "nepali", "nl": "dutch", "no": "norwegian", "pt": "portuguese",
    "ro": "romanian", "ru": "russian", "sr": "serbian", "sv": "swedish", "ta": "tamil",
    "tr": "turkish", "yi": "yiddish",
}  # fmt: skip
"""PostgreSQL text search configurations by ISO 639-1; any other language (CJK too): simple."""


def regconfig(language: str) -> str:
    return REGCONFIGS.get(normalize_language(language), "simple")


HNSW_M = 16
"""Default HNSW neighbours per node (`[index] hnsw_m`; pgvector's own default)."""
HNSW_EF_CONSTRUCTION = 128
"""Default HNSW build candidates (`[index] hnsw_ef_construction`). pgvector's default is 64;
on the 100k bench corpus built row batch by row batch (as a sync builds it), 128 gave recall@10
0.980 against 0.961 at ef_search 400, for 40 % more graph build time (scale-out.md); the
embedded engine's graph uses 128 too."""
HNSW_EF_SEARCH = 400
"""Default candidates per HNSW scan step (`[index] ef_search`); iterative scans continue past it
until k admitted rows. Higher buys recall with latency: docs/scale-out.md has the sweep."""

EXACT_MAX_ROWS = 10_000
"""At most this many chunks reachable by the caller's tokens: vector search computes every
distance instead of walking the HNSW graph (exact recall; it costs reading those rows' vectors,
~7 ms for 1,000 rows measured at 100k chunks, so ~60 ms here by that rate)."""

_F32 = npt.NDArray[np.float32]
log = logging.getLogger(__name__)

_I32 = npt.NDArray[np.int32]
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# The principal's tokens arrive per transaction as a text[] literal; none set = the empty set.
# Both are scalar subqueries so that the planner evaluates them once per query (an InitPlan),
# not once per row: parsing the array literal per row cost more than the rest of a scan.
_TOKENS = (
    "(SELECT coalesce(nullif(current_setting('sovra.tokens', true), '')::text[], '{}'::text[]))"
)
_INGEST = "(SELECT coalesce(current_setting('sovra.ingest', true), '') = 'on')"
INGEST_TOKEN = "sovra:ingest"
"""Every row's `visible` holds it besides its access tokens: ingestion's reads set it as their
only token and see every row. A search never carries it (`_read` drops it from any filter).

Why not a second permissive policy `USING (sovra.ingest = on)`, as version 1 had: PostgreSQL
ORs permissive policies, and `access && tokens OR <setting>` cannot use the GIN index, while the
filter's own `access && ...` is not leakproof and so is never pushed below row security as an
index condition. Every read was a sequential scan of the whole table (docs/scale-out.md)."""


@dataclass(frozen=True)
class HnswBuild:
    """How the HNSW graph is built (pgvector's `m` and `ef_construction`); fixed once the index
    exists: a change applies after the owner rebuilds it (`reloptions_fix`)."""

    m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION

    def __post_init__(self) -> None:
        if not 2 <= self.m <= 100:
            raise IndexError_(f"index.hnsw_m must be 2-100 (pgvector's range), got {self.m}")
        if not 4 <= self.ef_construction <= 1000 or self.ef_construction < 2 * self.m:
            raise IndexError_(
                f"index.hnsw_ef_construction must be 4-1000 and at least 2 x index.hnsw_m "
                f"({2 * self.m}), got {self.ef_construction}"
            )

    def options(self) -> str:
        return f"m = {self.m}, ef_construction = {self.ef_construction}"


def _ddl(
    schema: str, dimension: int, vector_type: str, text_ranking: str, hnsw: HnswBuild
) -> list[str]:
    s = schema
    ops = f"{vector_type}_cosine_ops"
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS {s}.chunks (
            document_id text NOT NULL,
            id text NOT NULL,
            seq bigint NOT NULL,
            position integer NOT NULL,
            source text NOT NULL,
            language text NOT NULL,
            access text[] NOT NULL,
            classification text NOT NULL,
            residency text NOT NULL,
            modified_at timestamptz,
            title text NOT NULL,
            uri text NOT NULL,
            heading_path text[] NOT NULL,
            body text NOT NULL,
            start_offset integer NOT NULL,
            end_offset integer NOT NULL,
            length real NOT NULL,
            embedding {vector_type}({dimension}),
            tsv tsvector,
            PRIMARY KEY (document_id, id)
        ) WITH (toast_tuple_target = 512)""",
        _visible_column(s, "chunks"),
        # Keep the row the filter scans read small: text, title and embedding go out of line
        # (read only for the k rows returned; HNSW holds its own copy of the vectors).
        *(
            f"ALTER TABLE {s}.chunks ALTER COLUMN {col} SET STORAGE EXTERNAL"
            for col in ("body", "title", "embedding", "tsv")
        ),
        f"CREATE INDEX IF NOT EXISTS chunks_id ON {s}.chunks (id)",
        f"DROP INDEX IF EXISTS {s}.chunks_access",  # version 1; unusable under row security
        f"CREATE INDEX IF NOT EXISTS chunks_visible ON {s}.chunks USING gin (visible)",
        f"CREATE INDEX IF NOT EXISTS chunks_embedding ON {s}.chunks USING hnsw (embedding {ops})"
        f" WITH ({hnsw.options()})",
        *(
            [f"CREATE INDEX IF NOT EXISTS chunks_tsv ON {s}.chunks USING gin (tsv)"]
            if text_ranking == "ts_rank"
            else []
        ),
        f"""CREATE TABLE IF NOT EXISTS {s}.sentences (
            document_id text NOT NULL,
            chunk_id text NOT NULL,
            model text NOT NULL,
            access text[] NOT NULL,
            text_sha text NOT NULL,
            spans bytea NOT NULL,
            vectors bytea NOT NULL,
            PRIMARY KEY (document_id, chunk_id, model)
        )""",
        _visible_column(s, "sentences"),
        f"CREATE INDEX IF NOT EXISTS sentences_chunk ON {s}.sentences (chunk_id, model)",
        # One row per (chunk, term): what a text search reads, found by the term's btree (the
        # key's document_id first: deletes by document, and Citus distributes by it).
        f"""CREATE TABLE IF NOT EXISTS {s}.postings (
            document_id text NOT NULL,
            seq bigint NOT NULL,
            term text NOT NULL,
            tf integer NOT NULL,
            length real NOT NULL,
            access text[] NOT NULL,
            source text NOT NULL,
            language text NOT NULL,
            classification text NOT NULL,
            residency text NOT NULL,
            modified_at timestamptz,
            PRIMARY KEY (document_id, seq, term)
        )""",
        f"CREATE INDEX IF NOT EXISTS postings_term ON {s}.postings (term)",
        *(
            stmt
            for table in POLICY_TABLES
            for stmt in (
                f"ALTER TABLE {s}.{table} ENABLE ROW LEVEL SECURITY",
                f"ALTER TABLE {s}.{table} FORCE ROW LEVEL SECURITY",
                f"DROP POLICY IF EXISTS {table}_read ON {s}.{table}",
                f"CREATE POLICY {table}_read ON {s}.{table} FOR SELECT"
                f" USING ({_visible_expression(table)} && {_TOKENS})",
                f"DROP POLICY IF EXISTS {table}_ingest ON {s}.{table}",  # version 1
                f"DROP POLICY IF EXISTS {table}_insert ON {s}.{table}",
                f"CREATE POLICY {table}_insert ON {s}.{table} FOR INSERT WITH CHECK ({_INGEST})",
                f"DROP POLICY IF EXISTS {table}_update ON {s}.{table}",
                f"CREATE POLICY {table}_update ON {s}.{table} FOR UPDATE"
                f" USING ({_INGEST}) WITH CHECK ({_INGEST})",
                f"DROP POLICY IF EXISTS {table}_delete ON {s}.{table}",
                f"CREATE POLICY {table}_delete ON {s}.{table} FOR DELETE USING ({_INGEST})",
            )
        ),
    ]


POLICY_TABLES = ("chunks", "sentences", "postings")


def _visible_expression(table: str) -> str:
    """What a table's read policy matches the tokens against. The postings are found by their
    term's index, never by this, so they store no generated copy (one array less per row)."""
    return "visible" if table != "postings" else f"(access || '{{{INGEST_TOKEN}}}'::text[])"


def _visible_column(schema: str, table: str) -> str:
    return (
        f"ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS visible text[]"
        f" GENERATED ALWAYS AS (access || '{{{INGEST_TOKEN}}}'::text[]) STORED"
    )


def _as_ingestion(conn: Connection) -> None:
    """This transaction reads and writes every row (ingestion, unfiltered protocol calls)."""
    conn.execute(
        text("SELECT set_config('sovra.ingest', 'on', true), set_config('sovra.tokens', :t, true)"),
        {"t": _array_literal([INGEST_TOKEN])},
    )


def _array_literal(values: Iterable[str]) -> str:
    """A PostgreSQL text[] literal (every element quoted), so tokens may hold commas/quotes."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _vector_literal(vec: _F32) -> str:
    return "[" + ",".join(repr(float(x)) for x in vec) + "]"


def _text_sha(body: str) -> str:
    return hashlib.blake2b(body.encode("utf-8"), digest_size=16).hexdigest()


def sql_url(url: str) -> str:
    """The SQLAlchemy URL for psycopg 3 of a `postgresql://` URL (credentials kept as they are)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise IndexError_("index.url must be a postgresql:// URL (the postgres index backend)")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _filter_sql(flt: SearchFilter, params: dict[str, Any]) -> str:
    """The WHERE clause of `flt` with exactly `SearchFilter.admits` semantics (tokens included:
    the policy enforces them, repeating them lets the planner use the GIN index)."""
    clauses = ["access && CAST(:f_tokens AS text[])"]
    params["f_tokens"] = sorted(flt.access_tokens)
    if flt.max_classification_rank is not None:
        labels = flt.classification_labels
        allowed = sorted(
            {lab for lab in labels if labels.index(lab) <= flt.max_classification_rank}
        )
        clauses.append("classification = ANY(CAST(:f_classes AS text[]))")
        params["f_classes"] = allowed
    if flt.region is not None:
        region = flt.region
        # may_process_in(residency, region): residency is '*', the region or a dash-prefix of it.
        inside = {"*", region} | {region[:i] for i, ch in enumerate(region) if ch == "-"}
        clauses.append("residency = ANY(CAST(:f_residency AS text[]))")
        params["f_residency"] = sorted(inside)
    if flt.sources is not None:
        clauses.append("source = ANY(CAST(:f_sources AS text[]))")
        params["f_sources"] = sorted(flt.sources)
    if flt.languages is not None:
        clauses.append("language = ANY(CAST(:f_languages AS text[]))")
        params["f_languages"] = sorted(flt.languages)
    if flt.modified_after is not None:
        clauses.append("modified_at >= :f_after")
        params["f_after"] = _utc(flt.modified_after)
    if flt.modified_before is not None:
        clauses.append("modified_at <= :f_before")
        params["f_before"] = _utc(flt.modified_before)
    return " AND ".join(clauses)


def _utc(moment: Any) -> Any:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


_POSTING_COLUMNS = (
    "document_id, seq, term, tf, length, access, source, language, classification, residency,"
    " modified_at"
)
_POSTING_ONLY = frozenset({"terms", "tfs"})
"""Keys of a chunk's row that go to its postings, not to the chunks table."""
_POSTING_PARAMS = (
    "document_id", "seq", "length", "access", "source", "language", "classification",
    "residency", "modified_at", "terms", "tfs",
)  # fmt: skip

_COLUMNS = (
    "document_id, id, position, source, language, access, classification, residency,"
    " modified_at, title, uri, heading_path, body, start_offset, end_offset, embedding"
)


def _chunk(row: Any) -> Chunk:
    (
        doc,
        cid,
        pos,
        source,
        lang,
        access,
        cls,
        res,
        mod,
        title,
        uri,
        heads,
        body,
        start,
        end,
        emb,
    ) = row
    return Chunk(
        id=cid,
        document_id=doc,
        source=source,
        position=pos,
        text=body,
        title=title,
        uri=uri,
        heading_path=tuple(heads),
        language=lang,
        access=tuple(access),
        classification=cls,
        residency=res,
        start=start,
        end=end,
        modified_at=mod,
        embedding=None if emb is None else [float(x) for x in json.loads(emb)],
    )


class PostgresIndex:
    """The PostgreSQL + pgvector `Index`. See the module docstring."""

    def __init__(
        self,
        url: str,
        dimension: int,
        *,
        schema: str = "sovra_index",
        vector_type: str = "vector",
        text_ranking: str = "bm25",
        ef_search: int = HNSW_EF_SEARCH,
        hnsw: HnswBuild | None = None,
        exact_max_rows: int = EXACT_MAX_ROWS,
        engine: Engine | None = None,
    ) -> None:
        if dimension <= 0:
            raise IndexError_(f"embedding dimension must be positive, got {dimension}")
        if not _SCHEMA_NAME.fullmatch(schema):
            raise IndexError_(
                f"index.schema {schema!r} must be a lower-case SQL identifier (a-z, 0-9, _)"
            )
        if vector_type not in VECTOR_TYPES:
            raise IndexError_(f"index.vector_type must be one of {', '.join(VECTOR_TYPES)}")
        self.dimension = dimension
        self.schema = schema
        if text_ranking not in TEXT_RANKINGS:
            raise IndexError_(f"text ranking must be one of {', '.join(TEXT_RANKINGS)}")
        self.vector_type = vector_type
        self.text_ranking = text_ranking
        if not 1 <= ef_search <= 1000:
            raise IndexError_(f"index.ef_search must be 1-1000 (pgvector's range), got {ef_search}")
        self.ef_search = ef_search
        self.hnsw = hnsw or HnswBuild()
        self.exact_max_rows = exact_max_rows
        self._closed = False
        self._lock = threading.Lock()
        self._own_engine = engine is None
        # Timestamps come back in UTC whatever the server's TimeZone (as the embedded engine's).
        self._engine = engine or create_engine(
            sql_url(url), pool_pre_ping=True, connect_args={"options": "-c timezone=UTC"}
        )
        self._stats: dict[tuple[int, SearchFilter], tuple[int, float]] = {}
        try:
            self._open()
        except SQLAlchemyError as exc:
            self._dispose()
            raise IndexError_(f"postgres index: {_reason(exc)}") from None
        except BaseException:
            self._dispose()
            raise

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def install(
        cls,
        owner_url: str,
        dimension: int,
        *,
        app_role: str,
        schema: str = "sovra_index",
        vector_type: str = "vector",
        hnsw: HnswBuild | None = None,
    ) -> None:
        """Create the schema as its owner and grant `app_role` only reads and writes of rows,
        so sovra's own role can neither drop the policies nor switch row security off."""
        if not _SCHEMA_NAME.fullmatch(app_role):
            raise IndexError_(f"role {app_role!r} must be a lower-case SQL identifier")
        engine = create_engine(sql_url(owner_url))
        try:
            with engine.begin() as conn:
                cls._create(conn, schema, dimension, vector_type, "bm25", hnsw or HnswBuild())
                conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {app_role}"))
                for table in POLICY_TABLES:
                    conn.execute(
                        text(
                            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.{table}"
                            f" TO {app_role}"
                        )
                    )
                conn.execute(text(f"GRANT SELECT, UPDATE ON {schema}.meta TO {app_role}"))
        finally:
            engine.dispose()

    @staticmethod
    def _create(
        conn: Connection,
        schema: str,
        dimension: int,
        vector_type: str,
        text_ranking: str,
        hnsw: HnswBuild,
    ) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
        for stmt in _ddl(schema, dimension, vector_type, text_ranking, hnsw):
            conn.execute(text(stmt))
        conn.execute(
            text(
                f"INSERT INTO {schema}.meta (key, value) VALUES"
                " ('schema_version', :v), ('dimension', :d), ('analysis', :a),"
                " ('vector_type', :t), ('text_ranking', :r), ('generation', '0'), ('seq', '0')"
                " ON CONFLICT (key) DO NOTHING"
            ),
            {
                "v": SCHEMA_VERSION,
                "d": str(dimension),
                "a": ANALYSIS_VERSION,
                "t": vector_type,
                "r": text_ranking,
            },
        )

    def _open(self) -> None:
        with self._engine.begin() as conn:
            row = conn.execute(
                text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
            ).one()
            if row[0]:
                raise IndexError_(
                    "the postgres index connects as a superuser or BYPASSRLS role, which row "
                    "security does not apply to; connect as an ordinary role (docs/scale-out.md)"
                )
            ext = conn.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            ).scalar()
            if ext is None:
                raise IndexError_(
                    "the database has no pgvector extension; run CREATE EXTENSION vector "
                    "(pgvector >= 0.8) as its owner"
                )
            major, minor = (int(p) for p in str(ext).split(".")[:2])
            if (major, minor) < (0, 8):
                raise IndexError_(f"pgvector {ext} is too old; the index needs >= 0.8")
            exists = conn.execute(
                text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{self.schema}.meta"}
            ).scalar()
            if not exists:
                self._create(
                    conn,
                    self.schema,
                    self.dimension,
                    self.vector_type,
                    self.text_ranking,
                    self.hnsw,
                )
            meta: dict[str, str] = {
                str(k): str(v)
                for k, v in conn.execute(text(f"SELECT key, value FROM {self.schema}.meta"))
            }
            if meta.get("schema_version") in ("1", "2"):
                meta["schema_version"] = self._upgrade(conn, meta["schema_version"])
            built = conn.execute(
                text("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:i)"),
                {"i": f"{self.schema}.chunks_embedding"},
            ).scalar()
        fix = f"drop schema {self.schema} and sync again (or use another index.schema)"
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise IndexError_(
                f"postgres index {self.schema} has schema version {meta.get('schema_version')}, "
                f"this sovra reads {SCHEMA_VERSION}; {fix}"
            )
        if int(meta.get("dimension", "0")) != self.dimension:
            raise IndexError_(
                f"postgres index {self.schema} holds {meta.get('dimension')}-dimensional "
                f"embeddings but the embedding model gives {self.dimension}; set [embedding] back "
                f"to the model it was built with, or {fix}"
            )
        if meta.get("analysis") != ANALYSIS_VERSION:
            raise IndexError_(
                f"postgres index {self.schema} was analysed by text analysis version "
                f"{meta.get('analysis')}, this sovra uses {ANALYSIS_VERSION}; {fix}"
            )
        self.vector_type = meta.get("vector_type", self.vector_type)
        self.text_ranking = meta.get("text_ranking", self.text_ranking)
        self._check_hnsw(built)

    def _check_hnsw(self, reloptions: Sequence[str] | None) -> None:
        """Warn when the existing graph was built with other settings than `[index]` asks for:
        they apply to a graph only when it is built, and rebuilding is the owner's call (it
        takes minutes per 100k chunks), so opening never rebuilds."""
        opts = dict(o.split("=", 1) for o in reloptions or ())
        # No reloptions: an index created before these settings, with pgvector's defaults.
        built = (int(opts.get("m", 16)), int(opts.get("ef_construction", 64)))
        wanted = (self.hnsw.m, self.hnsw.ef_construction)
        if built != wanted:
            log.warning(
                "postgres index %s: its HNSW graph was built with m=%d, ef_construction=%d; "
                "[index] asks for m=%d, ef_construction=%d, which applies once the schema's "
                "owner rebuilds it: %s",
                self.schema,
                *built,
                *wanted,
                self.hnsw_rebuild_sql(),
            )

    def hnsw_rebuild_sql(self) -> str:
        """The statements that rebuild the HNSW graph with this index's `hnsw` settings (run
        them as the schema's owner; CONCURRENTLY keeps searches and writes going meanwhile)."""
        name = f"{self.schema}.chunks_embedding"
        return f"ALTER INDEX {name} SET ({self.hnsw.options()}); REINDEX INDEX CONCURRENTLY {name};"

    def _upgrade(self, conn: Connection, version: str) -> str:
        """Version 1 or 2 → 3 in place: adds `visible`, its index and the one read policy (1),
        and fills the postings from the chunks' term arrays, which are then dropped (1, 2); the
        terms were analysed at write time, so nothing is re-analysed. Needs the schema's owner:
        an app role without it gets the command."""
        owner = conn.execute(
            text(
                "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = :s AND c.relname = 'chunks'"
            ),
            {"s": self.schema},
        ).scalar()
        if not owner:
            raise IndexError_(
                f"postgres index {self.schema} has schema version {version} and must be "
                f"upgraded by its owner: run `sovra index install` with the owner's URL once "
                f"(nothing is lost)"
            )
        s = self.schema
        self._create(conn, s, self.dimension, self.vector_type, self.text_ranking, self.hnsw)
        has_terms = conn.execute(
            text(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = :s"
                " AND table_name = 'chunks' AND column_name IN ('terms', 'tfs')"
            ),
            {"s": s},
        ).scalar_one()
        if has_terms == 2:
            _as_ingestion(conn)  # row security applies to the owner too (FORCE)
            conn.execute(
                text(
                    f"INSERT INTO {s}.postings ({_POSTING_COLUMNS}) SELECT c.document_id, c.seq,"
                    " t.term, t.tf, c.length, c.access, c.source, c.language, c.classification,"
                    f" c.residency, c.modified_at FROM {s}.chunks c, unnest(c.terms, c.tfs)"
                    " AS t(term, tf) ON CONFLICT DO NOTHING"
                )
            )
        conn.execute(
            text(f"ALTER TABLE {s}.chunks DROP COLUMN IF EXISTS terms, DROP COLUMN IF EXISTS tfs")
        )
        conn.execute(
            text(f"UPDATE {s}.meta SET value = :v WHERE key = 'schema_version'"),
            {"v": SCHEMA_VERSION},
        )
        # The new tables and columns have no statistics yet; the planner needs them at once.
        conn.execute(text(f"ANALYZE {s}.chunks"))
        conn.execute(text(f"ANALYZE {s}.postings"))
        return SCHEMA_VERSION

    def _dispose(self) -> None:
        if self._own_engine:
            self._engine.dispose()

    def drop(self) -> None:
        """Drop the whole schema (throwaway indexes: evaluations, benchmarks); only its owner
        may, so a deployment's app role cannot drop an index installed by another role."""
        with self._lock, self._transaction() as conn:
            self._check_open()
            conn.execute(text(f"DROP SCHEMA {self.schema} CASCADE"))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._dispose()

    def __enter__(self) -> PostgresIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise IndexError_(f"postgres index {self.schema} is closed")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction; a database error becomes an IndexError_ naming the reason."""
        try:
            with self._engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            raise IndexError_(f"postgres index {self.schema}: {_reason(exc)}") from None
        except SQLAlchemyError as exc:
            raise IndexError_(f"postgres index {self.schema} unavailable: {_reason(exc)}") from None

    @contextlib.contextmanager
    def _read(self, flt: SearchFilter | None) -> Iterator[Connection]:
        """A read transaction as the principal of `flt` (no filter: as nobody, sees nothing
        but `meta`); the settings end with the transaction."""
        self._check_open()
        with self._transaction() as conn:
            allowed = sorted(flt.access_tokens - {INGEST_TOKEN}) if flt is not None else []
            conn.execute(
                text("SELECT set_config('sovra.tokens', :t, true)"), {"t": _array_literal(allowed)}
            )
            yield conn

    @contextlib.contextmanager
    def _ingest(self) -> Iterator[Connection]:
        """A write transaction; the generation bump first serialises writers and invalidates
        every replica's cached statistics."""
        self._check_open()
        with self._transaction() as conn:
            _as_ingestion(conn)
            conn.execute(
                text(
                    f"UPDATE {self.schema}.meta SET value = (value::bigint + 1)::text"
                    " WHERE key = 'generation'"
                )
            )
            yield conn

    # ----------------------------------------------------------------- writes

    def replace_document(self, document_id: str, chunks: Sequence[Chunk]) -> None:
        self.replace_documents({document_id: chunks})

    def replace_documents(self, documents: Mapping[str, Sequence[Chunk]]) -> None:
        """Replace several documents in ONE transaction (all or nothing)."""
        rows = [self._row(chunk) for chunk in checked_chunks(documents)]
        with self._lock, self._ingest() as conn:
            self._write(conn, list(documents), rows)

    def _row(self, chunk: Chunk) -> dict[str, Any]:
        body = " ".join((chunk.title, " ".join(chunk.heading_path), chunk.text))
        terms = Counter(analyze_document(body, normalize_language(chunk.language)))
        vec = normalised_embedding(chunk, self.dimension)
        return {
            "document_id": chunk.document_id,
            "id": chunk.id,
            "position": chunk.position,
            "source": chunk.source,
            "language": chunk.language,
            "access": list(chunk.access),
            "classification": chunk.classification,
            "residency": chunk.residency,
            "modified_at": None if chunk.modified_at is None else _utc(chunk.modified_at),
            "title": chunk.title,
            "uri": chunk.uri,
            "heading_path": list(chunk.heading_path),
            "body": chunk.text,
            "start_offset": chunk.start,
            "end_offset": chunk.end,
            "length": float(sum(terms.values())),
            "terms": list(terms),
            "tfs": list(terms.values()),
            "embedding": None if vec is None else _vector_literal(vec),
            "tsv_config": regconfig(chunk.language) if self.text_ranking == "ts_rank" else None,
            "tsv_text": body if self.text_ranking == "ts_rank" else None,
        }

    def _write(self, conn: Connection, document_ids: list[str], rows: list[dict[str, Any]]) -> None:
        s = self.schema
        if document_ids:
            self._delete(conn, document_ids)
        if not rows:
            return
        # Chunk ids are unique across the index; the key is (document_id, id) so that the
        # table distributes by document (Citus), hence this explicit check.
        clash = conn.execute(
            text(
                f"SELECT id, document_id FROM {s}.chunks WHERE id = ANY(CAST(:ids AS text[]))"
                " LIMIT 1"
            ),
            {"ids": [r["id"] for r in rows]},
        ).first()
        if clash is not None:
            raise IndexError_(
                f"chunk id {clash[0]!r} already belongs to another document; "
                "chunk ids must be unique across the index"
            )
        first = conn.execute(
            text(
                f"UPDATE {s}.meta SET value = (value::bigint + :n)::text WHERE key = 'seq'"
                " RETURNING value::bigint - :n"
            ),
            {"n": len(rows)},
        ).scalar_one()
        for i, row in enumerate(rows):
            row["seq"] = first + i
        plain = [c for c in rows[0] if not c.startswith("tsv_") and c not in _POSTING_ONLY]
        cols = ", ".join([*plain, "tsv"])
        values = ", ".join(
            [
                *(
                    f"CAST(:{c} AS {self.vector_type})" if c == "embedding" else f":{c}"
                    for c in plain
                ),
                "CASE WHEN CAST(:tsv_config AS text) IS NULL THEN NULL"
                " ELSE to_tsvector(CAST(:tsv_config AS regconfig), :tsv_text) END",
            ]
        )
        conn.execute(text(f"INSERT INTO {s}.chunks ({cols}) VALUES ({values})"), rows)
        postings = [{c: row[c] for c in _POSTING_PARAMS} for row in rows if row["terms"]]
        if not postings:  # e.g. chunks of punctuation only: an empty executemany would fail
            return
        conn.execute(
            text(
                f"INSERT INTO {s}.postings ({_POSTING_COLUMNS}) SELECT :document_id, :seq,"
                " t.term, t.tf, :length, CAST(:access AS text[]), :source, :language,"
                " :classification, :residency, CAST(:modified_at AS timestamptz)"
                " FROM unnest(CAST(:terms AS text[]), CAST(:tfs AS int[])) AS t(term, tf)"
            ),
            postings,
        )

    def _delete(self, conn: Connection, document_ids: list[str]) -> int:
        """Delete every row of these documents; the number of chunks deleted."""
        deleted = {
            table: conn.execute(
                text(
                    f"DELETE FROM {self.schema}.{table} WHERE document_id = ANY(CAST(:d AS text[]))"
                ),
                {"d": document_ids},
            ).rowcount
            for table in POLICY_TABLES
        }
        return int(deleted["chunks"])

    def copy_documents(
        self,
        documents: Mapping[str, Sequence[Chunk]],
        sentences: Sequence[tuple[str, str, str, str, bytes, bytes]],
        *,
        meta: Mapping[str, str],
    ) -> None:
        """Replace `documents`, store their sentence rows (document_id, chunk_id, model,
        text_sha, spans, vectors) as they are, and set `meta` keys, in ONE transaction: a
        migration's batch and its checkpoint commit together or not at all."""
        rows = [self._row(c) for cs in documents.values() for c in cs]
        access = {c.id: list(c.access) for cs in documents.values() for c in cs}
        kept = [
            {"d": d, "c": c, "m": m, "a": access[c], "sha": sha, "spans": sp, "vectors": v}
            for d, c, m, sha, sp, v in sentences
            if c in access
        ]
        with self._lock, self._ingest() as conn:
            self._write(conn, list(documents), rows)
            if kept:
                conn.execute(text(self._sentence_upsert()), kept)
            for key, value in meta.items():
                conn.execute(
                    text(
                        f"INSERT INTO {self.schema}.meta (key, value) VALUES (:k, :v)"
                        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                    ),
                    {"k": key, "v": value},
                )

    def meta_value(self, key: str) -> str | None:
        """A value of the index's `meta` table (schema facts, migration checkpoints)."""
        with self._ingest_read() as conn:
            value = conn.execute(
                text(f"SELECT value FROM {self.schema}.meta WHERE key = :k"), {"k": key}
            ).scalar()
        return None if value is None else str(value)

    def delete_documents(self, document_ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(document_ids))
        with self._lock, self._ingest() as conn:
            return self._delete(conn, ids)

    # ----------------------------------------------------------------- search

    def search_text(
        self, query: str, language: str, k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        if self.text_ranking == "ts_rank":
            return self._search_ts_rank(query, language, k, flt)
        qtf = Counter(analyze(query, normalize_language(language)))
        if k <= 0 or not qtf:
            return []
        params: dict[str, Any] = {"terms": list(qtf), "qtfs": list(qtf.values()), "k": k}
        where = _filter_sql(flt, params)
        s = self.schema
        with self._read(flt) as conn:
            n_docs, avgdl = self._collection_stats(conn, flt, where, params)
            if n_docs == 0:
                return []
            params.update(n=n_docs, avgdl=avgdl, k1=BM25_K1, b=BM25_B)
            # BM25 (Lucene's idf, always positive) over the admitted rows only: df is counted
            # under the same filter and row security as the hits.
            sql = f"""
            WITH q AS (
                SELECT * FROM unnest(CAST(:terms AS text[]), CAST(:qtfs AS int[])) AS q(term, qtf)
            ), hit AS MATERIALIZED (
                -- One row per (admitted chunk, query term it holds), from the term's btree
                -- (`=` on text is leakproof, so the index works beneath row security).
                SELECT p.document_id, p.seq, p.length, p.tf, p.term, q.qtf
                FROM {s}.postings p JOIN q ON q.term = p.term
                WHERE p.term = ANY(CAST(:terms AS text[])) AND {where}
            ), df AS (
                SELECT term, count(*) AS df FROM hit GROUP BY term
            ), scored AS (
                SELECT hit.document_id, hit.seq, sum(
                    ln(1.0 + (:n - df.df + 0.5) / (df.df + 0.5)) * hit.qtf
                    * hit.tf * (:k1 + 1.0)
                    / (hit.tf + :k1 * (1.0 - :b + :b * hit.length / :avgdl))
                ) AS score
                FROM hit JOIN df USING (term)
                GROUP BY hit.document_id, hit.seq ORDER BY score DESC, hit.seq LIMIT :k
            )
            SELECT {_prefixed("c")}, scored.score FROM scored
            JOIN {s}.chunks c ON c.document_id = scored.document_id AND c.seq = scored.seq
            ORDER BY scored.score DESC, scored.seq
            """
            rows = conn.execute(text(sql), params).all()
        return [ScoredChunk(_chunk(r[:-1]), float(r[-1]), "text") for r in rows]

    def _search_ts_rank(
        self, query: str, language: str, k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        """PostgreSQL's ranking: any query lexeme matches (OR), ts_rank scores each row by its
        own lexemes only (normalisation 1: divided by 1 + log of the row's length), so there are
        no collection statistics that could leak across principals."""
        if k <= 0:
            return []
        params: dict[str, Any] = {"query": query, "cfg": regconfig(language), "k": k}
        where = _filter_sql(flt, params)
        sql = f"""
        WITH q AS (
            SELECT replace(plainto_tsquery(CAST(:cfg AS regconfig), :query)::text, '&', '|')
                AS qs
        ), tq AS (SELECT CAST(qs AS tsquery) AS tq FROM q WHERE qs <> '')
        SELECT {_prefixed("c")}, ts_rank(c.tsv, tq.tq, 1) AS score
        FROM {self.schema}.chunks c, tq
        WHERE c.tsv @@ tq.tq AND {where}
        ORDER BY score DESC, c.seq LIMIT :k
        """
        with self._read(flt) as conn:
            rows = conn.execute(text(sql), params).all()
        return [ScoredChunk(_chunk(r[:-1]), float(r[-1]), "text") for r in rows]

    def _collection_stats(
        self, conn: Connection, flt: SearchFilter, where: str, params: dict[str, Any]
    ) -> tuple[int, float]:
        """(admitted chunks, their average length), cached per filter and write generation
        (the generation is read in this transaction, so a write on any replica invalidates)."""
        generation = int(
            conn.execute(
                text(f"SELECT value FROM {self.schema}.meta WHERE key = 'generation'")
            ).scalar_one()
        )
        key = (generation, _hashable(flt))
        hit = self._stats.get(key)
        if hit is not None:
            return hit
        row = conn.execute(
            text(
                f"SELECT count(*), coalesce(avg(length), 1) FROM {self.schema}.chunks WHERE {where}"
            ),
            params,
        ).one()
        stats = (int(row[0]), float(row[1]) or 1.0)
        if len(self._stats) > 256:
            self._stats.clear()
        self._stats[key] = stats
        return stats

    def search_vector(
        self, vector: Sequence[float], k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        q = unit_query_vector(vector, self.dimension)
        if k <= 0:
            return []
        with self._read(flt) as conn:
            sql, params = self._vector_query(conn, q, k, flt)
            rows = conn.execute(text(sql), params).all()
        return [ScoredChunk(_chunk(r[:-1]), float(r[-1]), "vector") for r in rows]

    def _vector_query(
        self, conn: Connection, q: _F32, k: int, flt: SearchFilter
    ) -> tuple[str, dict[str, Any]]:
        """The k-nearest query for `flt` and the scan settings it runs under (SET LOCAL on
        `conn`, inside the read transaction)."""
        params: dict[str, Any] = {"q": _vector_literal(q), "k": k}
        where = _filter_sql(flt, params)
        # What an exact scan reads is what the policy's GIN index yields: the rows the tokens
        # reach (the other narrowings have no index of their own and filter those rows).
        reach = SearchFilter(flt.access_tokens)
        reach_params: dict[str, Any] = {}
        reachable, _ = self._collection_stats(
            conn, reach, _filter_sql(reach, reach_params), reach_params
        )
        if reachable <= self.exact_max_rows:
            # Selective tokens: exact distances over those rows, never the graph. An HNSW scan
            # that must skip 99 of 100 rows returns k admitted rows, but not the k nearest of
            # them: recall@10 ~0.90 at 1 % on the 100k bench at every ef_search (scale-out.md).
            conn.execute(text("SET LOCAL enable_indexscan = off"))
        else:
            # relaxed_order: the scan goes on past ef_search until k admitted rows are found;
            # the outer ORDER BY restores the exact order of those k. The graph or nothing:
            # the planner cannot estimate the policy's `visible && <setting>` (a parameter at
            # plan time), guesses few rows, and would read every admitted row's vector by a
            # bitmap or sequential scan (0.5 s at 100k); `reachable` is the real count.
            conn.execute(text("SET LOCAL enable_bitmapscan = off"))
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, min(k, 1000))}"))
        vt = self.vector_type
        sql = f"""
        WITH nn AS MATERIALIZED (
            SELECT {_COLUMNS}, seq, embedding <=> CAST(:q AS {vt}) AS distance
            FROM {self.schema}.chunks
            WHERE embedding IS NOT NULL AND {where}
            ORDER BY embedding <=> CAST(:q AS {vt}) LIMIT :k
        )
        SELECT {_COLUMNS}, 1.0 - distance FROM nn ORDER BY distance, seq
        """
        return sql, params

    # ----------------------------------------------------------------- reads

    def count(self, flt: SearchFilter | None = None) -> int:
        if flt is None:
            with self._ingest_read() as conn:
                return int(
                    conn.execute(text(f"SELECT count(*) FROM {self.schema}.chunks")).scalar_one()
                )
        params: dict[str, Any] = {}
        where = _filter_sql(flt, params)
        with self._read(flt) as conn:
            sql = f"SELECT count(*) FROM {self.schema}.chunks WHERE {where}"
            return int(conn.execute(text(sql), params).scalar_one())

    @contextlib.contextmanager
    def _ingest_read(self) -> Iterator[Connection]:
        """A read of every row, for the unfiltered calls of the protocol (ingestion's view,
        `count()`, `document_ids()`, `chunks_of()`: callers check access, as with embedded)."""
        self._check_open()
        with self._transaction() as conn:
            _as_ingestion(conn)
            yield conn

    def document_ids(self) -> set[str]:
        with self._ingest_read() as conn:
            rows = conn.execute(text(f"SELECT DISTINCT document_id FROM {self.schema}.chunks"))
            return {r[0] for r in rows}

    def chunks_of(self, document_id: str) -> list[Chunk]:
        with self._ingest_read() as conn:
            rows = conn.execute(
                text(
                    f"SELECT {_COLUMNS} FROM {self.schema}.chunks WHERE document_id = :d"
                    " ORDER BY position, seq"
                ),
                {"d": document_id},
            ).all()
        return [_chunk(r) for r in rows]

    def iter_chunks(self, batch: int = 1000) -> Iterator[Chunk]:
        """Every chunk in insertion order (no filter: for exports by admins)."""
        after = -1
        while True:
            with self._ingest_read() as conn:
                rows = conn.execute(
                    text(
                        f"SELECT {_COLUMNS}, seq FROM {self.schema}.chunks WHERE seq > :a"
                        " ORDER BY seq LIMIT :n"
                    ),
                    {"a": after, "n": batch},
                ).all()
            if not rows:
                return
            for r in rows:
                yield _chunk(r[:-1])
            after = int(rows[-1][-1])

    # ----------------------------------------------------------------- sentence vectors

    def sentence_vectors(self, model: str, chunks: Sequence[Chunk]) -> dict[str, tuple[_I32, _F32]]:
        """Stored (spans, vectors) of `model` by chunk id, for chunks whose text is unchanged."""
        wanted = {c.id: _text_sha(c.text) for c in chunks}
        if not wanted:
            return {}
        with self._ingest_read() as conn:
            rows = conn.execute(
                text(
                    f"SELECT chunk_id, text_sha, spans, vectors FROM {self.schema}.sentences"
                    " WHERE model = :m AND chunk_id = ANY(CAST(:ids AS text[]))"
                ),
                {"m": model, "ids": list(wanted)},
            ).all()
        out: dict[str, tuple[_I32, _F32]] = {}
        for chunk_id, sha, spans, vectors in rows:
            if wanted.get(chunk_id) != sha:
                continue
            out[chunk_id] = decode_sentence_vectors(bytes(spans), bytes(vectors))
        return out

    def store_sentence_vectors(
        self, model: str, entries: Sequence[tuple[Chunk, _I32, _F32]]
    ) -> None:
        """Keep each chunk's sentence spans and `model`'s vectors of them, replacing older ones."""
        if not entries:
            return
        rows = [
            {
                "d": c.document_id,
                "c": c.id,
                "m": model,
                "a": list(c.access),
                "sha": _text_sha(c.text),
                "spans": np.ascontiguousarray(spans, dtype=np.int32).tobytes(),
                "vectors": np.ascontiguousarray(vectors, dtype=np.float32).tobytes(),
            }
            for c, spans, vectors in entries
        ]
        try:
            with self._ingest_read() as conn:
                conn.execute(text(self._sentence_upsert()), rows)
        except IndexError_:
            # A cache fill at question time must not fail the answer; computed again next time.
            return

    def _sentence_upsert(self) -> str:
        return (
            f"INSERT INTO {self.schema}.sentences VALUES (:d, :c, :m, :a, :sha, :spans, :vectors)"
            " ON CONFLICT (document_id, chunk_id, model) DO UPDATE SET access = EXCLUDED.access,"
            " text_sha = EXCLUDED.text_sha, spans = EXCLUDED.spans, vectors = EXCLUDED.vectors"
        )


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in _COLUMNS.split(","))


def _reason(exc: SQLAlchemyError) -> str:
    """The database's one-line reason, without the SQL (which may be long) or parameters."""
    orig = getattr(exc, "orig", None)
    return str(orig).strip().splitlines()[0] if orig is not None else type(exc).__name__
