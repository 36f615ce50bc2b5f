"""Per-subject encryption keys for crypto-shredding: in the data directory (SQLite), or beside
a PostgreSQL audit log in the log's own schema, so every replica writing that log seals and
erases with the same keys.

The key store never holds a subject id in clear: rows are found by HMAC(index key, subject)
and carry a random pseudonym (the only thing the log stores). Erasing deletes the row with
SQLite's secure_delete on and a rollback journal, so neither the key nor a way back from the
pseudonym to the subject remains in any file; on PostgreSQL the DELETE is followed by a VACUUM
of the table. There the index key is a one-row table of the same schema (docs/audit.md,
"Subject keys on PostgreSQL"): every replica reads the one row the first of them inserted.

`Digests` is the installation's keyed hash for personal text (queries, answers, reasons, a
workflow's inputs and outputs): HMAC-SHA256 under a random key kept owner-only in the data
dir, so a digest in the audit log cannot confirm a guessed query the way a plain SHA-256 can.
Beside a PostgreSQL audit log the key is a one-row table of the log's schema instead, as
replicas must agree on it: an approval binds the digest of what the approvers were shown, so a
vote cast on a replica with another key would never count (an approval given on one replica
left the run waiting forever). The first replica seeds the row from its own key file, so the
digests it made before sharing the database still match.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    delete,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from sovra.audit.keys import create_secret_file, write_secret_file
from sovra.storage import engine_for, erasing_rows, open_sqlite, private_dir, store_engine

DIGEST_KEY = "digest.key"
DIGEST_PREFIX = "hmac-sha256:"

_metadata = MetaData()
subject_keys_t = Table(
    "subject_keys",
    _metadata,
    Column("lookup", LargeBinary, primary_key=True),
    Column("pseudonym", Text, nullable=False, unique=True),
    Column("key", LargeBinary, nullable=False),
)
index_key_t = Table(
    "subject_index_key",
    _metadata,
    # One row (id 1): the HMAC key that turns a subject id into its lookup, shared by replicas.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("key", LargeBinary, nullable=False),
)
digest_key_t = Table(
    "digest_key",
    _metadata,
    # One row (id 1): the key of `Digests`, shared by replicas.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("key", LargeBinary, nullable=False),
)


def _read_key(path: Path) -> bytes:
    """A key file written by sovra: hex, one line."""
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def _shared_key(engine: Engine, table: Table, seed: bytes) -> bytes:
    """The key in one-row `table` (id 1), inserted as `seed` if there is none yet. ON CONFLICT
    DO NOTHING, then read: replicas starting together all get the first row."""
    with engine.begin() as conn:
        conn.execute(
            pg_insert(table).values(id=1, key=seed).on_conflict_do_nothing(index_elements=["id"])
        )
        key = conn.execute(select(table.c.key).where(table.c.id == 1)).scalar_one()
    return bytes(key)


class Digests:
    """Keyed digests of one installation (`<home>/digest.key`, 0600, made on first use)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def in_home(cls, home: Path) -> Digests:
        path = home / DIGEST_KEY
        # Exclusive create: two processes starting at once agree on the one key written first.
        create_secret_file(path, secrets.token_bytes(32).hex() + "\n")
        return cls(_read_key(path))

    @classmethod
    def shared(cls, engine: Engine, home: Path) -> Digests:
        """The key every replica of a PostgreSQL audit log reads (its schema's `digest_key`),
        inserted by the first one from `<home>/digest.key` if it has one, else at random."""
        path = home / DIGEST_KEY
        seed = _read_key(path) if path.exists() else secrets.token_bytes(32)
        return cls(_shared_key(engine, digest_key_t, seed))

    def of(self, text: str | bytes) -> str:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return DIGEST_PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()


