"""The user/group directory kept in the data dir (`directory.json`): who exists and in which groups.

An identity provider (OIDC groups claim) replaces it later; the rest of sovra only sees Principals.
Writes are atomic (temp file + rename) so a crash never leaves a half-written directory.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from sovra.domain import Principal
from sovra.errors import Invalid, NotFound
from sovra.storage import atomic_write, private_dir

DIRECTORY_FILENAME = "directory.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


class DirectoryError(Invalid):
    """A bad name or an unreadable directory file; the message says how to fix it."""


class UnknownUser(NotFound, DirectoryError):
    """No such user (or a disabled one): never a guest."""


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise DirectoryError(
            f"{kind} name {name!r} is not allowed; use letters, digits, '.', '_', '@' or '-'"
        )
    return name


@dataclass
class User:
    id: str
    groups: set[str] = field(default_factory=set)
    display_name: str = ""
    disabled: bool = False
    since: float = 0.0
    """When this user entry came into being (or was last re-enabled): credentials issued before
    it belong to an earlier user of the same id and are not accepted (0 = before stamps)."""


class Directory:
    """Users and groups; re-read from disk on every lookup so revocations apply on the next query."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_home(cls, home: Path) -> Directory:
        return cls(home / DIRECTORY_FILENAME)

    def _read(self) -> tuple[dict[str, User], dict[str, str]]:
        if not self.path.exists():
            return {}, {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            users = {
                u["id"]: User(
                    id=u["id"],
                    groups=set(u.get("groups", [])),
                    display_name=u.get("display_name", ""),
                    disabled=bool(u.get("disabled", False)),
                    since=float(u.get("since", 0.0)),
                )
                for u in raw.get("users", [])
            }
            groups = {str(k): str(v) for k, v in raw.get("groups", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DirectoryError(
                f"directory file {self.path} is unreadable ({exc}); restore it from backup"
            ) from None
        return users, groups

    def _write(self, users: dict[str, User], groups: dict[str, str]) -> None:
        private_dir(self.path.parent)
        data = {
            "users": [
                {
                    "id": u.id,
                    "groups": sorted(u.groups),
                    "display_name": u.display_name,
                    "disabled": u.disabled,
                    "since": u.since,
                }
                for u in sorted(users.values(), key=lambda u: u.id)
            ],
            "groups": dict(sorted(groups.items())),
        }
        atomic_write(self.path, json.dumps(data, indent=2))

    def users(self) -> list[User]:
        return sorted(self._read()[0].values(), key=lambda u: u.id)

    def groups(self) -> dict[str, list[str]]:
        """Group name → description-less member list (groups named by users or declared)."""
        users, declared = self._read()
        out: dict[str, list[str]] = {g: [] for g in declared}
        for user in users.values():
            for g in user.groups:
                out.setdefault(g, []).append(user.id)
        return {g: sorted(m) for g, m in sorted(out.items())}

    def add_user(
        self, user_id: str, groups: list[str] | None = None, display_name: str = ""
    ) -> User:
        _check_name("user", user_id)
        for g in groups or []:
            _check_name("group", g)
        users, declared = self._read()
        user = users.get(user_id)
        if user is None or user.disabled:
            # A new (or re-enabled) user starts a new generation: keys and sessions of the
            # removed or disabled one do not come back with the id.
            user = user or User(id=user_id)
            user.since = time.time()
        user.groups.update(groups or [])
        user.display_name = display_name or user.display_name
        user.disabled = False
        users[user_id] = user
        self._write(users, declared)
        return user

    def remove_user(self, user_id: str) -> None:
        users, declared = self._read()
        if user_id not in users:
            raise self._unknown(user_id, users)
        del users[user_id]
        self._write(users, declared)

    def disable_user(self, user_id: str) -> User:
        """Keep the entry (groups, name) but refuse the user everywhere until `add_user` again."""
        users, declared = self._read()
        if user_id not in users:
            raise self._unknown(user_id, users)
        users[user_id].disabled = True
        self._write(users, declared)
        return users[user_id]

    def add_group(self, name: str, description: str = "") -> None:
        _check_name("group", name)
        users, declared = self._read()
        declared[name] = description
        self._write(users, declared)

    def set_membership(self, user_id: str, group: str, member: bool) -> User:
        _check_name("group", group)
        users, declared = self._read()
        if user_id not in users:
            raise self._unknown(user_id, users)
        if member:
            users[user_id].groups.add(group)
        else:
            users[user_id].groups.discard(group)
        self._write(users, declared)
        return users[user_id]

    @staticmethod
    def _unknown(user_id: str, users: dict[str, User]) -> UnknownUser:
        known = ", ".join(sorted(users)[:10]) or "none yet"
        return UnknownUser(
            f"unknown user {user_id!r}; add it with `sovra user add {user_id} --group ...`"
            f" (known: {known})"
        )

    def active_user(self, user_id: str) -> User:
        """The entry of an enabled user; unknown or disabled users are an error."""
        users, _ = self._read()
        user = users.get(user_id)
        if user is None or user.disabled:
            raise self._unknown(user_id, users)
        return user

    def principal(self, user_id: str) -> Principal:
        """The Principal for a user id; unknown or disabled users are an error (never a guest)."""
        user = self.active_user(user_id)
        return Principal(id=user.id, groups=frozenset(user.groups), display_name=user.display_name)
