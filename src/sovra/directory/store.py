"""The user/group directory: who exists, in which groups, from which origin, and its history.

A SQLAlchemy Core store: `<home>/directory.db` (SQLite) by default, any engine or URL
(PostgreSQL) when given one. Every change is one transaction that also appends a row to
`directory_history`; the `on_change` listener (the workspace, which writes the audit log —
this layer sits below audit) hears of it after the commit. Lookups go to the database every
time, so a revocation applies on the next query in every process.

Users and memberships carry their origin (`local`, `scim`, `ldap`): a sync only touches what
it brought in, and a user or group that two origins claim is refused unless `IdentityMapping`
says otherwise (never implicitly). An old `directory.json` is migrated once, losslessly.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from sovra.domain import ADMIN_GROUP, AUDITOR_GROUP, Principal
from sovra.errors import Conflict, Invalid, NotFound
from sovra.storage import atomic_write, engine_for, erasing_rows

DIRECTORY_FILENAME = "directory.db"
LEGACY_FILENAME = "directory.json"
ORIGINS = ("local", "scim", "ldap")
ROLE_GROUPS = frozenset({ADMIN_GROUP, AUDITOR_GROUP})
"""Groups that grant a sovra role: an identity provider's group of that name is refused
unless `[directory.group_map]` names it (an IdP admin must not become a sovra admin by a
naming accident)."""
SCIM_TOKEN_PREFIX = "sovra_scim_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_log = logging.getLogger("sovra.directory")

metadata = MetaData()
users_t = Table(
    "directory_users",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("display_name", String(256), nullable=False, default=""),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("since", Float, nullable=False, default=0.0),
    Column("origin", String(16), nullable=False, default="local"),
    Column("external_id", String(256), nullable=True),
)
groups_t = Table(
    "directory_groups",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("origin", String(16), nullable=False, default="local"),
    Column("external_id", String(256), nullable=True),
    Column("display_name", String(256), nullable=False, default=""),
)
members_t = Table(
    "directory_members",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("group_name", String(128), primary_key=True),
    Column("origin", String(16), nullable=False, default="local"),
)
history_t = Table(
    "directory_history",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("user_id", String(128), nullable=True),
    Column("group_name", String(128), nullable=True),
    Column("detail", Text, nullable=False, default="{}"),
)
scim_tokens_t = Table(
    "directory_scim_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)


class DirectoryError(Invalid):
    """A bad name or an unreadable directory; the message says how to fix it."""


class UnknownUser(NotFound, DirectoryError):
    """No such user (or a disabled one): never a guest."""


class DirectoryConflict(Conflict, DirectoryError):
    """Two origins claim one user, or an IdP group collides with a sovra role: refused until
    `[directory]` in sovra.toml maps it explicitly."""


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise DirectoryError(
            f"{kind} name {name!r} is not allowed; use letters, digits, '.', '_', '@' or '-'"
        )
    return name


def _check_origin(origin: str) -> str:
    if origin not in ORIGINS:
        raise DirectoryError(f"origin {origin!r} is unknown; use one of {', '.join(ORIGINS)}")
    return origin


@dataclass
class User:
    id: str
    groups: set[str] = field(default_factory=set)
    display_name: str = ""
    disabled: bool = False
    since: float = 0.0
    """When this user entry came into being (or was last re-enabled): credentials issued before
    it belong to an earlier user of the same id and are not accepted (0 = before stamps)."""
    origin: str = "local"
    external_id: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    members: tuple[str, ...]
    description: str = ""
    origin: str = "local"
    external_id: str | None = None
    display_name: str = ""


@dataclass(frozen=True)
class Change:
    """One row of the directory's history (and the audit event the workspace makes of it)."""

    seq: int
    at: float
    origin: str
    action: str
    user_id: str | None
    group: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class IdentityMapping:
    """The explicit answers to conflicts (from `[directory]` in sovra.toml).

    `group_map`: IdP group name → sovra group name (the only way an IdP group may be named
    like a role group, or carry a name sovra does not accept). `adopt_users`: user ids that an
    identity provider may take over from another origin (e.g. a local user now provisioned
    by SCIM)."""

    group_map: Mapping[str, str] = field(default_factory=dict)
    adopt_users: frozenset[str] = frozenset()

    def group_name(self, idp_name: str) -> str:
        """The sovra group an identity provider's group becomes; refused when ambiguous."""
        if idp_name in self.group_map:
            return _check_name("group", self.group_map[idp_name])
        if idp_name.lower() in ROLE_GROUPS:
            raise DirectoryConflict(
                f"identity-provider group {idp_name!r} collides with sovra's role group"
                f" {idp_name.lower()!r}; map it explicitly in sovra.toml, e.g."
                f' [directory.group_map] "{idp_name}" = "{idp_name.lower()}" to grant the role,'
                f' or "{idp_name}" = "idp-{idp_name.lower()}" to keep it an ordinary group'
            )
        if not _NAME.match(idp_name):
            raise DirectoryError(
                f"identity-provider group {idp_name!r} is not a valid sovra group name; map it"
                f' in sovra.toml: [directory.group_map] "{idp_name}" = "a-valid-name"'
            )
        return idp_name


