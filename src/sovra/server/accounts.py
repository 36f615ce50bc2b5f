"""Local credentials kept in the data directory (`server/accounts.sqlite`, WAL).

- Passwords of directory users (argon2id). The directory stays the source of users and groups;
  this store only holds how a user proves who they are.
- API keys for services: `sovra_<key id>_<secret>`, shown once, stored as an argon2id hash,
  scoped, revocable, with the time of last use.
- Browser sessions: a random token in a cookie, stored as its SHA-256 (a stolen database
  yields no usable session), with a per-session CSRF token.
- Feedback on answers (thumbs + comment).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sovra.errors import Invalid, NotFound
from sovra.storage import erasing, open_sqlite, private_dir

KEY_PREFIX = "sovra_"
SCOPES: tuple[str, ...] = ("search", "ask", "documents", "audit", "feedback", "flows", "admin")
"""`admin`: the administration pages and policy check (the key's user must also be an admin)."""
DEFAULT_KEY_SCOPES: tuple[str, ...] = ("search", "ask", "documents")
_LAST_USED_EVERY_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS passwords (
    user_id TEXT PRIMARY KEY, hash TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT NOT NULL, hash TEXT NOT NULL,
    scopes TEXT NOT NULL, created_at REAL NOT NULL, last_used_at REAL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY, user_id TEXT NOT NULL, csrf TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL);
"""


class AccountError(Invalid):
    """A credential operation that cannot be done; the message says why."""


class UnknownApiKey(NotFound, AccountError):
    """No API key with that id."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "user": self.user_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked": self.revoked_at is not None,
        }


