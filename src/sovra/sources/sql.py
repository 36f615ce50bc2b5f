"""SQL connector: the rows of a table or a read-only query, one row one document.

Any SQLAlchemy URL works (PostgreSQL via psycopg, MariaDB/MySQL via pymysql, SQLite; SQL
Server and Oracle with their drivers installed). The URL is read from the reference the config
names (`env:NAME`, `file:/path`) when the connector opens its engine, never stored or shown:
errors are scrubbed of it and of its password.

Every statement runs in a read-only transaction with a statement timeout, set per dialect:
PostgreSQL `SET TRANSACTION READ ONLY` + `SET LOCAL statement_timeout`, MariaDB/MySQL
`SET TRANSACTION READ ONLY` + `max_statement_time`/`max_execution_time`, SQLite
`PRAGMA query_only`, Oracle `SET TRANSACTION READ ONLY` (untested here: no server). The configured query was already refused unless it is one SELECT
(`config.check_read_only_query`); the database account should be read-only too.

Versions: with `updated_at_column` the listing reads only the id, that column and the access
column (a row is fetched again only when one of them changes); without it every row is read
and its values hashed. The access column is part of the version, so a row moving to another
team is re-labelled on the next sync even if nobody touched its `updated_at`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from sovra.config import SqlSource
from sovra.domain import ClassificationScale, Document, DocumentRef, content_hash
from sovra.sources.base import DocumentNotFound, EmptyDocument, SourceUnavailable
from sovra.sources.labels import Labels, label_metadata, source_labels
from sovra.sources.parse import PARSER_VERSION
from sovra.sources.records import _scalar, record_text, record_title

_SUBQUERY = "sovra_rows"


def read_secret(reference: str, what: str) -> str:
    """The value behind `env:NAME` / `file:/path` (or an inline value without a secret)."""
    if reference.startswith("env:"):
        name = reference[4:]
        value = os.environ.get(name)
        if not value:
            raise SourceUnavailable(f"{what}: environment variable {name} is not set")
        return value.strip()
    if reference.startswith("file:"):
        path = Path(reference[5:]).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SourceUnavailable(f"{what}: cannot read {path}: {exc.strerror}") from None
    return reference


class SqlConnector:
    """Lists and fetches rows; the engine is opened on first use and disposed by `close()`."""

    def __init__(
        self,
        source: SqlSource,
        scale: ClassificationScale | None = None,
        *,
        base_dir: Path | None = None,
    ) -> None:
        self.source = source
        self.scale = scale or ClassificationScale()
        self.base_dir = base_dir
        self._engine: Engine | None = None
        self._secrets: tuple[str, ...] = ()
        self._rows: dict[str, Mapping[str, Any]] = {}
        self._keys: dict[str, Any] = {}  # external id → the id value as the database holds it
        self._versions: dict[str, str] = {}
        self._location = f"sql:{source.name}"

    @property
    def name(self) -> str:
        return self.source.name

    # -- engine and read-only transactions ---------------------------------------------

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            if secret:
                message = message.replace(secret, "***")
        return message

    def _fail(self, what: str, exc: BaseException) -> SourceUnavailable:
        detail = self._scrub(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0])
        return SourceUnavailable(f"source {self.name!r}: {what}: {detail}")

    def _url(self) -> URL:
        raw = read_secret(self.source.url, f"source {self.name!r} url")
        try:
            url = make_url(raw)
        except ArgumentError:
            # make_url's message repeats the value: say only what is wrong.
            raise SourceUnavailable(
                f"source {self.name!r}: {self.source.url} does not hold a SQLAlchemy URL"
            ) from None
        self._secrets = tuple(s for s in (raw, url.password and str(url.password)) if s)
        if url.get_backend_name() == "sqlite" and url.database and self.base_dir is not None:
            db = Path(url.database)
            if url.database != ":memory:" and not db.is_absolute():
                url = url.set(database=str(self.base_dir / db))
        port = f":{url.port}" if url.port else ""
        self._location = f"{url.get_backend_name()}://{url.host or ''}{port}/{url.database or ''}"
        return url

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            url = self._url()
            try:
                self._engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
            except (NoSuchModuleError, ImportError) as exc:
                raise self._fail("no driver for this database is installed", exc) from None
            except (ArgumentError, SQLAlchemyError) as exc:
                raise self._fail("cannot open the database", exc) from None
        return self._engine

    @contextmanager
    def _read_only(self) -> Iterator[Connection]:
        """A connection inside a read-only transaction with the statement timeout set;
        rolled back at the end (nothing is ever committed)."""
        engine = self.engine
        dialect = engine.dialect.name
        ms = int(self.source.statement_timeout_s * 1000)
        try:
            with engine.connect() as conn:
                if dialect == "postgresql":
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
                elif dialect in ("mysql", "mariadb"):
                    if getattr(engine.dialect, "is_mariadb", False):
                        conn.exec_driver_sql(f"SET SESSION max_statement_time = {ms / 1000:.3f}")
                    else:
                        conn.exec_driver_sql(f"SET SESSION max_execution_time = {ms}")
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                elif dialect == "sqlite":
                    conn.exec_driver_sql("PRAGMA query_only = ON")
                elif dialect == "oracle":
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                try:
                    yield conn
                finally:
                    conn.rollback()
        except SourceUnavailable:
            raise
        except SQLAlchemyError as exc:
            raise self._fail("query failed", exc) from None

    def _quote(self, name: str) -> str:
        prep = self.engine.dialect.identifier_preparer
        return ".".join(prep.quote(part) for part in name.split("."))

    def _from(self) -> str:
        src = self.source
        if src.table is not None:
            return f"{self._quote(src.table)} {_SUBQUERY}"
        query = (src.query or "").strip().rstrip(";")
        return f"({query}) {_SUBQUERY}"

    # -- listing -------------------------------------------------------------------------

    def _key_columns(self) -> list[str]:
        src = self.source
        cols = [src.id_column]
        for c in (src.updated_at_column, src.access_column):
            if c and c not in cols:
                cols.append(c)
        return cols

    def _select(self) -> str:
        if self.source.updated_at_column is None:
            cols = "*"
        else:
            cols = ", ".join(f"{_SUBQUERY}.{self._quote(c)}" for c in self._key_columns())
        return f"SELECT {cols} FROM {self._from()}"

    def _labels(self, external_id: str, fields: Mapping[str, Any]) -> Labels:
        src = self.source
        overrides: dict[str, object] = {}
        if src.access_column:
            raw = _scalar(fields.get(src.access_column)).strip()
            if src.access_map:
                if raw in src.access_map:
                    overrides["access"] = list(src.access_map[raw])
            elif raw:
                overrides["access"] = raw
        # The administrator named the column and its mapping: its values are the access.
        return source_labels(src, external_id, self.scale, overrides, trusted=True)

    def _version(self, external_id: str, fields: Mapping[str, Any]) -> str:
        canon = json.dumps(
            {k: _scalar(v) for k, v in fields.items()}, sort_keys=True, ensure_ascii=False
        )
        fp = self._labels(external_id, fields).fingerprint()
        return content_hash(f"{PARSER_VERSION}\x1fsql\x1f{canon}\x1f{fp}")

    def list(self) -> Iterator[DocumentRef]:
        src = self.source
        full = src.updated_at_column is None
        rows: dict[str, Mapping[str, Any]] = {}
        keys: dict[str, Any] = {}
        versions: dict[str, str] = {}
        with self._read_only() as conn:
            result = conn.execution_options(stream_results=True).exec_driver_sql(self._select())
            mapped = result.mappings()
            try:
                while batch := mapped.fetchmany(src.batch_rows):
                    for row in batch:
                        if src.id_column not in row:
                            raise SourceUnavailable(
                                f"source {self.name!r}: id_column {src.id_column!r} is not a"
                                f" column of the rows (columns: {', '.join(row.keys())})"
                            )
                        raw_id = row[src.id_column]
                        eid = _scalar(raw_id).strip()
                        if not eid or eid in keys:
                            continue  # no id or a repeated one: the first row wins
                        if len(keys) >= src.max_rows:
                            raise SourceUnavailable(
                                f"source {self.name!r}: more than max_rows={src.max_rows} rows;"
                                " raise max_rows or narrow the query (nothing was changed)"
                            )
                        keys[eid] = raw_id
                        fields = dict(row)
                        versions[eid] = self._version(eid, fields)
                        if full:
                            rows[eid] = fields
            finally:
                result.close()
        self._rows, self._keys, self._versions = rows, keys, versions
        for eid, version in versions.items():
            yield DocumentRef(eid, version)

    # -- fetching ------------------------------------------------------------------------

    def _row(self, external_id: str) -> Mapping[str, Any]:
        if not self._keys:
            for _ in self.list():
                pass
        row = self._rows.get(external_id)
        if row is not None:
            return row
        if external_id not in self._keys:
            raise DocumentNotFound(external_id, "row no longer in the source")
        id_col = f"{_SUBQUERY}.{self._quote(self.source.id_column)}"
        stmt = text(f"SELECT * FROM {self._from()} WHERE {id_col} = :id").bindparams(
            bindparam("id")
        )
        with self._read_only() as conn:
            found = conn.execute(stmt, {"id": self._keys[external_id]}).mappings().first()
        if found is None:
            raise DocumentNotFound(external_id, "row deleted since the listing")
        return dict(found)

    def fetch(self, external_id: str) -> Document:
        src = self.source
        fields = self._row(external_id)
        skip = {
            src.id_column,
            src.title_column,
            src.access_column,
            src.updated_at_column,
            *src.metadata_columns,
        }
        body = record_text(fields, src.text_columns, skip)
        if not body.strip():
            raise EmptyDocument(external_id, "no text in the text columns")
        labels = self._labels(external_id, fields)
        metadata = {c: _scalar(fields.get(c)) for c in src.metadata_columns if c in fields}
        metadata.update(label_metadata(labels))
        modified = fields.get(src.updated_at_column) if src.updated_at_column else None
        version = self._versions.get(external_id) or self._version(external_id, fields)
        return Document(
            source=self.name,
            external_id=external_id,
            version=version,
            title=record_title(fields, src.title_column, body),
            uri=f"{self._location}/{src.table or self.name}#{external_id}",
            text=body,
            access=labels.access,
            classification=labels.classification,
            residency=labels.residency,
            mime_type="text/plain",
            metadata=metadata,
            modified_at=_aware(modified),
        )

    def permissions(self, external_id: str) -> tuple[str, ...]:
        return self._labels(external_id, self._row(external_id)).access

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _aware(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str) and re.match(r"\d{4}-\d{2}-\d{2}", value):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None
