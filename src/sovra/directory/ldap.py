"""Pull users and groups from LDAP / Active Directory into the directory (`sovra directory sync`).

One sync reads every user and group under the configured bases (paged, read-only bind),
resolves nested groups transitively (a member that is itself a group brings its members,
cycles are harmless), marks disabled accounts (Active Directory's `userAccountControl` bit 2,
or a configured attribute) and then makes the directory's `ldap`-origin users and memberships
equal to what it read: users gone from LDAP are removed, memberships gone are taken away,
memberships from other origins are left alone. Conflicts (a user another origin owns, an LDAP
group named like a sovra role) refuse the whole sync before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sovra.directory.store import Directory, DirectoryConflict, DirectoryError, IdentityMapping
from sovra.errors import Unavailable

AD_ACCOUNTDISABLE = 0x2
_TRUE = frozenset({"true", "1", "yes", "disabled"})


class LdapUnavailable(Unavailable):
    """The LDAP server cannot be reached or refuses the bind; nothing was changed."""


@dataclass(frozen=True)
class LdapSettings:
    """What `[directory.ldap]` says, with the bind password already read from its reference."""

    url: str
    bind_dn: str
    password: str
    user_base: str
    group_base: str
    # No defaults here: `[directory.ldap]` (config.LdapConfig) is the one place they live;
    # the workspace builds this from its validated model.
    user_filter: str
    group_filter: str
    user_id_attribute: str
    display_name_attribute: str
    group_name_attribute: str
    member_attribute: str
    disabled_attribute: str
    timeout_s: float


@dataclass
class LdapSyncReport:
    users: int = 0
    groups: int = 0
    added: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    """Users disabled by this sync: their credentials must be revoked (the CLI does it)."""
    removed: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)
    memberships_added: int = 0
    memberships_removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "groups": self.groups,
            "added": self.added,
            "disabled": self.disabled,
            "removed": self.removed,
            "enabled": self.enabled,
            "memberships_added": self.memberships_added,
            "memberships_removed": self.memberships_removed,
        }


@dataclass(frozen=True)
class LdapUser:
    dn: str
    id: str
    display_name: str
    disabled: bool


def is_disabled(attribute: str, values: Iterable[Any]) -> bool:
    """Whether an account is disabled: AD flags by bit, any other attribute by value."""
    for value in values:
        text = str(value).strip()
        if attribute.lower() == "useraccountcontrol":
            try:
                if int(text) & AD_ACCOUNTDISABLE:
                    return True
            except ValueError:
                continue
        elif text.lower() in _TRUE:
            return True
    return False


def transitive_members(direct: dict[str, set[str]], user_dns: set[str]) -> dict[str, set[str]]:
    """Group DN → the user DNs in it, through nested groups (cycles are cut)."""
    resolved: dict[str, set[str]] = {}
    for group in direct:
        found: set[str] = set()
        seen = {group}
        todo = [group]
        while todo:
            for member in direct.get(todo.pop(), set()):
                if member in user_dns:
                    found.add(member)
                elif member in direct and member not in seen:
                    seen.add(member)
                    todo.append(member)
        resolved[group] = found
    return resolved


def _values(entry: Any, attribute: str) -> list[Any]:
    if not attribute or attribute not in entry.get("attributes", {}):
        return []
    value = entry["attributes"][attribute]
    return list(value) if isinstance(value, list) else [value]


def read_tree(settings: LdapSettings) -> tuple[list[LdapUser], dict[str, tuple[str, set[str]]]]:
    """Users and groups (DN → (name, member DNs)) as the server has them now."""
    import ldap3
    from ldap3.core.exceptions import LDAPException

    try:
        server = ldap3.Server(
            settings.url, connect_timeout=max(1, int(settings.timeout_s)), get_info=ldap3.NONE
        )
        conn = ldap3.Connection(
            server,
            user=settings.bind_dn or None,
            password=settings.password or None,
            auto_bind=True,
            read_only=True,
            receive_timeout=max(1, int(settings.timeout_s)),
        )
    except LDAPException as exc:
        raise LdapUnavailable(
            f"LDAP server {settings.url} refused the connection or the bind as"
            f" {settings.bind_dn or '(anonymous)'} ({type(exc).__name__}: {exc}); check url,"
            " bind_dn and the password reference in [directory.ldap]; nothing was changed"
        ) from None
    user_attrs = [settings.user_id_attribute, settings.display_name_attribute]
    if settings.disabled_attribute:
        user_attrs.append(settings.disabled_attribute)
    try:
        raw_users = conn.extend.standard.paged_search(
            settings.user_base,
            settings.user_filter,
            attributes=user_attrs,
            paged_size=500,
            generator=False,
        )
        raw_groups = conn.extend.standard.paged_search(
            settings.group_base,
            settings.group_filter,
            attributes=[settings.group_name_attribute, settings.member_attribute],
            paged_size=500,
            generator=False,
        )
    except LDAPException as exc:
        raise LdapUnavailable(
            f"LDAP search failed ({type(exc).__name__}: {exc}); check user_base, group_base"
            " and the filters in [directory.ldap]; nothing was changed"
        ) from None
    finally:
        conn.unbind()
    users = []
    for entry in raw_users:
        if entry.get("type") != "searchResEntry":
            continue
        ids = _values(entry, settings.user_id_attribute)
        if not ids:
            continue
        names = _values(entry, settings.display_name_attribute)
        users.append(
            LdapUser(
                dn=str(entry["dn"]).lower(),
                id=str(ids[0]),
                display_name=str(names[0]) if names else "",
                disabled=is_disabled(
                    settings.disabled_attribute, _values(entry, settings.disabled_attribute)
                ),
            )
        )
    groups: dict[str, tuple[str, set[str]]] = {}
    for entry in raw_groups:
        if entry.get("type") != "searchResEntry":
            continue
        names = _values(entry, settings.group_name_attribute)
        if names:
            members = {str(m).lower() for m in _values(entry, settings.member_attribute)}
            groups[str(entry["dn"]).lower()] = (str(names[0]), members)
    return users, groups


def sync_ldap(directory: Directory, settings: LdapSettings) -> LdapSyncReport:
    """Make the directory's LDAP-origin users and memberships what the server says now."""
    users, groups = read_tree(settings)
    return apply_tree(directory, users, groups)


