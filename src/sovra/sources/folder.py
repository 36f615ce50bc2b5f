"""Folder connector: every md, txt, html, pdf and docx file under a directory is a document.

External id = path relative to the root (posix). Version = hash of the file's bytes, the
parser version and the effective labels from config — so an edit, a parser upgrade or an
access-rule change each re-index the file, and a `touch` does not.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sovra.config import FolderSource
from sovra.domain import ClassificationScale, Document, DocumentRef, content_hash
from sovra.sources.base import (
    LABELS_REFUSED,
    DocumentNotFound,
    DocumentTooLarge,
    EmptyDocument,
    MalformedDocument,
    SourceUnavailable,
    UnsupportedFormat,
    no_text_reason,
)
from sovra.sources.labels import Labels, glob_match, label_metadata, resolve_labels
from sovra.sources.parse import (
    PARSER_VERSION,
    ArchiveLimits,
    ParsedText,
    ParseError,
    format_of,
    parse_bytes,
)

_MAX_LINK_HOPS = 8
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO named *.md must not hang the sync (regular files ignore it).
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _LinkRefused(Exception):
    """A symbolic link that is not followed; `reason` goes into the sync report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _is_link(name: str, dirfd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class FolderConnector:
    """Reads a directory tree; hidden files and folders and symlinks leaving the root are skipped."""

    def __init__(
        self, source: FolderSource, root: Path, scale: ClassificationScale | None = None
    ) -> None:
        self.source = source
        self.root = root
        self.scale = scale or ClassificationScale()
        self._root_resolved: Path | None = None
        self.refused_links: dict[str, str] = {}
        self._limits = ArchiveLimits(source.max_unpacked_bytes, source.max_archive_entries)
        """Links the last listing did not follow (path → why); the sync report shows them."""

    @property
    def name(self) -> str:
        return self.source.name

    # -- listing -------------------------------------------------------------------------

    def _check_root(self) -> Path:
        if not self.root.exists():
            raise SourceUnavailable(
                f"source {self.name!r}: folder {self.root} does not exist; fix `path` in sovra.toml"
            )
        if not self.root.is_dir():
            raise SourceUnavailable(f"source {self.name!r}: {self.root} is not a folder")
        return self.root.resolve()

    def _wanted(self, rel: str) -> bool:
        if not any(glob_match(rel, p) for p in self.source.include):
            return False
        return not any(glob_match(rel, p) for p in self.source.exclude)

    def paths(self) -> Iterator[str]:
        """Relative posix paths of the files this source covers, in a stable order.

        Walks with directory file descriptors (`os.fwalk`, links never followed), so a folder
        swapped for a link while walking cannot lead outside. A link is kept only when its
        target, resolved one hop at a time from the root, stays inside; every other link is
        recorded in `refused_links` (the sync report shows them).
        """
        root = self._check_root()
        self.refused_links = {}

        def onerror(exc: OSError) -> None:
            # A subfolder we cannot read would otherwise look like deleted documents.
            raise SourceUnavailable(f"source {self.name!r}: cannot read {exc.filename}: {exc}")

        for dirpath, dirnames, filenames, dirfd in os.fwalk(
            root, onerror=onerror, follow_symlinks=False
        ):
            base = Path(dirpath)
            kept: list[str] = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    continue
                if _is_link(d, dirfd):
                    rel = (base / d).relative_to(root).as_posix()
                    self.refused_links[rel] = "symbolic link to a folder; links are not followed"
                    continue
                kept.append(d)
            dirnames[:] = kept
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                rel = (base / fname).relative_to(root).as_posix()
                if not self._wanted(rel):
                    continue
                if _is_link(fname, dirfd):
                    try:
                        os.close(self._open(rel))
                    except _LinkRefused as exc:
                        self.refused_links[rel] = exc.reason
                        continue  # a link out of the source must not widen what is indexed
                    except OSError as exc:
                        self.refused_links[rel] = f"broken symbolic link: {exc.strerror}"
                        continue
                yield rel

    def _path(self, external_id: str) -> Path:
        """The lexical path of an item (for its uri); reading goes through `_open`."""
        parts = external_id.split("/")
        if external_id.startswith("/") or ".." in parts or "" in parts or "." in parts:
            raise DocumentNotFound(external_id, "not a path inside the source folder")
        if self._root_resolved is None:
            self._root_resolved = self.root.resolve()
        return self._root_resolved / external_id

    def _open(self, rel: str) -> int:
        """A read-only fd of `rel`, opened one component at a time from the root with
        O_NOFOLLOW: no folder on the way may be a link, and a link as the last component is
        followed only to a target inside the root (re-opened the same way, a few hops)."""
        parts = rel.split("/")
        for _ in range(_MAX_LINK_HOPS + 1):
            dirfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for i, part in enumerate(parts[:-1]):
                    try:
                        nxt = os.open(part, _DIR_FLAGS, dir_fd=dirfd)
                    except OSError as exc:
                        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, dirfd):
                            where = "/".join(parts[: i + 1])
                            raise _LinkRefused(
                                f"{where} is a symbolic link; folders behind links are not read"
                            ) from None
                        raise
                    os.close(dirfd)
                    dirfd = nxt
                try:
                    return os.open(parts[-1], _FILE_FLAGS, dir_fd=dirfd)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                    target = os.readlink(parts[-1], dir_fd=dirfd)
            finally:
                os.close(dirfd)
            parts = self._link_target(parts[:-1], target)
        raise _LinkRefused("too many levels of symbolic links")

    def _link_target(self, folder: list[str], target: str) -> list[str]:
        """The root-relative parts of a link's target, or _LinkRefused when it leaves."""
        if target.startswith("/"):
            norm = posixpath.normpath(target)
            for prefix in {os.path.abspath(self.root), os.path.realpath(self.root)}:
                if norm.startswith(prefix.rstrip("/") + "/"):
                    rel = norm[len(prefix.rstrip("/")) + 1 :]
                    break
            else:
                raise _LinkRefused(f"symbolic link to {target} leaves the source folder")
        else:
            rel = posixpath.normpath(posixpath.join(*folder, target) if folder else target)
        parts = rel.split("/")
        if rel in (".", "") or parts[0] == ".." or any(p.startswith(".") for p in parts):
            raise _LinkRefused(f"symbolic link to {target} leaves the source folder")
        return parts

    def _config_labels(self, rel: str, front_matter: dict[str, Any] | None = None) -> Labels:
        return resolve_labels(
            path=rel,
            access=self.source.access,
            classification=self.source.classification,
            residency=self.source.residency,
            rules=self.source.rules,
            scale=self.scale,
            overrides=front_matter,
            trusted=self.source.trust_front_matter,
        )

    def _version(self, rel: str, digest: str) -> str:
        fp = self._config_labels(rel).fingerprint()
        return content_hash(f"{PARSER_VERSION}\x1f{digest}\x1f{fp}")

    def list(self) -> Iterator[DocumentRef]:
        for rel in self.paths():
            try:
                fd = self._open(rel)
            except (OSError, _LinkRefused) as exc:
                # fetch() reports the error per document
                yield DocumentRef(rel, self._version(rel, f"unreadable:{getattr(exc, 'errno', 0)}"))
                continue
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    continue  # a FIFO or device named *.md would block or stream forever
                if st.st_size > self.source.max_file_bytes:
                    # Not read at all; the stat-based version still notices a change.
                    digest = f"large:{st.st_size}:{st.st_mtime_ns}"
                else:
                    try:
                        digest = hashlib.sha256(fh.read()).hexdigest()
                    except OSError as exc:
                        digest = f"unreadable:{exc.errno}"
            yield DocumentRef(rel, self._version(rel, digest))

    # -- fetching ------------------------------------------------------------------------

    def _read(self, external_id: str) -> tuple[bytes, os.stat_result]:
        self._path(external_id)  # lexical check first: no absolute paths, no `..`
        limit = self.source.max_file_bytes
        try:
            fd = self._open(external_id)
        except _LinkRefused as exc:
            raise DocumentNotFound(external_id, exc.reason) from None
        except (FileNotFoundError, NotADirectoryError):
            raise DocumentNotFound(external_id, "file disappeared") from None
        except OSError as exc:
            raise MalformedDocument(external_id, f"cannot read file: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise DocumentNotFound(external_id, "is a folder")
            if not stat.S_ISREG(st.st_mode):
                raise MalformedDocument(external_id, "not a regular file")
            if st.st_size > limit:
                raise DocumentTooLarge(
                    external_id, f"{st.st_size} bytes is above max_file_bytes={limit}"
                )
            try:
                data = fh.read(limit + 1)  # a file growing after fstat stays bounded
            except OSError as exc:
                raise MalformedDocument(external_id, f"cannot read file: {exc.strerror}") from None
        if len(data) > limit:
            raise DocumentTooLarge(external_id, f"more than max_file_bytes={limit} bytes")
        return data, st

    def _parse(self, external_id: str, data: bytes) -> ParsedText:
        fmt = format_of(external_id)
        if fmt is None:
            raise UnsupportedFormat(external_id, "no parser for this file extension")
        try:
            return parse_bytes(data, fmt, self._limits)
        except ParseError as exc:
            raise MalformedDocument(external_id, str(exc)) from None

    def fetch(self, external_id: str) -> Document:
        full = self._path(external_id)
        data, st = self._read(external_id)
        parsed = self._parse(external_id, data)
        if not parsed.text.strip():
            raise EmptyDocument(external_id, no_text_reason(parsed.front_matter))
        labels = self._config_labels(external_id, parsed.front_matter)
        metadata = front_matter_metadata(parsed.front_matter)
        metadata.update(label_metadata(labels, LABELS_REFUSED))
        digest = hashlib.sha256(data).hexdigest()
        return Document(
            source=self.name,
            external_id=external_id,
            version=self._version(external_id, digest),
            title=parsed.title or _title_from_path(external_id),
            uri=str(full),
            text=parsed.text,
            access=labels.access,
            classification=labels.classification,
            residency=labels.residency,
            mime_type=parsed.mime_type,
            metadata=metadata,
            modified_at=datetime.fromtimestamp(st.st_mtime, tz=UTC),
        )

    def permissions(self, external_id: str) -> tuple[str, ...]:
        front: dict[str, Any] | None = None
        if format_of(external_id) == "markdown":
            data, _ = self._read(external_id)
            front = self._parse(external_id, data).front_matter
        return self._config_labels(external_id, front).access


def front_matter_metadata(front_matter: dict[str, Any]) -> dict[str, str]:
    """The scalar front matter keys that are not labels or the title, as document metadata."""
    return {
        k: str(v)
        for k, v in front_matter.items()
        if k not in ("access", "classification", "residency", "title")
        and isinstance(v, str | int | float | bool)
    }


def _title_from_path(rel: str) -> str:
    path = Path(rel)
    stem = path.stem
    if stem.lower() in ("index", "readme", "_index") and path.parent.name:
        stem = path.parent.name  # index.md says nothing; its folder names the topic
    words = stem.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else rel
