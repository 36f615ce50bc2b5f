"""Repositories built in the test with pygit2 (no `git` binary): whole-tree commits."""

from __future__ import annotations

from pathlib import Path

import pygit2

SIG = pygit2.Signature("Tester", "tester@example.org", 1_700_000_000, 0)
Files = dict[str, bytes | tuple[str, int]]
"""path → content, or (link target, GIT_FILEMODE_LINK) for a symbolic link."""


def _tree(repo: pygit2.Repository, files: Files) -> pygit2.Oid:
    here: dict[str, bytes | tuple[str, int]] = {}
    below: dict[str, Files] = {}
    for path, content in files.items():
        head, _, rest = path.partition("/")
        if rest:
            below.setdefault(head, {})[rest] = content
        else:
            here[head] = content
    builder = repo.TreeBuilder()
    for name, content in here.items():
        if isinstance(content, tuple):
            builder.insert(name, repo.create_blob(content[0].encode()), content[1])
        else:
            builder.insert(name, repo.create_blob(content), pygit2.GIT_FILEMODE_BLOB)
    for name, sub in below.items():
        builder.insert(name, _tree(repo, sub), pygit2.GIT_FILEMODE_TREE)
    return builder.write()


class Repo:
    def __init__(self, path: Path, *, bare: bool = False, branch: str = "main") -> None:
        self.repo = pygit2.init_repository(str(path), bare=bare, initial_head=branch)
        self.path = path
        self.branch = branch

    def commit(self, files: Files, message: str = "change", *, root: bool = False) -> str:
        """Commit exactly `files` as the branch's new tree; `root=True` starts new history
        (what a force-push of rewritten history leaves)."""
        ref = f"refs/heads/{self.branch}"
        current = self.repo.references.get(ref)
        parents = [] if root or current is None else [current.target]
        oid = self.repo.create_commit(None, SIG, SIG, message, _tree(self.repo, files), parents)
        self.repo.references.create(ref, oid, force=True)
        return str(oid)
