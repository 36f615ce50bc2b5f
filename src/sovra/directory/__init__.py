"""The directory of users and groups (a database with history) and its identity-provider feeds.

`store` holds users, groups, memberships and their history; `ldap` pulls them from an
LDAP/Active Directory server. The rest of sovra only sees Principals.
"""

from sovra.directory.store import (
    DIRECTORY_FILENAME,
    LEGACY_FILENAME,
    ROLE_GROUPS,
    Change,
    ChangeListener,
    Directory,
    DirectoryConflict,
    DirectoryError,
    Group,
    IdentityMapping,
    UnknownUser,
    User,
)

__all__ = [
    "DIRECTORY_FILENAME",
    "LEGACY_FILENAME",
    "ROLE_GROUPS",
    "Change",
    "ChangeListener",
    "Directory",
    "DirectoryConflict",
    "DirectoryError",
    "Group",
    "IdentityMapping",
    "UnknownUser",
    "User",
]