@dataclass(frozen=True)
class Session:
    user_id: str
    csrf: str
    expires_at: float
    groups: tuple[str, ...] | None = None
    """None: a local user, resolved in the directory on every request. A tuple: an identity
    provider's user, with the groups its ID token carried at sign-in."""
    display_name: str = ""
    created_at: float = 0.0
    checked_at: float = 0.0
    """Identity-provider sessions: when the IdP last vouched for the groups."""
    sealed_idp_token: bytes | None = None
    """The IdP access token, sealed with a key derived from the session cookie (which only
    the browser holds): a copy of this database cannot call the IdP as the user."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sealing_key(token: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"sovra session idp token").derive(
        token.encode("utf-8")
    )


def _seal(token: str, secret: str) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_sealing_key(token)).encrypt(nonce, secret.encode("utf-8"), None)


def _unseal(token: str, sealed: bytes) -> str | None:
    try:
        return AESGCM(_sealing_key(token)).decrypt(sealed[:12], sealed[12:], None).decode()
    except (InvalidTag, ValueError):
        return None


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    out = tuple(sorted(set(scopes)))
    bad = [s for s in out if s not in SCOPES]
    if bad or not out:
        raise AccountError(f"unknown scope(s) {bad or '(none)'}; use {', '.join(SCOPES)}")
    return out


class AccountStore:
    """Thread-safe; one per process (the server) or per CLI command."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        self.path = path
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        _ = self._db
        self._hasher = PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        # sha256(full key) → key id, for keys whose argon2 hash was verified by this process:
        # argon2 is slow on purpose; revocation is still checked in the database on every use.
        self._verified: dict[str, str] = {}

    @classmethod
    def in_home(cls, home: Path) -> AccountStore:
        return cls(home / "server" / "accounts.sqlite")

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, reopened after `close()` (an app's lifespan may run again)."""
        with self._lock:
            if self._conn is None:
                conn = open_sqlite(self.path, timeout=30)
                conn.executescript(_SCHEMA)
                columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
                # Stores made before identity-provider sign-in lack these columns.
                if "groups" not in columns:
                    conn.execute("ALTER TABLE sessions ADD COLUMN groups TEXT")
                if "display_name" not in columns:
                    conn.execute("ALTER TABLE sessions ADD COLUMN display_name TEXT")
                if "checked_at" not in columns:
                    conn.execute("ALTER TABLE sessions ADD COLUMN checked_at REAL")
                if "idp_token" not in columns:
                    conn.execute("ALTER TABLE sessions ADD COLUMN idp_token BLOB")
                self._conn = conn
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------------ passwords
    def set_password(self, user_id: str, password: str) -> None:
        if len(password) < 8:
            raise AccountError("password too short; use at least 8 characters")
        digest = self._hasher.hash(password)
        with self._lock:
            self._db.execute(
                "INSERT INTO passwords(user_id, hash, updated_at) VALUES (?,?,?) "
                "ON CONFLICT(user_id) DO UPDATE SET hash=excluded.hash, "
                "updated_at=excluded.updated_at",
                (user_id, digest, time.time()),
            )
            # A new password ends the user's sessions.
            self._db.execute("DELETE FROM sessions WHERE user_id=?", (user_id,))

    def has_password(self, user_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM passwords WHERE user_id=?", (user_id,)).fetchone()
        return row is not None

    def check_password(self, user_id: str, password: str) -> bool:
        """Constant work whether or not the user exists (no user enumeration by timing)."""
        with self._lock:
            row = self._db.execute(
                "SELECT hash FROM passwords WHERE user_id=?", (user_id,)
            ).fetchone()
        digest = row[0] if row else self._dummy
        ok: bool
        try:
            ok = self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if ok and row and self._hasher.check_needs_rehash(digest):
            self.set_password(user_id, password)
        return bool(ok and row)

    # ------------------------------------------------------------------ API keys
    def create_key(
        self, user_id: str, name: str, scopes: Iterable[str] = DEFAULT_KEY_SCOPES
    ) -> tuple[str, ApiKey]:
        """Returns the key (shown once; only its hash is stored) and its record."""
        checked = check_scopes(scopes)
        key_id = secrets.token_hex(6)
        secret = KEY_PREFIX + key_id + "_" + secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys(id, user_id, name, hash, scopes, created_at) "
                "VALUES (?,?,?,?,?,?)",
                (key_id, user_id, name, self._hasher.hash(secret), " ".join(checked), now),
            )
        return secret, ApiKey(key_id, user_id, name, checked, now, None, None)

    def keys(self, user_id: str | None = None) -> list[ApiKey]:
        sql = "SELECT id, user_id, name, scopes, created_at, last_used_at, revoked_at FROM api_keys"
        args: tuple[str, ...] = ()
        if user_id is not None:
            sql += " WHERE user_id=?"
            args = (user_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at", args).fetchall()
        return [ApiKey(r[0], r[1], r[2], tuple(r[3].split()), r[4], r[5], r[6]) for r in rows]

    def revoke_key(self, key_id: str) -> ApiKey:
        with self._lock:
            cur = self._db.execute(
                "UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            if cur.rowcount == 0 and not any(k.id == key_id for k in self.keys()):
                raise UnknownApiKey(f"no API key {key_id!r}; list them with `sovra apikey list`")
            self._verified = {h: k for h, k in self._verified.items() if k != key_id}
        return next(k for k in self.keys() if k.id == key_id)

    def authenticate_key(self, presented: str) -> ApiKey | None:
        """The live key record for a presented key, or None (unknown, wrong, or revoked)."""
        parts = presented.split("_")
        if not presented.startswith(KEY_PREFIX) or len(parts) < 3 or len(presented) > 200:
            return None
        key_id = parts[1]
        with self._lock:
            row = self._db.execute(
                "SELECT id, user_id, name, hash, scopes, created_at, last_used_at, revoked_at "
                "FROM api_keys WHERE id=?",
                (key_id,),
            ).fetchone()
        fingerprint = _sha256(presented)
        if row is None or row[7] is not None:
            return None
        if not hmac.compare_digest(self._verified.get(fingerprint, ""), key_id):
            try:
                self._hasher.verify(row[3], presented)
            except (VerificationError, InvalidHashError):
                return None
            with self._lock:
                self._verified[fingerprint] = key_id
        now = time.time()
        last_used = row[6]
        if last_used is None or now - last_used > _LAST_USED_EVERY_S:
            with self._lock:
                self._db.execute("UPDATE api_keys SET last_used_at=? WHERE id=?", (now, key_id))
            last_used = now
        return ApiKey(row[0], row[1], row[2], tuple(row[4].split()), row[5], last_used, None)

    def erase_user(self, user_id: str) -> int:
        """Erasure: the user's password, API keys and sessions are deleted for good (free
        pages zeroed, file rewritten); returns the rows deleted."""
        with self._lock, erasing(self._db) as db:
            return sum(
                db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,)).rowcount
                for table in ("passwords", "api_keys", "sessions")
            )

    # ------------------------------------------------------------------ sessions
    def create_session(
        self,
        user_id: str,
        ttl_s: int,
        *,
        groups: tuple[str, ...] | None = None,
        display_name: str = "",
        idp_token: str | None = None,
    ) -> tuple[str, Session]:
        """A new session; `groups` (and the IdP's access token, to re-ask it for them) only
        for identity-provider users (see `Session.groups`)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        sealed = _seal(token, idp_token) if idp_token else None
        session = Session(
            user_id, secrets.token_urlsafe(24), now + ttl_s, groups, display_name, now, now, sealed
        )
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            self._db.execute(
                "INSERT INTO sessions(token_sha256, user_id, csrf, created_at, expires_at, "
                "groups, display_name, checked_at, idp_token) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    _sha256(token),
                    user_id,
                    session.csrf,
                    now,
                    session.expires_at,
                    None if groups is None else json.dumps(list(groups)),
                    display_name,
                    now,
                    sealed,
                ),
            )
        return token, session

    def session(self, token: str) -> Session | None:
        if not token or len(token) > 200:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT user_id, csrf, expires_at, groups, display_name, created_at, "
                "checked_at, idp_token FROM sessions WHERE token_sha256=?",
                (_sha256(token),),
            ).fetchone()
        if row is None or row[2] < time.time():
            return None
        groups = None if row[3] is None else tuple(str(g) for g in json.loads(row[3]))
        checked = row[6] if row[6] is not None else row[5]
        return Session(row[0], row[1], row[2], groups, row[4] or "", row[5], checked, row[7])

    def idp_token(self, token: str, session: Session) -> str | None:
        """The IdP access token of an identity-provider session, unsealed with its cookie."""
        if session.sealed_idp_token is None:
            return None
        return _unseal(token, session.sealed_idp_token)

    def rechecked(self, token: str, groups: tuple[str, ...]) -> None:
        """The IdP vouched for the session's user again, with these groups."""
        with self._lock:
            self._db.execute(
                "UPDATE sessions SET groups=?, checked_at=? WHERE token_sha256=?",
                (json.dumps(list(groups)), time.time(), _sha256(token)),
            )

    def end_session(self, token: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE token_sha256=?", (_sha256(token),))

    # ------------------------------------------------------------------ users leaving
    def revoke_user(self, user_id: str) -> tuple[int, int]:
        """Revoke every API key of `user_id` and end their sessions (`user remove`/`disable`);
        returns (keys revoked, sessions ended). The directory's `since` stamp also keeps them
        dead should this store be restored from an older backup."""
        with self._lock:
            keys = self._db.execute(
                "UPDATE api_keys SET revoked_at=? WHERE user_id=? AND revoked_at IS NULL",
                (time.time(), user_id),
            ).rowcount
            sessions = self._db.execute("DELETE FROM sessions WHERE user_id=?", (user_id,)).rowcount
            revoked = {k.id for k in self.keys(user_id)}
            self._verified = {h: k for h, k in self._verified.items() if k not in revoked}
        return keys, sessions