class SubjectKeys:
    """Subject → (pseudonym, AES-256 key); `destroy` makes a subject's records unreadable.

    `SubjectKeys(directory)`: the embedded default, `<directory>/subject-keys.sqlite` and
    `subject-index.key`. `SubjectKeys.shared(url, schema)`: tables `subject_keys` and
    `subject_index_key` in PostgreSQL schema `schema` (the audit log's).
    """

    def __init__(self, directory: Path | None = None, *, engine: Engine | None = None) -> None:
        self._lock = threading.Lock()
        self._engine = engine
        if engine is not None:
            self._index_key = _shared_key(engine, index_key_t, secrets.token_bytes(32))
            return
        if directory is None:
            raise ValueError("SubjectKeys needs a directory or a PostgreSQL engine")
        private_dir(directory)
        index_path = directory / "subject-index.key"
        if not index_path.exists():
            write_secret_file(index_path, secrets.token_bytes(32).hex() + "\n")
        self._index_key = bytes.fromhex(index_path.read_text().strip())
        # Owner-only before any key is written; secure_delete and a rollback journal for erasure
        # (module docstring).
        self._db = open_sqlite(
            directory / "subject-keys.sqlite",
            journal_mode="DELETE",
            synchronous="FULL",
            secure_delete=True,
            owner_only=True,
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS subjects ("
            " lookup BLOB PRIMARY KEY, pseudonym TEXT NOT NULL UNIQUE, key BLOB NOT NULL)"
        )

    @classmethod
    def shared(cls, url: str, schema: str) -> SubjectKeys:
        """The subject keys of the PostgreSQL audit log at `url`, in its schema `schema`."""
        from sovra.audit.pgstore import ddl_lock_name

        # CREATE … IF NOT EXISTS of one schema or table run concurrently fails in the catalog, so
        # replicas starting together take turns on PostgresStore's advisory lock, on one
        # connection in one transaction (a second pooled connection could wait on a pool that
        # the lock's waiters hold). store_engine then finds everything made.
        with engine_for(url).begin() as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": ddl_lock_name(schema)}
            )
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            _metadata.create_all(conn.execution_options(schema_translate_map={None: schema}))
        engine = store_engine(url, schema, _metadata)
        return cls(engine=engine)

    def digests(self, home: Path) -> Digests:
        """The installation's `Digests`: beside a PostgreSQL log the key its replicas share,
        otherwise `<home>/digest.key`."""
        if self._engine is not None:
            return Digests.shared(self._engine, home)
        return Digests.in_home(home)

    def _lookup(self, subject: str) -> bytes:
        return hmac.new(self._index_key, subject.encode(), hashlib.sha256).digest()

    def _one(self, stmt: Any) -> Any:
        assert self._engine is not None
        with self._engine.connect() as conn:
            return conn.execute(stmt).first()

    def get_or_create(self, subject: str) -> tuple[str, bytes]:
        lookup = self._lookup(subject)
        if self._engine is not None:
            t = subject_keys_t.c
            wanted = select(t.pseudonym, t.key).where(t.lookup == lookup)
            row = self._one(wanted)
            if row is None:
                # Another replica may insert the same subject meanwhile: the unique lookup
                # keeps one row, ON CONFLICT drops ours, and the re-select returns the winner.
                with self._engine.begin() as conn:
                    conn.execute(
                        pg_insert(subject_keys_t)
                        .values(
                            lookup=lookup,
                            pseudonym="subject:" + secrets.token_hex(12),
                            key=secrets.token_bytes(32),
                        )
                        .on_conflict_do_nothing(index_elements=["lookup"])
                    )
                row = self._one(wanted)
            return str(row[0]), bytes(row[1])
        with self._lock:
            row = self._db.execute(
                "SELECT pseudonym, key FROM subjects WHERE lookup = ?", (lookup,)
            ).fetchone()
            if row is not None:
                return str(row[0]), bytes(row[1])
            # OR IGNORE: another process may have created the subject meanwhile; use its row.
            self._db.execute(
                "INSERT OR IGNORE INTO subjects (lookup, pseudonym, key) VALUES (?, ?, ?)",
                (lookup, "subject:" + secrets.token_hex(12), secrets.token_bytes(32)),
            )
            row = self._db.execute(
                "SELECT pseudonym, key FROM subjects WHERE lookup = ?", (lookup,)
            ).fetchone()
            return str(row[0]), bytes(row[1])

    def pseudonym(self, subject: str) -> str | None:
        if self._engine is not None:
            t = subject_keys_t.c
            found = self._one(select(t.pseudonym).where(t.lookup == self._lookup(subject)))
            return None if found is None else str(found[0])
        with self._lock:
            row = self._db.execute(
                "SELECT pseudonym FROM subjects WHERE lookup = ?", (self._lookup(subject),)
            ).fetchone()
        return None if row is None else str(row[0])

    def key_for(self, pseudonym: str) -> bytes | None:
        if self._engine is not None:
            t = subject_keys_t.c
            found = self._one(select(t.key).where(t.pseudonym == pseudonym))
            return None if found is None else bytes(found[0])
        with self._lock:
            row = self._db.execute(
                "SELECT key FROM subjects WHERE pseudonym = ?", (pseudonym,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def destroy(self, subject: str) -> str | None:
        """Delete the subject's key; returns its pseudonym, or None if there was none."""
        lookup = self._lookup(subject)
        if self._engine is not None:
            t = subject_keys_t.c
            # DELETE … RETURNING in one transaction, then VACUUM so the dead row is reclaimed.
            with erasing_rows(self._engine, "subject_keys") as conn:
                gone = conn.execute(
                    delete(subject_keys_t).where(t.lookup == lookup).returning(t.pseudonym)
                ).first()
            return None if gone is None else str(gone[0])
        with self._lock:
            row = self._db.execute(
                "SELECT pseudonym FROM subjects WHERE lookup = ?", (lookup,)
            ).fetchone()
            if row is None:
                return None
            self._db.execute("DELETE FROM subjects WHERE lookup = ?", (lookup,))
            # Rewrite the file so no free page keeps the old row's bytes.
            self._db.execute("VACUUM")
            return str(row[0])

    def close(self) -> None:
        if self._engine is not None:
            return  # the engine is the process's shared pool for this URL (sovra.storage)
        with self._lock:
            self._db.close()
