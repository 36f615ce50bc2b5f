"""A real slapd for the session and a small indexed site (the etcd runbooks, readable by the
`sre` group only) whose directory LDAP and SCIM feed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.demo_site import QUOTA_RUNBOOK, write_site
from tests.support.slapd import ADMIN_DN, GROUPS, PEOPLE, Slapd, slapd_binary, start_slapd

LDAP_PASSWORD_ENV = "SOVRA_TEST_LDAP_PASSWORD"


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    if slapd_binary() is None:
        pytest.fail("slapd is not installed; `apt-get install slapd ldap-utils` (see .ci/run)")
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()


def ldap_section(url: str) -> str:
    return f"""
[directory]
group_map = {{ "LDAP Admins" = "admins" }}

[directory.ldap]
url = "{url}"
bind_dn = "{ADMIN_DN}"
password_env = "{LDAP_PASSWORD_ENV}"
user_base = "{PEOPLE}"
group_base = "{GROUPS}"
disabled_attribute = "employeeType"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, slapd: Slapd) -> Path:
    """An indexed site (runbooks for `sre`) with `[directory.ldap]` pointing at the slapd."""
    from typer.testing import CliRunner

    from sovra.cli import app

    root = tmp_path_factory.mktemp("idp-site")
    cfg = write_site(root, [QUOTA_RUNBOOK], company=shared_data / "company")
    text = cfg.read_text(encoding="utf-8")
    # The demo config declares only sources; keep the runbooks (access: group:sre).
    cfg.write_text(text + ldap_section(slapd.url), encoding="utf-8")
    result = CliRunner().invoke(
        app, ["--config", str(cfg), "source", "sync", "runbooks"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return root
