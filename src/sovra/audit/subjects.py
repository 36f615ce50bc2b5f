"""Per-subject encryption keys for crypto-shredding, kept in the data directory.

The key store never holds a subject id in clear: rows are found by HMAC(index key, subject)
and carry a random pseudonym (the only thing the log stores). Erasing deletes the row with
SQLite's secure_delete on and a rollback journal, so neither the key nor a way back from the
pseudonym to the subject remains in any file.

`Digests` is the installation's keyed hash for personal text (queries, answers, reasons, a
workflow's inputs and outputs): HMAC-SHA256 under a random key kept owner-only in the data
dir, so a digest in the audit log cannot confirm a guessed query the way a plain SHA-256 can.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from pathlib import Path

from sovra.audit.keys import create_secret_file, write_secret_file
from sovra.storage import open_sqlite, private_dir

DIGEST_KEY = "digest.key"
DIGEST_PREFIX = "hmac-sha256:"


class Digests:
    """Keyed digests of one installation (`<home>/digest.key`, 0600, made on first use)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def in_home(cls, home: Path) -> Digests:
        path = home / DIGEST_KEY
        # Exclusive create: two processes starting at once agree on the one key written first.
        create_secret_file(path, secrets.token_bytes(32).hex() + "\n")
        return cls(bytes.fromhex(path.read_text(encoding="ascii").strip()))

    def of(self, text: str | bytes) -> str:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return DIGEST_PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()


class SubjectKeys:
    """Subject → (pseudonym, AES-256 key); `destroy` makes a subject's records unreadable."""

    def __init__(self, directory: Path) -> None:
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
        self._lock = threading.Lock()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS subjects ("
            " lookup BLOB PRIMARY KEY, pseudonym TEXT NOT NULL UNIQUE, key BLOB NOT NULL)"
        )

    def _lookup(self, subject: str) -> bytes:
        return hmac.new(self._index_key, subject.encode(), hashlib.sha256).digest()

    def get_or_create(self, subject: str) -> tuple[str, bytes]:
        lookup = self._lookup(subject)
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
        with self._lock:
            row = self._db.execute(
                "SELECT pseudonym FROM subjects WHERE lookup = ?", (self._lookup(subject),)
            ).fetchone()
        return None if row is None else str(row[0])

    def key_for(self, pseudonym: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key FROM subjects WHERE pseudonym = ?", (pseudonym,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def destroy(self, subject: str) -> str | None:
        """Delete the subject's key; returns its pseudonym, or None if there was none."""
        lookup = self._lookup(subject)
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
        with self._lock:
            self._db.close()
