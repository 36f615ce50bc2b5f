"""Git connector: the files at the head of one branch, parsed like the folder source's.

Read with pygit2 (libgit2; GPLv2 with the linking exception, so linking it does not make sovra
GPL) — never by running `git` and parsing its output. A local repository (work tree or bare)
is read in place; a remote URL is mirrored into the data directory and fetched (forced) on
every listing, so a force-push replaces what was there.

External id = the path at head; version = the blob id, the parser version and the labels. The
listing is incremental: the connector remembers the last listed commit and its
path → blob table (in `cache_dir`, else in memory) and applies the tree diff from that commit
to the new head, so an unchanged subtree is never walked. When the remembered commit is gone
(history rewritten and collected) it walks the head tree once. Either way the listing is the
head's, so the pipeline's usual diff deletes what left and re-indexes what changed.

Each document records the head commit it was read at; citations are
`<repo>@<commit>:<path>#L<line>`. A file unchanged since an older sync keeps the commit it was
read at, which holds the same blob. Access: the source and its path rules, narrowed by the
CODEOWNERS owners of the file when `codeowners` maps them (pushing a CODEOWNERS edit can
only ever narrow who reads a file), then by front matter as in the folder source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2

from sovra.config import GitSource
from sovra.domain import ClassificationScale, Document, DocumentRef, content_hash
from sovra.sources.base import (
    LABELS_REFUSED,
    LINE_BASE,
    DocumentNotFound,
    DocumentTooLarge,
    EmptyDocument,
    MalformedDocument,
    SourceUnavailable,
    UnsupportedFormat,
    no_text_reason,
)
from sovra.sources.folder import _title_from_path, front_matter_metadata
from sovra.sources.labels import (
    Labels,
    glob_match,
    label_metadata,
    resolve_labels,
    source_labels,
)
from sovra.sources.parse import (
    PARSER_VERSION,
    ArchiveLimits,
    ParseError,
    decode_text,
    format_of,
    parse_bytes,
)

_FILE_MODES = (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE)
_CODEOWNERS_PATHS = ("CODEOWNERS", ".github/CODEOWNERS", "docs/CODEOWNERS", ".gitlab/CODEOWNERS")
_CACHE_FILE = "listing.json"


def codeowners_rules(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """(glob, owners) per CODEOWNERS line in file order; the last match wins (as on GitHub)."""
    rules: list[tuple[str, tuple[str, ...]]] = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        pattern, *owners = line.split()
        anchored = pattern.startswith("/") or "/" in pattern.rstrip("/")
        glob = pattern.strip("/") if pattern != "/" else "**"
        if not anchored:
            glob = "**/" + glob
        rules.append((glob, tuple(owners)))
    return rules


def _owners_of(path: str, rules: list[tuple[str, tuple[str, ...]]]) -> tuple[str, ...] | None:
    found: tuple[str, ...] | None = None
    for glob, owners in rules:
        if glob_match(path, glob) or glob_match(path, glob.rstrip("/") + "/**"):
            found = owners
    return found


class GitConnector:
    """One branch of one repository."""

    def __init__(
        self,
        source: GitSource,
        repo_path: Path | None,
        scale: ClassificationScale | None = None,
        *,
        cache_dir: Path | None = None,
    ) -> None:
        self.source = source
        self.repo_path = repo_path
        self.scale = scale or ClassificationScale()
        self.cache_dir = cache_dir
        self.refused_links: dict[str, str] = {}
        self.walked_full_tree = False
        """Whether the last listing walked the whole head tree (no usable earlier commit)."""
        self._limits = ArchiveLimits(source.max_unpacked_bytes, source.max_archive_entries)
        self._repo: pygit2.Repository | None = None
        self._commit: pygit2.Commit | None = None
        self._listing: dict[str, str] = {}  # path → blob id at self._commit
        self._listed_commit: str | None = None
        self._owners: list[tuple[str, tuple[str, ...]]] = []
        self.repo_name = source.citation_name or source.url or str(repo_path)

    @property
    def name(self) -> str:
        return self.source.name

    # -- repository and head -------------------------------------------------------------

    def _open(self) -> pygit2.Repository:
        src = self.source
        try:
            if src.url is None:
                if self.repo_path is None or not self.repo_path.exists():
                    raise SourceUnavailable(
                        f"source {self.name!r}: repository {self.repo_path} does not exist;"
                        " fix `path` in sovra.toml"
                    )
                return pygit2.Repository(str(self.repo_path))
            if self.cache_dir is None:
                raise SourceUnavailable(f"source {self.name!r}: a remote needs a cache folder")
            mirror = self.cache_dir / "mirror.git"
            if not (mirror / "HEAD").exists():
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                repo = pygit2.init_repository(str(mirror), bare=True)
                repo.remotes.create("origin", src.url)
            else:
                repo = pygit2.Repository(str(mirror))
            ref = f"refs/heads/{src.branch}"
            # Forced: a force-push upstream replaces the mirrored branch, never merges.
            repo.remotes["origin"].fetch([f"+{ref}:{ref}"])
            return repo
        except SourceUnavailable:
            raise
        except (pygit2.GitError, KeyError, ValueError, OSError) as exc:
            where = src.url or str(self.repo_path)
            raise SourceUnavailable(f"source {self.name!r}: cannot read {where}: {exc}") from None

    def _head(self) -> pygit2.Commit:
        repo = self._open()
        self._repo = repo
        ref = repo.references.get(f"refs/heads/{self.source.branch}")
        if ref is None:
            raise SourceUnavailable(
                f"source {self.name!r}: branch {self.source.branch!r} not found; fix `branch`"
            )
        commit = repo.get(ref.resolve().target)
        if not isinstance(commit, pygit2.Commit):
            raise SourceUnavailable(f"source {self.name!r}: {self.source.branch} is no commit")
        return commit

    # -- the path → blob table -----------------------------------------------------------

    def _load_cache(self) -> None:
        if self._listed_commit is not None or self.cache_dir is None:
            return
        try:
            data = json.loads((self.cache_dir / _CACHE_FILE).read_text(encoding="utf-8"))
            self._listed_commit = str(data["commit"])
            self._listing = {str(k): str(v) for k, v in data["blobs"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self._listed_commit, self._listing = None, {}

    def _save_cache(self) -> None:
        if self.cache_dir is None or self._listed_commit is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / (_CACHE_FILE + ".tmp")
        tmp.write_text(json.dumps({"commit": self._listed_commit, "blobs": self._listing}))
        tmp.replace(self.cache_dir / _CACHE_FILE)

    def _walk(self, tree: pygit2.Tree, prefix: str, out: dict[str, str]) -> None:
        for entry in tree:
            path = f"{prefix}{entry.name}"
            if entry.type_str == "tree":
                sub = self._repo_or_fail().get(entry.id)
                if isinstance(sub, pygit2.Tree):
                    self._walk(sub, path + "/", out)
            elif entry.filemode in _FILE_MODES:
                out[path] = str(entry.id)
            elif entry.filemode == pygit2.GIT_FILEMODE_LINK:
                out[path] = "link:" + str(entry.id)

    def _repo_or_fail(self) -> pygit2.Repository:
        if self._repo is None:
            raise SourceUnavailable(f"source {self.name!r}: repository not open")
        return self._repo

    def _update_listing(self, head: pygit2.Commit) -> None:
        self._load_cache()
        repo = self._repo_or_fail()
        old = repo.get(self._listed_commit) if self._listed_commit else None
        self.walked_full_tree = not isinstance(old, pygit2.Commit)
        if not isinstance(old, pygit2.Commit):
            listing: dict[str, str] = {}
            self._walk(head.tree, "", listing)
            self._listing = listing
        elif old.id != head.id:
            diff = old.tree.diff_to_tree(head.tree)
            diff.find_similar()
            for delta in diff.deltas:
                self._listing.pop(delta.old_file.path, None)
                new = delta.new_file
                if delta.status_char() == "D":
                    continue
                if new.mode in _FILE_MODES:
                    self._listing[new.path] = str(new.id)
                elif new.mode == pygit2.GIT_FILEMODE_LINK:
                    self._listing[new.path] = "link:" + str(new.id)
        self._listed_commit = str(head.id)
        self._commit = head
        self._save_cache()

    def _read_codeowners(self, head: pygit2.Commit) -> None:
        self._owners = []
        if not self.source.codeowners:
            return
        for path in _CODEOWNERS_PATHS:
            blob_id = self._listing.get(path)
            if blob_id and not blob_id.startswith("link:"):
                blob = self._repo_or_fail().get(blob_id)
                if isinstance(blob, pygit2.Blob) and blob.size <= 1_000_000:
                    self._owners = codeowners_rules(decode_text(blob.data))
                return

    # -- labels and listing --------------------------------------------------------------

    def _wanted(self, path: str) -> bool:
        if any(p.startswith(".") for p in path.split("/")):
            return False
        if not any(glob_match(path, p) for p in self.source.include):
            return False
        return not any(glob_match(path, p) for p in self.source.exclude)

    def _config_labels(self, path: str) -> Labels:
        src = self.source
        overrides: dict[str, Any] | None = None
        owners = _owners_of(path, self._owners) if self._owners else None
        if owners is not None:
            mapped = [a for o in owners for a in src.codeowners.get(o, ())]
            if mapped:
                overrides = {"access": list(dict.fromkeys(mapped))}
        # CODEOWNERS is written by whoever pushes: it may only narrow (trusted=False).
        return source_labels(src, path, self.scale, overrides)

    def _labels(self, path: str, front_matter: dict[str, Any] | None) -> Labels:
        base = self._config_labels(path)
        if not front_matter:
            return base
        narrowed = resolve_labels(
            path=path,
            access=base.access,
            classification=base.classification,
            residency=base.residency,
            rules=(),
            scale=self.scale,
            overrides=front_matter,
            trusted=False,
        )
        return Labels(
            access=narrowed.access,
            classification=narrowed.classification,
            residency=narrowed.residency,
            tags=base.tags,
            warnings=base.warnings + narrowed.warnings,
            refused=base.refused + narrowed.refused,
        )

    def _version(self, path: str, blob_id: str) -> str:
        fp = self._config_labels(path).fingerprint()
        return content_hash(f"{PARSER_VERSION}\x1fgit\x1f{blob_id}\x1f{fp}")

    def list(self) -> Iterator[DocumentRef]:
        head = self._head()
        self._update_listing(head)
        self._read_codeowners(head)
        self.refused_links = {}
        refs: list[DocumentRef] = []
        for path in sorted(self._listing):
            if not self._wanted(path):
                continue
            blob_id = self._listing[path]
            if blob_id.startswith("link:"):
                self.refused_links[path] = "symbolic link in the repository; links are not read"
                continue
            refs.append(DocumentRef(path, self._version(path, blob_id)))
        yield from refs

    # -- fetching ------------------------------------------------------------------------

    def _ensure_listed(self) -> None:
        if self._commit is None:
            for _ in self.list():
                pass

    def fetch(self, external_id: str) -> Document:
        self._ensure_listed()
        blob_id = self._listing.get(external_id)
        if blob_id is None or blob_id.startswith("link:") or not self._wanted(external_id):
            raise DocumentNotFound(external_id, f"not a file at {self.source.branch}")
        repo = self._repo_or_fail()
        _, size = repo.odb.read_header(blob_id)
        limit = self.source.max_file_bytes
        if size > limit:
            raise DocumentTooLarge(external_id, f"{size} bytes is above max_file_bytes={limit}")
        blob = repo.get(blob_id)
        if not isinstance(blob, pygit2.Blob):
            raise DocumentNotFound(external_id, "blob missing from the repository")
        data = blob.data
        fmt = format_of(external_id)
        if fmt is None:
            raise UnsupportedFormat(external_id, "no parser for this file extension")
        try:
            parsed = parse_bytes(data, fmt, self._limits)
        except ParseError as exc:
            raise MalformedDocument(external_id, str(exc)) from None
        if not parsed.text.strip():
            raise EmptyDocument(external_id, no_text_reason(parsed.front_matter))
        labels = self._labels(external_id, parsed.front_matter)
        commit = self._commit
        assert commit is not None  # set by _ensure_listed
        metadata = front_matter_metadata(parsed.front_matter)
        metadata["commit"] = str(commit.id)
        metadata["blob"] = blob_id
        if fmt in ("markdown", "text"):
            whole = decode_text(data)
            if whole.endswith(parsed.text):
                metadata[LINE_BASE] = str(whole[: len(whole) - len(parsed.text)].count("\n"))
        metadata.update(label_metadata(labels, LABELS_REFUSED))
        return Document(
            source=self.name,
            external_id=external_id,
            version=self._version(external_id, blob_id),
            title=parsed.title or _title_from_path(external_id),
            uri=f"{self.repo_name}@{commit.id}:{external_id}",
            text=parsed.text,
            access=labels.access,
            classification=labels.classification,
            residency=labels.residency,
            mime_type=parsed.mime_type,
            metadata=metadata,
            modified_at=datetime.fromtimestamp(commit.commit_time, tz=UTC),
        )

    def permissions(self, external_id: str) -> tuple[str, ...]:
        self._ensure_listed()
        if external_id not in self._listing:
            raise DocumentNotFound(external_id, f"not a file at {self.source.branch}")
        front: dict[str, Any] | None = None
        if format_of(external_id) == "markdown":
            front = self._front_matter(external_id)
        return self._labels(external_id, front).access

    def _front_matter(self, external_id: str) -> dict[str, Any]:
        blob = self._repo_or_fail().get(self._listing[external_id])
        if not isinstance(blob, pygit2.Blob):
            return {}
        try:
            return parse_bytes(blob.data, "markdown", self._limits).front_matter
        except ParseError:
            return {"access": 0}  # unreadable front matter: resolve_labels falls to admins
