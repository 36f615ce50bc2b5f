"""A real OpenLDAP `slapd` (Debian's) on loopback for the directory sync tests.

`start_slapd` writes a slapd.conf (mdb backend, core/cosine/inetorgperson schemas) into a temp
dir, starts `slapd -d 0` in the foreground on a free 127.0.0.1 port, waits (bounded) until a
bind works, and seeds the tree with ldap3 adds. `Slapd.stop()` ends it (by its own pid).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "slapd-admin-password"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Slapd:
    url: str
    process: subprocess.Popen[bytes]
    root: Path

    def connection(self) -> ldap3.Connection:
        return ldap3.Connection(
            ldap3.Server(self.url, get_info=ldap3.NONE),
            ADMIN_DN,
            ADMIN_PASSWORD,
            auto_bind=True,
            receive_timeout=5,
        )

    def add_user(self, uid: str, name: str, *, disabled: bool = False) -> str:
        dn = f"uid={uid},{PEOPLE}"
        attrs = {"uid": uid, "cn": name, "sn": name.split()[-1]}
        if disabled:
            attrs["employeeType"] = "disabled"
        self._add(dn, ["inetOrgPerson"], attrs)
        return dn

    def add_group(self, cn: str, members: list[str]) -> str:
        dn = f"cn={cn},{GROUPS}"
        self._add(dn, ["groupOfNames"], {"cn": cn, "member": members or [ADMIN_DN]})
        return dn

    def set_members(self, group_dn: str, members: list[str]) -> None:
        with self.connection() as conn:
            # groupOfNames needs one member: the admin entry stands in for "nobody".
            conn.modify(group_dn, {"member": [(ldap3.MODIFY_REPLACE, members or [ADMIN_DN])]})
            assert conn.result["result"] == 0, conn.result

    def set_disabled(self, uid: str, disabled: bool) -> None:
        with self.connection() as conn:
            change = (
                [(ldap3.MODIFY_REPLACE, ["disabled"])] if disabled else [(ldap3.MODIFY_DELETE, [])]
            )
            conn.modify(f"uid={uid},{PEOPLE}", {"employeeType": change})
            assert conn.result["result"] == 0, conn.result

    def delete(self, dn: str) -> None:
        with self.connection() as conn:
            conn.delete(dn)
            assert conn.result["result"] == 0, conn.result

    def _add(self, dn: str, classes: list[str], attrs: dict[str, object]) -> None:
        with self.connection() as conn:
            conn.add(dn, classes, attrs)
            assert conn.result["result"] == 0, conn.result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def slapd_binary() -> str | None:
    return shutil.which("slapd") or (
        "/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists() else None
    )


def start_slapd(root: Path) -> Slapd:
    binary = slapd_binary()
    if binary is None:
        raise RuntimeError("slapd is not installed (Debian package `slapd`)")
    db = root / "db"
    db.mkdir(parents=True)
    conf = root / "slapd.conf"
    conf.write_text(
        "\n".join(
            [
                "include /etc/ldap/schema/core.schema",
                "include /etc/ldap/schema/cosine.schema",
                "include /etc/ldap/schema/inetorgperson.schema",
                f"pidfile {root / 'slapd.pid'}",
                f"argsfile {root / 'slapd.args'}",
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                "database mdb",
                "maxsize 10485760",
                f'suffix "{SUFFIX}"',
                f'rootdn "{ADMIN_DN}"',
                f"rootpw {ADMIN_PASSWORD}",
                f"directory {db}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    port = free_port()
    url = f"ldap://127.0.0.1:{port}/"
    log = (root / "slapd.log").open("wb")
    process = subprocess.Popen(
        [binary, "-f", str(conf), "-h", url, "-d", "0"], stdout=log, stderr=subprocess.STDOUT
    )
    server = Slapd(url=url.rstrip("/"), process=process, root=root)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"slapd exited with {process.returncode}: "
                + (root / "slapd.log").read_text(errors="replace")[-2000:]
            )
        try:
            server.connection().unbind()
            break
        except ldap3.core.exceptions.LDAPException:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"slapd did not answer on {url} within {START_TIMEOUT_S} s"
                ) from None
            time.sleep(0.1)
    server._add(SUFFIX, ["dcObject", "organization"], {"dc": "example", "o": "Example"})
    server._add(PEOPLE, ["organizationalUnit"], {"ou": "people"})
    server._add(GROUPS, ["organizationalUnit"], {"ou": "groups"})
    return server
