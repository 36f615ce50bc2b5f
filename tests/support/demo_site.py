"""The demo site that the CLI end-to-end tests, the server tests and the load benchmark run on.

A site is a folder with part of the sample company (../shared/data/company, read-only, so it is
copied), a sovra.toml with the demo's permission rules (handbook for staff with the people-team
pages for group:people only, runbooks for sre, tickets for it-support) and, once synced, the demo
directory's users. One builder, so the permission rules cannot drift apart between the suites;
each caller picks how much of the company it copies (a preset below or its own list).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
COMPANY = SHARED_DATA / "company"

ETCD_RUNBOOKS = "runbooks/alerts/cluster-etcd-operator"
QUOTA_RUNBOOK = f"{ETCD_RUNBOOKS}/etcdDatabaseQuotaLowSpace.md"
BACKGROUND_CHECK = "handbook/content/departments/people-talent/background-check-policy.md"
DEMO_DAY = "handbook/content/departments/engineering/demo-day.md"
CROSS_TEAM = "handbook/content/departments/engineering/cross-team-collab.md"
HANDBOOK_INDEX = "handbook/content/index.md"

# Presets, smallest first. Each holds a runbook only sre may read, a people-team page only dana
# may read and pages every staff member may read, so the permission tests have all three cases.
SERVER_FILES = (
    QUOTA_RUNBOOK,
    f"{ETCD_RUNBOOKS}/etcdMembersDown.md",
    f"{ETCD_RUNBOOKS}/etcdNoLeader.md",
    BACKGROUND_CHECK,
    DEMO_DAY,
    HANDBOOK_INDEX,
)
CLI_FILES = (
    QUOTA_RUNBOOK,
    f"{ETCD_RUNBOOKS}/etcdMembersDown.md",
    f"{ETCD_RUNBOOKS}/etcdNoLeader.md",
    f"{ETCD_RUNBOOKS}/etcdHighFsyncDurations.md",
    BACKGROUND_CHECK,
    "handbook/content/departments/people-talent/e-verify.md",
    DEMO_DAY,
    CROSS_TEAM,
    HANDBOOK_INDEX,
)
# A folder is copied whole: the load benchmark searches across every etcd-operator runbook.
LOAD_FILES = (ETCD_RUNBOOKS, BACKGROUND_CHECK, DEMO_DAY, CROSS_TEAM, HANDBOOK_INDEX)

DEMO_USERS = ("alice", "bob", "carol", "dana", "root")
"""The users `sovra init --demo-directory` creates (alice sre, bob it-support, carol staff only,
dana people, root admins)."""

WORKSPACE = """
[workspace]
home = "data"
region = "eu-de"
"""

HANDBOOK_SOURCE = """
[[sources]]
name = "handbook"
kind = "folder"
path = "company/handbook"
access = ["group:staff"]
classification = "internal"
residency = "eu"

  [[sources.rules]]
  match = "content/departments/people-talent/**"
  access = ["group:people"]
  classification = "confidential"
"""

RUNBOOKS_SOURCE = """
[[sources]]
name = "runbooks"
kind = "folder"
path = "company/runbooks"
access = ["group:sre"]
classification = "internal"
residency = "eu"
"""

TICKETS_SOURCE = """
[[sources]]
name = "tickets"
kind = "records"
path = "company/tickets.csv"
title_field = "title"
text_fields = ["body"]
metadata_fields = ["category", "urgency"]
access = ["group:it-support"]
classification = "confidential"
residency = "eu"
"""


def demo_config(*, tickets: bool = False) -> str:
    """The site's sovra.toml: the handbook and the runbooks, and the tickets when asked."""
    return WORKSPACE + HANDBOOK_SOURCE + RUNBOOKS_SOURCE + (TICKETS_SOURCE if tickets else "")


def copy_company(dest: Path, files: Iterable[str], company: Path = COMPANY) -> None:
    """Copy `files` (paths relative to the company folder; a folder is copied whole) to dest."""
    for rel in files:
        src = company / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel)
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)


def write_site(
    root: Path, files: Iterable[str], *, tickets: int = 0, company: Path = COMPANY
) -> Path:
    """Lay out a demo site under root: `files` under company/, with `tickets` > 0 the first that
    many lines of the helpdesk CSV (header included) as the tickets source; returns sovra.toml."""
    copy_company(root / "company", files, company)
    if tickets:
        lines = (company / "tickets/it_tickets.csv").read_text(encoding="utf-8").splitlines()
        (root / "company/tickets.csv").write_text(
            "\n".join(lines[:tickets]) + "\n", encoding="utf-8"
        )
    cfg = root / "sovra.toml"
    cfg.write_text(demo_config(tickets=tickets > 0), encoding="utf-8")
    return cfg


def sync_site(cfg: Path) -> None:
    """`sovra init --demo-directory` then `sovra source sync --all`, through the real CLI."""
    # Imported here: the load benchmark uses only the file layout and runs the CLI as a command.
    from typer.testing import CliRunner

    from sovra.cli import app

    runner = CliRunner()
    for args in (["init", "--demo-directory"], ["source", "sync", "--all"]):
        result = runner.invoke(app, ["--config", str(cfg), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
