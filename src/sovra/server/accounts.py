"""Credentials: `server/accounts.sqlite` in the data directory (WAL) by default, the
`sovra_accounts` schema of the shared PostgreSQL database with `[workspace] database_url`
(every replica then sees one set of keys and sessions).

- Passwords of directory users (argon2id). The directory stays the source of users and groups;
  this store only holds how a user proves who they are.
- API keys for services: `sovra_<key id>_<secret>`, shown once, stored as an argon2id hash,
  scoped, revocable, with the time of last use.
- Browser sessions: a random token in a cookie, stored as its SHA-256 (a stolen database
  yields no usable session), with a per-session CSRF token.

Nothing is cached across requests except which presented key strings already passed the slow
argon2 check (the key's row, and so its revocation, is read from the database on every use):
a key revoked or a session ended on one replica is refused by every other on its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
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
from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from sovra.config import Config
from sovra.errors import Invalid, NotFound
from sovra.storage import erasing_rows, is_sqlite, missing_columns, store_engine, upsert

KEY_PREFIX = "sovra_"
SCOPES: tuple[str, ...] = ("search", "ask", "documents", "audit", "feedback", "flows", "admin")
"""`admin`: the administration pages and policy check (the key's user must also be an admin)."""
DEFAULT_KEY_SCOPES: tuple[str, ...] = ("search", "ask", "documents")
_LAST_USED_EVERY_S = 60.0

SCHEMA = "sovra_accounts"
"""The PostgreSQL schema of the credential tables (and of sign-ins and rate limits)."""
FILENAME = "server/accounts.sqlite"

metadata = MetaData()
passwords_t = Table(
    "passwords",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("hash", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)
api_keys_t = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("hash", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)
sessions_t = Table(
    "sessions",
    metadata,
    Column("token_sha256", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("csrf", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("groups", Text),
    Column("display_name", Text),
    Column("checked_at", Float),
    Column("idp_token", LargeBinary),
)
rate_limits_t = Table(
    "rate_limits",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("last", Float, nullable=False),
    Column("allowed", Integer, nullable=False),
)
"""Token buckets (`server.auth.RateLimiter`): one row per limited principal or address."""
oidc_pending_t = Table(
    "oidc_pending",
    metadata,
    Column("state_sha256", Text, primary_key=True),
    Column("nonce", Text, nullable=False),
    Column("code_verifier", Text, nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("next_path", Text, nullable=False),
    Column("created", Float, nullable=False),
)
"""Browser sign-ins through the identity provider, started and not yet finished
(`server.oidc.PendingLogins`): the callback may reach another replica than the start."""
_SESSION_COLUMNS_ADDED = {
    # Stores made before identity-provider sign-in lack these columns.
    "groups": "TEXT",
    "display_name": "TEXT",
    "checked_at": "REAL",
    "idp_token": "BLOB",
}
_PG_TYPES = {"REAL": "DOUBLE PRECISION", "BLOB": "BYTEA"}


def open_accounts_engine(target: Path | str | Engine) -> Engine:
    """The credential store's engine (tables created, an older SQLite file upgraded); the
    sign-in and rate-limit tables of `server.shared` live beside it. Every request checks its
    credential and spends its rate-limit token here, so the SQLite file's connections are kept
    open (`keep_open`); each check still reads the database anew, so a revoked key fails on the
    next request."""
    engine = store_engine(target, SCHEMA, metadata, keep_open=True)
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        missing_columns(
            conn,
            "sessions",
            {k: _PG_TYPES.get(v, v) if pg else v for k, v in _SESSION_COLUMNS_ADDED.items()},
        )
    return engine


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

    def __init__(self, target: Path | str | Engine) -> None:
        self.path = target if isinstance(target, Path) else None
        self.engine = open_accounts_engine(target)
        self._lock = threading.RLock()
        self._hasher = PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        # sha256(full key) → key id, for keys whose argon2 hash was verified by this process:
        # argon2 is slow on purpose; revocation is still checked in the database on every use.
        self._verified: dict[str, str] = {}

    @classmethod
    def in_home(cls, home: Path, engine: Engine | str | None = None) -> AccountStore:
        """The store of a data dir, or of `engine` (the shared database) when given."""
        return cls(engine if engine is not None else home / FILENAME)

    @classmethod
    def for_config(cls, config: Config) -> AccountStore:
        """The configured store: the shared database with `[workspace] database_url`."""
        return cls.in_home(config.home, config.shared_database_url())

    def close(self) -> None:
        # A shared database's pool belongs to the process and outlives one store.
        if is_sqlite(self.engine):
            self.engine.dispose()

    # ------------------------------------------------------------------ passwords
    def set_password(self, user_id: str, password: str) -> None:
        if len(password) < 8:
            raise AccountError("password too short; use at least 8 characters")
        digest = self._hasher.hash(password)
        with self.engine.begin() as conn:
            conn.execute(
                upsert(conn, passwords_t, ["user_id"]).values(
                    user_id=user_id, hash=digest, updated_at=time.time()
                )
            )
            # A new password ends the user's sessions.
            conn.execute(delete(sessions_t).where(sessions_t.c.user_id == user_id))

    def _password_hash(self, user_id: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.scalar(select(passwords_t.c.hash).where(passwords_t.c.user_id == user_id))
        return None if value is None else str(value)

    def has_password(self, user_id: str) -> bool:
        return self._password_hash(user_id) is not None

    def check_password(self, user_id: str, password: str) -> bool:
        """Constant work whether or not the user exists (no user enumeration by timing)."""
        stored = self._password_hash(user_id)
        digest = stored if stored is not None else self._dummy
        ok: bool
        try:
            ok = self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if ok and stored is not None and self._hasher.check_needs_rehash(digest):
            self.set_password(user_id, password)
        return bool(ok and stored is not None)

    # ------------------------------------------------------------------ API keys
    def create_key(
        self, user_id: str, name: str, scopes: Iterable[str] = DEFAULT_KEY_SCOPES
    ) -> tuple[str, ApiKey]:
        """Returns the key (shown once; only its hash is stored) and its record."""
        checked = check_scopes(scopes)
        key_id = secrets.token_hex(6)
        secret = KEY_PREFIX + key_id + "_" + secrets.token_urlsafe(32)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_keys_t).values(
                    id=key_id,
                    user_id=user_id,
                    name=name,
                    hash=self._hasher.hash(secret),
                    scopes=" ".join(checked),
                    created_at=now,
                )
            )
        return secret, ApiKey(key_id, user_id, name, checked, now, None, None)

    def keys(self, user_id: str | None = None) -> list[ApiKey]:
        t = api_keys_t
        query = select(
            t.c.id,
            t.c.user_id,
            t.c.name,
            t.c.scopes,
            t.c.created_at,
            t.c.last_used_at,
            t.c.revoked_at,
        ).order_by(t.c.created_at)
        if user_id is not None:
            query = query.where(t.c.user_id == user_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [ApiKey(r[0], r[1], r[2], tuple(r[3].split()), r[4], r[5], r[6]) for r in rows]

    def revoke_key(self, key_id: str) -> ApiKey:
        with self.engine.begin() as conn:
            conn.execute(
                update(api_keys_t)
                .where(api_keys_t.c.id == key_id, api_keys_t.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        with self._lock:
            self._verified = {h: k for h, k in self._verified.items() if k != key_id}
        key = next((k for k in self.keys() if k.id == key_id), None)
        if key is None:
            raise UnknownApiKey(f"no API key {key_id!r}; list them with `sovra apikey list`")
        return key

    def authenticate_key(self, presented: str) -> ApiKey | None:
        """The live key record for a presented key, or None (unknown, wrong, or revoked)."""
        parts = presented.split("_")
        if not presented.startswith(KEY_PREFIX) or len(parts) < 3 or len(presented) > 200:
            return None
        key_id = parts[1]
        t = api_keys_t
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    t.c.id,
                    t.c.user_id,
                    t.c.name,
                    t.c.hash,
                    t.c.scopes,
                    t.c.created_at,
                    t.c.last_used_at,
                    t.c.revoked_at,
                ).where(t.c.id == key_id)
            ).first()
        fingerprint = _sha256(presented)
        if row is None or row[7] is not None:
            return None
        with self._lock:
            known = self._verified.get(fingerprint, "")
        if not hmac.compare_digest(known, key_id):
            try:
                self._hasher.verify(row[3], presented)
            except (VerificationError, InvalidHashError):
                return None
            with self._lock:
                self._verified[fingerprint] = key_id
        now = time.time()
        last_used = row[6]
        if last_used is None or now - last_used > _LAST_USED_EVERY_S:
            with self.engine.begin() as conn:
                conn.execute(update(t).where(t.c.id == key_id).values(last_used_at=now))
            last_used = now
        return ApiKey(row[0], row[1], row[2], tuple(row[4].split()), row[5], last_used, None)

    def erase_user(self, user_id: str) -> int:
        """Erasure: the user's password, API keys and sessions are deleted for good (free
        pages zeroed and the file rewritten on SQLite, the tables vacuumed on PostgreSQL);
        returns the rows deleted."""
        tables = (passwords_t, api_keys_t, sessions_t)
        with erasing_rows(self.engine, *(t.name for t in tables)) as conn:
            return sum(
                conn.execute(delete(t).where(t.c.user_id == user_id)).rowcount for t in tables
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
        with self.engine.begin() as conn:
            conn.execute(delete(sessions_t).where(sessions_t.c.expires_at < now))
            conn.execute(
                insert(sessions_t).values(
                    token_sha256=_sha256(token),
                    user_id=user_id,
                    csrf=session.csrf,
                    created_at=now,
                    expires_at=session.expires_at,
                    groups=None if groups is None else json.dumps(list(groups)),
                    display_name=display_name,
                    checked_at=now,
                    idp_token=sealed,
                )
            )
        return token, session

    def session(self, token: str) -> Session | None:
        if not token or len(token) > 200:
            return None
        t = sessions_t
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    t.c.user_id,
                    t.c.csrf,
                    t.c.expires_at,
                    t.c.groups,
                    t.c.display_name,
                    t.c.created_at,
                    t.c.checked_at,
                    t.c.idp_token,
                ).where(t.c.token_sha256 == _sha256(token))
            ).first()
        if row is None or row[2] < time.time():
            return None
        groups = None if row[3] is None else tuple(str(g) for g in json.loads(row[3]))
        checked = row[6] if row[6] is not None else row[5]
        sealed = None if row[7] is None else bytes(row[7])
        return Session(row[0], row[1], row[2], groups, row[4] or "", row[5], checked, sealed)

    def idp_token(self, token: str, session: Session) -> str | None:
        """The IdP access token of an identity-provider session, unsealed with its cookie."""
        if session.sealed_idp_token is None:
            return None
        return _unseal(token, session.sealed_idp_token)

    def rechecked(self, token: str, groups: tuple[str, ...]) -> None:
        """The IdP vouched for the session's user again, with these groups."""
        with self.engine.begin() as conn:
            conn.execute(
                update(sessions_t)
                .where(sessions_t.c.token_sha256 == _sha256(token))
                .values(groups=json.dumps(list(groups)), checked_at=time.time())
            )

    def end_session(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(sessions_t).where(sessions_t.c.token_sha256 == _sha256(token)))

    # ------------------------------------------------------------------ users leaving
    def revoke_user(self, user_id: str) -> tuple[int, int]:
        """Revoke every API key of `user_id` and end their sessions (`user remove`/`disable`);
        returns (keys revoked, sessions ended). The directory's `since` stamp also keeps them
        dead should this store be restored from an older backup."""
        with self.engine.begin() as conn:
            keys = conn.execute(
                update(api_keys_t)
                .where(api_keys_t.c.user_id == user_id, api_keys_t.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
            sessions = conn.execute(
                delete(sessions_t).where(sessions_t.c.user_id == user_id)
            ).rowcount
        revoked = {k.id for k in self.keys(user_id)}
        with self._lock:
            self._verified = {h: k for h, k in self._verified.items() if k not in revoked}
        return keys, sessions
