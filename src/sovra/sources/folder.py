"""Folder connector: every md, txt, html, pdf and docx file under a directory is a document.

External id = path relative to the root (posix). Version = hash of the file's bytes, the
parser version and the effective labels from config — so an edit, a parser upgrade or an
access-rule change each re-index the file, and a `touch` does not.
"""

from __future__ import annotations

import hashlib
import os
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
)
from sovra.sources.labels import Labels, glob_match, resolve_labels
from sovra.sources.parse import PARSER_VERSION, ParsedText, ParseError, format_of, parse_bytes


class FolderConnector:
    """Reads a directory tree; hidden files and folders and symlinks leaving the root are skipped."""

    def __init__(
        self, source: FolderSource, root: Path, scale: ClassificationScale | None = None
    ) -> None:
        self.source = source
        self.root = root
        self.scale = scale or ClassificationScale()
        self._root_resolved: Path | None = None

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
        """Relative posix paths of the files this source covers, in a stable order."""
        root = self._check_root()

        def onerror(exc: OSError) -> None:
            # A subfolder we cannot read would otherwise look like deleted documents.
            raise SourceUnavailable(f"source {self.name!r}: cannot read {exc.filename}: {exc}")

        for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            base = Path(dirpath)
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                full = base / fname
                rel = full.relative_to(root).as_posix()
                if not self._wanted(rel):
                    continue
                if full.is_symlink():
                    try:
                        full.resolve(strict=True).relative_to(root)
                    except (OSError, ValueError):
                        continue  # a link out of the source must not widen what is indexed
                yield rel

    def _path(self, external_id: str) -> Path:
        # Lexical check first (cheap, no syscalls); only a symlink needs resolving, and
        # list() already dropped links that leave the root.
        parts = external_id.split("/")
        if external_id.startswith("/") or ".." in parts or "" in parts:
            raise DocumentNotFound(external_id, "not a path inside the source folder")
        if self._root_resolved is None:
            self._root_resolved = self.root.resolve()
        full = self._root_resolved / external_id
        if full.is_symlink():
            try:
                full.resolve(strict=True).relative_to(self._root_resolved)
            except (OSError, ValueError):
                raise DocumentNotFound(external_id, "link leaves the source folder") from None
        return full

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
            full = self.root / rel
            try:
                st = full.stat()
                if not stat.S_ISREG(st.st_mode):
                    continue  # a FIFO or device named *.md would block or stream forever
                if st.st_size > self.source.max_file_bytes:
                    # Not read at all; the stat-based version still notices a change.
                    digest = f"large:{st.st_size}:{st.st_mtime_ns}"
                else:
                    digest = hashlib.sha256(full.read_bytes()).hexdigest()
            except OSError as exc:
                digest = f"unreadable:{exc.errno}"  # fetch() reports the error per document
            yield DocumentRef(rel, self._version(rel, digest))

    # -- fetching ------------------------------------------------------------------------

    def _read(self, external_id: str, full: Path | None = None) -> tuple[bytes, os.stat_result]:
        full = full or self._path(external_id)
        try:
            st = full.stat()
            if not stat.S_ISREG(st.st_mode):
                raise MalformedDocument(external_id, "not a regular file")
            if st.st_size > self.source.max_file_bytes:
                raise DocumentTooLarge(
                    external_id,
                    f"{st.st_size} bytes is above max_file_bytes={self.source.max_file_bytes}",
                )
            return full.read_bytes(), st
        except FileNotFoundError:
            raise DocumentNotFound(external_id, "file disappeared") from None
        except IsADirectoryError:
            raise DocumentNotFound(external_id, "is a folder") from None
        except OSError as exc:
            raise MalformedDocument(external_id, f"cannot read file: {exc.strerror}") from None

    def _parse(self, external_id: str, data: bytes) -> ParsedText:
        fmt = format_of(external_id)
        if fmt is None:
            raise UnsupportedFormat(external_id, "no parser for this file extension")
        try:
            return parse_bytes(data, fmt)
        except ParseError as exc:
            raise MalformedDocument(external_id, str(exc)) from None

    def fetch(self, external_id: str) -> Document:
        full = self._path(external_id)
        data, st = self._read(external_id, full)
        parsed = self._parse(external_id, data)
        if not parsed.text.strip():
            raise EmptyDocument(external_id, "no text in file")
        labels = self._config_labels(external_id, parsed.front_matter)
        metadata = {
            k: str(v)
            for k, v in parsed.front_matter.items()
            if k not in ("access", "classification", "residency", "title")
            and isinstance(v, str | int | float | bool)
        }
        if labels.tags:
            metadata["tags"] = ",".join(labels.tags)
        if labels.warnings:
            metadata["label_warnings"] = "; ".join(labels.warnings)
        if labels.refused:
            metadata[LABELS_REFUSED] = "; ".join(labels.refused)
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


def _title_from_path(rel: str) -> str:
    path = Path(rel)
    stem = path.stem
    if stem.lower() in ("index", "readme", "_index") and path.parent.name:
        stem = path.parent.name  # index.md says nothing; its folder names the topic
    words = stem.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else rel
