"""GitConnector on repositories built in the test: changes across commits, renames, deletes,
force-pushes (local and through a file:// remote), line-anchored citations, CODEOWNERS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pygit2
import pytest

from sovra.config import ConfigError, GitSource, parse_config
from sovra.sources import DocumentNotFound, SourceUnavailable
from sovra.sources.git import GitConnector, codeowners_rules
from tests.sources.gitrepo import Repo
from tests.sources.harness import Synced

RUNBOOK = b"""---
owner: sre
---
# Disk full

Check the volume usage first.

## Fix

Rotate the journald logs and expand the filesystem.
"""


def git_source(**kw: Any) -> GitSource:
    return GitSource.model_validate(
        {"name": "repo", "kind": "git", "path": "/unused", "access": ["group:eng"], **kw}
    )


def connector(repo: Repo, tmp_path: Path, **kw: Any) -> GitConnector:
    return GitConnector(
        git_source(citation_name="runbooks", **kw), repo.path, cache_dir=tmp_path / "cache"
    )


def indexed(synced: Synced) -> set[str]:
    return {d.removeprefix("repo:") for d in synced.index.document_ids()}


def test_add_modify_rename_delete_between_commits(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "work")
    repo.commit(
        {
            "disk.md": RUNBOOK,
            "docs/network.md": b"# Network\n\nRestart the VPN gateway when tunnels flap.\n",
            "notes.txt": b"Pager rota lives in the wiki.\n",
            "tool.py": b"print('not indexed')\n",
        }
    )
    conn = connector(repo, tmp_path)
    synced = Synced(tmp_path, conn)
    first = synced.sync()
    assert sorted(first.added) == ["disk.md", "docs/network.md", "notes.txt"]
    assert conn.walked_full_tree

    second = repo.commit(
        {
            "disk.md": RUNBOOK.replace(b"journald logs", b"nginx access logs"),
            "docs/net/network.md": b"# Network\n\nRestart the VPN gateway when tunnels flap.\n",
            "dns.md": b"# DNS\n\nFlush the resolver cache on every node.\n",
            "tool.py": b"print('still not indexed')\n",
        }
    )
    report = synced.sync()
    assert not conn.walked_full_tree  # the tree diff from the last commit, not a rescan
    assert sorted(report.added) == ["dns.md", "docs/net/network.md"]
    assert report.updated == ["disk.md"]
    assert sorted(report.deleted) == ["docs/network.md", "notes.txt"]
    assert indexed(synced) == {"disk.md", "docs/net/network.md", "dns.md"}
    assert synced.documents("nginx access logs", ["eng"]) == {"repo:disk.md"}
    assert synced.documents("journald", ["eng"]) == set()
    assert synced.documents("pager rota", ["eng"]) == set()
    assert synced.documents("vpn gateway", ["other"]) == set()  # source access applies

    hit = synced.search("nginx access logs expand", ["eng"])[0]
    uri, _, line = hit.uri.partition("#L")
    assert uri == f"runbooks@{second}:disk.md"
    source_lines = (RUNBOOK.replace(b"journald logs", b"nginx access logs")).decode().split("\n")
    assert hit.text.split("\n")[0] == source_lines[int(line) - 1]  # the line the chunk starts on
    doc = conn.fetch("disk.md")
    assert doc.metadata["commit"] == second and doc.metadata["owner"] == "sre"
    assert synced.sync().unchanged == 3
    synced.close()


def test_force_push_leaves_the_new_head_only(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "work")
    repo.commit({"a.md": b"# A\n\nalpha runbook\n", "b.md": b"# B\n\nbravo runbook\n"})
    repo.commit({"a.md": b"# A\n\nalpha runbook v2\n", "b.md": b"# B\n\nbravo runbook\n"})
    conn = connector(repo, tmp_path)
    synced = Synced(tmp_path, conn)
    synced.sync()
    rewritten = repo.commit(
        {"b.md": b"# B\n\nbravo rewritten\n", "c/d.md": b"# D\n\ndelta runbook\n"}, root=True
    )
    report = synced.sync()
    assert indexed(synced) == {"b.md", "c/d.md"}
    assert report.deleted == ["a.md"] and report.updated == ["b.md"]
    assert synced.documents("alpha", ["eng"]) == set()
    assert all(f"@{rewritten}:" in c.uri for c in synced.search("runbook rewritten", ["eng"]))

    # The remembered commit vanished (history collected): one full walk, same result.
    cache = tmp_path / "cache" / "listing.json"
    data = json.loads(cache.read_text())
    cache.write_text(json.dumps({**data, "commit": "0" * 40}))
    fresh = GitConnector(conn.source, repo.path, cache_dir=tmp_path / "cache")
    assert {r.external_id for r in fresh.list()} == {"b.md", "c/d.md"} and fresh.walked_full_tree
    synced.close()


def test_file_remote_is_mirrored_and_force_pushes_replace_it(tmp_path: Path) -> None:
    upstream = Repo(tmp_path / "upstream.git", bare=True)
    upstream.commit({"one.md": b"# One\n\nfirst remote runbook\n"})
    source = git_source(path=None, url=(tmp_path / "upstream.git").as_uri())
    conn = GitConnector(source, None, cache_dir=tmp_path / "cache")
    synced = Synced(tmp_path, conn)
    assert synced.sync().added == ["one.md"]
    head = upstream.commit({"two.md": b"# Two\n\nsecond remote runbook\n"}, root=True)
    report = synced.sync()
    assert (report.added, report.deleted) == (["two.md"], ["one.md"])
    assert conn.fetch("two.md").uri == f"{source.url}@{head}:two.md"
    assert (tmp_path / "cache" / "mirror.git" / "HEAD").exists()
    synced.close()


def test_codeowners_narrow_access_and_never_widen(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "work")
    repo.commit(
        {
            ".github/CODEOWNERS": b"* @org/eng\n/sre/ @org/sre\n*.secret.md @org/board\n",
            "sre/oncall.md": b"# Oncall\n\nescalation ladder for sre\n",
            "general.md": b"# General\n\nescalation basics for everyone\n",
            "plans.secret.md": b"# Plans\n\nescalation plans of the board\n",
        }
    )
    conn = connector(
        repo,
        tmp_path,
        access=["group:eng", "group:sre"],
        codeowners={
            "@org/sre": ["group:sre"],
            "@org/eng": ["group:eng", "group:sre"],
            "@org/board": ["group:board"],
        },
    )
    synced = Synced(tmp_path, conn)
    report = synced.sync()
    assert synced.documents("escalation", ["eng"]) == {"repo:general.md"}
    assert synced.documents("escalation", ["sre"]) == {"repo:general.md", "repo:sre/oncall.md"}
    # Mapped to a group the source does not grant: refused, the file falls to admins only.
    assert synced.documents("escalation", ["board"]) == set()
    assert "plans.secret.md" in report.labels_refused
    assert conn.permissions("plans.secret.md") == ("group:admins",)
    synced.close()


def test_codeowners_patterns() -> None:
    rules = codeowners_rules("# c\n*.md @docs\n/build/ @ci # trailing\ndocs @writers\n")
    assert rules == [("**/*.md", ("@docs",)), ("build", ("@ci",)), ("**/docs", ("@writers",))]


def test_links_are_refused_and_missing_branch_is_unavailable(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "work")
    repo.commit({"ok.md": b"# Ok\n\nfine\n", "leak.md": ("/etc/passwd", pygit2.GIT_FILEMODE_LINK)})
    conn = connector(repo, tmp_path)
    assert [r.external_id for r in conn.list()] == ["ok.md"]
    assert "leak.md" in conn.refused_links
    with pytest.raises(DocumentNotFound):
        conn.fetch("leak.md")
    with pytest.raises(SourceUnavailable, match="branch 'release'"):
        list(connector(repo, tmp_path, branch="release").list())
    with pytest.raises(SourceUnavailable, match="does not exist"):
        list(GitConnector(git_source(), tmp_path / "nowhere").list())


def test_config_needs_path_or_url_and_no_inline_password(tmp_path: Path) -> None:
    base = {"name": "g", "kind": "git"}
    with pytest.raises(ConfigError, match="exactly one of `path` or `url`"):
        parse_config({"sources": [base]}, tmp_path)
    with pytest.raises(ConfigError, match=r"sources\.0\.git\.url") as info:
        parse_config({"sources": [{**base, "url": "https://u:tok3n@h.example/r.git"}]}, tmp_path)
    assert "tok3n" not in str(info.value)