ChangeListener = Callable[[Change], None]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Directory:
    """Users and groups; read from the database on every lookup so revocations apply on the
    next query."""

    def __init__(
        self,
        target: Path | str | Engine,
        *,
        on_change: ChangeListener | None = None,
        mapping: IdentityMapping | None = None,
    ) -> None:
        self.path = target if isinstance(target, Path) else None
        # Every request resolves its principal here: the SQLite file's connections are kept
        # open (`keep_open`); each lookup still reads the database anew.
        self.engine = engine_for(target, keep_open=True)
        self.on_change = on_change
        self.mapping = mapping or IdentityMapping()
        self.legacy_backup: Path | None = None
        """The migrated `directory.json`, kept beside the database (erasure scrubs it too)."""
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise DirectoryError(
                f"the directory database cannot be opened ({type(exc).__name__}: {exc});"
                " check the path or database URL and its permissions"
            ) from None

    @classmethod
    def in_home(
        cls,
        home: Path,
        *,
        engine: Engine | str | None = None,
        on_change: ChangeListener | None = None,
        mapping: IdentityMapping | None = None,
    ) -> Directory:
        """The directory of a data dir (or of `engine`), migrating a `directory.json` once."""
        directory = cls(
            engine if engine is not None else home / DIRECTORY_FILENAME,
            on_change=on_change,
            mapping=mapping,
        )
        legacy = home / LEGACY_FILENAME
        directory.legacy_backup = home / (LEGACY_FILENAME + ".migrated")
        if legacy.exists():
            directory.migrate_json(legacy)
        return directory

    # ------------------------------------------------------------------ migration
    def migrate_json(self, legacy: Path) -> int:
        """Import a `directory.json` (users, groups, `since` stamps) in one transaction, then
        rename it `directory.json.migrated`; returns the users imported. A user already in the
        database is left as it is (the file was migrated before and restored)."""
        try:
            raw = json.loads(legacy.read_text(encoding="utf-8"))
            users = [
                User(
                    id=str(u["id"]),
                    groups={str(g) for g in u.get("groups", [])},
                    display_name=str(u.get("display_name", "")),
                    disabled=bool(u.get("disabled", False)),
                    since=float(u.get("since", 0.0)),
                )
                for u in raw.get("users", [])
            ]
            declared = {str(k): str(v) for k, v in raw.get("groups", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DirectoryError(
                f"directory file {legacy} is unreadable ({exc}); restore it from backup"
                " (it is migrated into the directory database once it can be read)"
            ) from None
        imported = 0
        with self.engine.begin() as conn:
            for name, description in declared.items():
                if self._group_row(conn, name) is None:
                    conn.execute(insert(groups_t).values(name=name, description=description))
            for user in users:
                if self._user_row(conn, user.id) is not None:
                    continue
                conn.execute(
                    insert(users_t).values(
                        id=user.id,
                        display_name=user.display_name,
                        disabled=user.disabled,
                        since=user.since,
                        origin="local",
                    )
                )
                for g in sorted(user.groups):
                    conn.execute(insert(members_t).values(user_id=user.id, group_name=g))
                imported += 1
            change = self._log(
                conn, "local", "migrate", None, None, {"from": str(legacy), "users": imported}
            )
        legacy.rename(legacy.with_name(LEGACY_FILENAME + ".migrated"))
        _log.warning(
            "migrated %d user(s) and %d group(s) from %s into the directory database;"
            " the old file is kept as %s.migrated",
            imported,
            len(declared),
            legacy,
            legacy.name,
        )
        self._notify([change])
        return imported

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _user_row(conn: Connection, user_id: str) -> Any:
        return conn.execute(select(users_t).where(users_t.c.id == user_id)).first()

    @staticmethod
    def _group_row(conn: Connection, name: str) -> Any:
        return conn.execute(select(groups_t).where(groups_t.c.name == name)).first()

    @staticmethod
    def _memberships(conn: Connection, user_id: str) -> dict[str, str]:
        rows = conn.execute(
            select(members_t.c.group_name, members_t.c.origin).where(members_t.c.user_id == user_id)
        )
        return {r.group_name: r.origin for r in rows}

    def _user(self, conn: Connection, user_id: str) -> User | None:
        row = self._user_row(conn, user_id)
        if row is None:
            return None
        return User(
            id=row.id,
            groups=set(self._memberships(conn, user_id)),
            display_name=row.display_name,
            disabled=bool(row.disabled),
            since=float(row.since),
            origin=row.origin,
            external_id=row.external_id,
        )

    @staticmethod
    def _log(
        conn: Connection,
        origin: str,
        action: str,
        user_id: str | None,
        group: str | None,
        detail: dict[str, Any] | None = None,
    ) -> Change:
        at = time.time()
        detail = detail or {}
        result = conn.execute(
            insert(history_t).values(
                at=at,
                origin=origin,
                action=action,
                user_id=user_id,
                group_name=group,
                detail=json.dumps(detail, sort_keys=True),
            )
        )
        seq = int(result.inserted_primary_key[0]) if result.inserted_primary_key else 0
        return Change(seq, at, origin, action, user_id, group, detail)

    def _notify(self, changes: Iterable[Change]) -> None:
        if self.on_change is not None:
            for change in changes:
                self.on_change(change)

    def _unknown_in(self, conn: Connection, user_id: str) -> UnknownUser:
        known = [r.id for r in conn.execute(select(users_t.c.id).order_by(users_t.c.id).limit(10))]
        return UnknownUser(
            f"unknown user {user_id!r}; add it with `sovra user add {user_id} --group ...`"
            f" (known: {', '.join(known) or 'none yet'})"
        )

    def _claim(self, conn: Connection, user_id: str, origin: str) -> Any:
        """The user's row, after refusing a claim by a second origin unless it is mapped."""
        row = self._user_row(conn, user_id)
        if row is not None and (problem := self.claim_problem(user_id, row.origin, origin)):
            raise DirectoryConflict(problem)
        return row

    def claim_problem(self, user_id: str, have: str, want: str) -> str | None:
        """Why origin `want` may not take over a user that origin `have` holds (None: it may);
        the local CLI may always add groups to any user."""
        if have == want or want == "local" or user_id in self.mapping.adopt_users:
            return None
        return (
            f"user {user_id!r} already exists from origin {have!r}; {want} may not take it"
            " over implicitly. To let it, add the id to sovra.toml"
            f' [directory] adopt_users = ["{user_id}"]; or remove the {have} user first'
        )

    # ------------------------------------------------------------------ reads
    def users(self) -> list[User]:
        with self.engine.connect() as conn:
            ids = [r.id for r in conn.execute(select(users_t.c.id).order_by(users_t.c.id))]
            return [u for i in ids if (u := self._user(conn, i)) is not None]

    def user(self, user_id: str) -> User | None:
        """The entry of a user, disabled or not; None if unknown."""
        with self.engine.connect() as conn:
            return self._user(conn, user_id)

    def groups(self) -> dict[str, list[str]]:
        """Group name → member list (groups named by memberships or declared)."""
        return {g.name: list(g.members) for g in self.group_list()}

    def group_list(self) -> list[Group]:
        with self.engine.connect() as conn:
            members: dict[str, list[str]] = {}
            for r in conn.execute(select(members_t).order_by(members_t.c.user_id)):
                members.setdefault(r.group_name, []).append(r.user_id)
            declared = {r.name: r for r in conn.execute(select(groups_t))}
        out = []
        for name in sorted(set(members) | set(declared)):
            row = declared.get(name)
            out.append(
                Group(
                    name=name,
                    members=tuple(members.get(name, [])),
                    description=row.description if row else "",
                    origin=row.origin if row else "local",
                    external_id=row.external_id if row else None,
                    display_name=row.display_name if row else "",
                )
            )
        return out

    def group(self, name: str) -> Group | None:
        return next((g for g in self.group_list() if g.name == name), None)

    def history(self, limit: int = 100, user_id: str | None = None) -> list[Change]:
        """The latest changes, oldest first."""
        query = select(history_t).order_by(history_t.c.seq.desc()).limit(limit)
        if user_id is not None:
            query = query.where(history_t.c.user_id == user_id)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query))
        return [
            Change(r.seq, r.at, r.origin, r.action, r.user_id, r.group_name, json.loads(r.detail))
            for r in reversed(rows)
        ]

    # ------------------------------------------------------------------ writes
    def add_user(
        self,
        user_id: str,
        groups: list[str] | None = None,
        display_name: str = "",
        *,
        origin: str = "local",
        external_id: str | None = None,
    ) -> User:
        """Add a user (or add groups to, re-enable or rename an existing one)."""
        _check_name("user", user_id)
        _check_origin(origin)
        for g in groups or []:
            _check_name("group", g)
        changes = []
        with self.engine.begin() as conn:
            row = self._claim(conn, user_id, origin)
            if row is None:
                # A new user starts a new generation: keys and sessions of a removed one of
                # the same id do not come back with it.
                conn.execute(
                    insert(users_t).values(
                        id=user_id,
                        display_name=display_name,
                        disabled=False,
                        since=time.time(),
                        origin=origin,
                        external_id=external_id,
                    )
                )
                changes.append(self._log(conn, origin, "user.add", user_id, None))
            else:
                values: dict[str, Any] = {}
                if row.disabled:
                    values.update(disabled=False, since=time.time())
                    changes.append(self._log(conn, origin, "user.enable", user_id, None))
                if display_name and display_name != row.display_name:
                    values["display_name"] = display_name
                if row.origin != origin and origin != "local":
                    values["origin"] = origin
                    changes.append(
                        self._log(conn, origin, "user.adopt", user_id, None, {"from": row.origin})
                    )
                if external_id is not None and external_id != row.external_id:
                    values["external_id"] = external_id
                if values:
                    conn.execute(update(users_t).where(users_t.c.id == user_id).values(**values))
            have = self._memberships(conn, user_id)
            for g in sorted(set(groups or []) - set(have)):
                conn.execute(insert(members_t).values(user_id=user_id, group_name=g, origin=origin))
                changes.append(self._log(conn, origin, "member.add", user_id, g))
            user = self._user(conn, user_id)
        self._notify(changes)
        assert user is not None
        return user

    def update_user(
        self,
        user_id: str,
        *,
        origin: str,
        display_name: str | None = None,
        external_id: str | None = None,
    ) -> User:
        with self.engine.begin() as conn:
            row = self._claim(conn, user_id, origin)
            if row is None:
                raise self._unknown_in(conn, user_id)
            values: dict[str, Any] = {}
            if display_name is not None and display_name != row.display_name:
                values["display_name"] = display_name
            if external_id is not None and external_id != row.external_id:
                values["external_id"] = external_id
            change = None
            if values:
                conn.execute(update(users_t).where(users_t.c.id == user_id).values(**values))
                change = self._log(conn, origin, "user.update", user_id, None, {"set": values})
            user = self._user(conn, user_id)
        self._notify([change] if change else [])
        assert user is not None
        return user

    def remove_user(self, user_id: str, *, origin: str = "local") -> None:
        with self.engine.begin() as conn:
            if self._user_row(conn, user_id) is None:
                raise self._unknown_in(conn, user_id)
            conn.execute(delete(members_t).where(members_t.c.user_id == user_id))
            conn.execute(delete(users_t).where(users_t.c.id == user_id))
            change = self._log(conn, _check_origin(origin), "user.remove", user_id, None)
        self._notify([change])

    def disable_user(self, user_id: str, *, origin: str = "local") -> User:
        """Keep the entry (groups, name) but refuse the user everywhere until `add_user` again."""
        changes = []
        with self.engine.begin() as conn:
            row = self._user_row(conn, user_id)
            if row is None:
                raise self._unknown_in(conn, user_id)
            if not row.disabled:
                conn.execute(update(users_t).where(users_t.c.id == user_id).values(disabled=True))
                changes.append(
                    self._log(conn, _check_origin(origin), "user.disable", user_id, None)
                )
            user = self._user(conn, user_id)
        self._notify(changes)
        assert user is not None
        return user

    def add_group(
        self,
        name: str,
        description: str = "",
        *,
        origin: str = "local",
        external_id: str | None = None,
        display_name: str = "",
    ) -> Group:
        _check_name("group", name)
        _check_origin(origin)
        changes = []
        with self.engine.begin() as conn:
            row = self._group_row(conn, name)
            if row is None:
                # A group so far only named by local memberships stays local when declared.
                implied = conn.execute(
                    select(members_t.c.user_id).where(members_t.c.group_name == name).limit(1)
                ).first()
                conn.execute(
                    insert(groups_t).values(
                        name=name,
                        description=description,
                        origin="local" if implied else origin,
                        external_id=external_id,
                        display_name=display_name,
                    )
                )
                changes.append(self._log(conn, origin, "group.add", None, name))
            else:
                if row.origin != origin and origin != "local" and row.origin != "local":
                    raise DirectoryConflict(
                        f"group {name!r} already comes from {row.origin!r}; {origin} may not"
                        " take it over implicitly — map the IdP group to another name in"
                        " sovra.toml [directory.group_map]"
                    )
                values: dict[str, Any] = {}
                if description and description != row.description:
                    values["description"] = description
                if external_id is not None and external_id != row.external_id:
                    values["external_id"] = external_id
                if display_name and display_name != row.display_name:
                    values["display_name"] = display_name
                # A group keeps its origin: an IdP joining a local group by mapping does not
                # come to own it (nor may it delete it).
                if values:
                    conn.execute(update(groups_t).where(groups_t.c.name == name).values(**values))
        self._notify(changes)
        group = self.group(name)
        assert group is not None
        return group

    def remove_group(self, name: str, *, origin: str = "local") -> None:
        """Delete a group and every membership in it (effective on the next query)."""
        with self.engine.begin() as conn:
            gone = [
                r.user_id
                for r in conn.execute(
                    select(members_t.c.user_id).where(members_t.c.group_name == name)
                )
            ]
            conn.execute(delete(members_t).where(members_t.c.group_name == name))
            conn.execute(delete(groups_t).where(groups_t.c.name == name))
            change = self._log(
                conn, _check_origin(origin), "group.remove", None, name, {"members": gone}
            )
        self._notify([change])

    def set_membership(
        self, user_id: str, group: str, member: bool, *, origin: str = "local"
    ) -> User:
        _check_name("group", group)
        _check_origin(origin)
        changes = []
        with self.engine.begin() as conn:
            if self._user_row(conn, user_id) is None:
                raise self._unknown_in(conn, user_id)
            have = self._memberships(conn, user_id)
            if member and group not in have:
                conn.execute(
                    insert(members_t).values(user_id=user_id, group_name=group, origin=origin)
                )
                changes.append(self._log(conn, origin, "member.add", user_id, group))
            elif not member and group in have:
                conn.execute(
                    delete(members_t).where(
                        members_t.c.user_id == user_id, members_t.c.group_name == group
                    )
                )
                changes.append(self._log(conn, origin, "member.remove", user_id, group))
            user = self._user(conn, user_id)
        self._notify(changes)
        assert user is not None
        return user

    def set_members(self, group: str, members: Iterable[str], *, origin: str) -> list[Change]:
        """Make `members` the group's members from `origin` (members another origin added stay);
        unknown user ids are an error. Returns the changes made."""
        _check_name("group", group)
        _check_origin(origin)
        wanted = set(members)
        changes: list[Change] = []
        with self.engine.begin() as conn:
            for user_id in sorted(wanted):
                if self._user_row(conn, user_id) is None:
                    raise self._unknown_in(conn, user_id)
            rows = conn.execute(select(members_t).where(members_t.c.group_name == group))
            have = {r.user_id: r.origin for r in rows}
            for user_id in sorted(wanted - set(have)):
                conn.execute(
                    insert(members_t).values(user_id=user_id, group_name=group, origin=origin)
                )
                changes.append(self._log(conn, origin, "member.add", user_id, group))
            for user_id, by in sorted(have.items()):
                if user_id not in wanted and by == origin:
                    conn.execute(
                        delete(members_t).where(
                            members_t.c.user_id == user_id, members_t.c.group_name == group
                        )
                    )
                    changes.append(self._log(conn, origin, "member.remove", user_id, group))
        self._notify(changes)
        return changes

    def erase_subject(self, user_id: str) -> int:
        """Right to erasure: the user, its memberships, its history rows and its entry in the
        migrated `directory.json` backup go; returns the rows removed. Not a history event
        (that would name the subject again): the erasure is audited by its caller. The rows
        are erased for good (`erasing_rows`): the pooled connections keep the SQLite file open,
        so its WAL is not removed by a last close and is emptied here instead."""
        tables = (members_t.name, users_t.name, history_t.name)
        with erasing_rows(self.engine, *tables) as conn:
            removed = conn.execute(delete(members_t).where(members_t.c.user_id == user_id))
            gone = removed.rowcount
            gone += conn.execute(delete(users_t).where(users_t.c.id == user_id)).rowcount
            gone += conn.execute(delete(history_t).where(history_t.c.user_id == user_id)).rowcount
        backup = self.legacy_backup
        if backup is not None and backup.exists():
            raw = json.loads(backup.read_text(encoding="utf-8"))
            kept = [u for u in raw.get("users", []) if u.get("id") != user_id]
            if len(kept) != len(raw.get("users", [])):
                atomic_write(backup, json.dumps({**raw, "users": kept}, indent=2))
                gone += 1
        return gone

    # ------------------------------------------------------------------ SCIM tokens
    def create_scim_token(self, name: str) -> tuple[str, str]:
        """A bearer token for an identity provider's SCIM client: (token shown once, id).
        Only its SHA-256 is stored (it is 256 random bits, so a fast hash is enough)."""
        token_id = secrets.token_hex(6)
        token = f"{SCIM_TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            conn.execute(
                insert(scim_tokens_t).values(
                    id=token_id, name=name, sha256=_sha256(token), created_at=time.time()
                )
            )
            change = self._log(conn, "local", "scim_token.create", None, None, {"id": token_id})
        self._notify([change])
        return token, token_id

    def scim_token_valid(self, presented: str) -> bool:
        parts = presented[len(SCIM_TOKEN_PREFIX) :].split("_", 1)
        if not presented.startswith(SCIM_TOKEN_PREFIX) or len(parts) != 2 or len(presented) > 200:
            return False
        with self.engine.connect() as conn:
            row = conn.execute(select(scim_tokens_t).where(scim_tokens_t.c.id == parts[0])).first()
        return bool(
            row is not None
            and row.revoked_at is None
            and hmac.compare_digest(row.sha256, _sha256(presented))
        )

    def scim_tokens(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(scim_tokens_t).order_by(scim_tokens_t.c.created_at))
            return [
                {
                    "id": r.id,
                    "name": r.name,
                    "created_at": r.created_at,
                    "revoked": r.revoked_at is not None,
                }
                for r in rows
            ]

    def revoke_scim_token(self, token_id: str) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(scim_tokens_t)
                .where(scim_tokens_t.c.id == token_id, scim_tokens_t.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
            if not done:
                raise NotFound(
                    f"no live SCIM token {token_id!r}; list them with"
                    " `sovra directory scim-token list`"
                )
            change = self._log(conn, "local", "scim_token.revoke", None, None, {"id": token_id})
        self._notify([change])

    # ------------------------------------------------------------------ principals
    def active_user(self, user_id: str) -> User:
        """The entry of an enabled user; unknown or disabled users are an error."""
        with self.engine.connect() as conn:
            user = self._user(conn, user_id)
            if user is None or user.disabled:
                raise self._unknown_in(conn, user_id)
        return user

    def principal(self, user_id: str) -> Principal:
        """The Principal for a user id; unknown or disabled users are an error (never a guest)."""
        user = self.active_user(user_id)
        return Principal(id=user.id, groups=frozenset(user.groups), display_name=user.display_name)

    def close(self) -> None:
        self.engine.dispose()