def apply_tree(
    directory: Directory, users: list[LdapUser], groups: dict[str, tuple[str, set[str]]]
) -> LdapSyncReport:
    mapping: IdentityMapping = directory.mapping
    by_dn = {u.dn: u for u in users}
    members = transitive_members({dn: m for dn, (_, m) in groups.items()}, set(by_dn))
    problems: list[str] = []
    named: dict[str, set[str]] = {}
    sovra_names: dict[str, str] = {}
    for dn, (idp_name, _) in sorted(groups.items()):
        try:
            name = mapping.group_name(idp_name)
        except DirectoryError as exc:
            problems.append(exc.message)
            continue
        existing = directory.group(name)
        if existing is not None and existing.origin not in ("ldap", "local"):
            problems.append(
                f"group {name!r} already comes from {existing.origin}; map the LDAP group"
                f" {idp_name!r} to another name in [directory.group_map]"
            )
        elif (
            existing is not None
            and existing.origin == "local"
            and existing.members
            and idp_name not in mapping.group_map
        ):
            problems.append(
                f"group {name!r} already exists locally; LDAP group {dn!r} joins it only"
                f' when sovra.toml maps it: [directory.group_map] "{idp_name}" = "{name}"'
            )
        named.setdefault(name, set()).update(by_dn[m].id for m in members[dn])
        sovra_names[name] = idp_name
    for user in users:
        current = directory.user(user.id)
        if current is not None and (
            problem := directory.claim_problem(user.id, current.origin, "ldap")
        ):
            problems.append(problem)
    if problems:
        raise DirectoryConflict(
            "LDAP sync refused, nothing was changed:\n- " + "\n- ".join(problems)
        )
    report = LdapSyncReport(users=len(users), groups=len(named))
    for user in users:
        before = directory.user(user.id)
        if before is None:
            report.added.append(user.id)
        if user.disabled:
            if before is None:
                directory.add_user(user.id, [], user.display_name, origin="ldap")
            directory.update_user(
                user.id, origin="ldap", display_name=user.display_name, external_id=user.dn
            )
            if before is None or not before.disabled:
                directory.disable_user(user.id, origin="ldap")
                report.disabled.append(user.id)
            continue
        if before is not None and before.disabled:
            report.enabled.append(user.id)
        directory.add_user(user.id, [], user.display_name, origin="ldap", external_id=user.dn)
    seen = {u.id for u in users}
    for known in directory.users():
        if known.origin == "ldap" and known.id not in seen:
            directory.remove_user(known.id, origin="ldap")
            report.removed.append(known.id)
    for name, ids in sorted(named.items()):
        directory.add_group(name, origin="ldap", display_name=sovra_names[name])
        for change in directory.set_members(name, ids, origin="ldap"):
            if change.action == "member.add":
                report.memberships_added += 1
            else:
                report.memberships_removed += 1
    for group in directory.group_list():
        if group.origin == "ldap" and group.name not in named:
            directory.remove_group(group.name, origin="ldap")
    return report
