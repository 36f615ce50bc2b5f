"""Connectors: one module per source kind behind the small `Connector` interface (docs/architecture.md)."""

from __future__ import annotations

from sovra.config import Config, FolderSource, GitSource, RecordsSource, SourceConfig, SqlSource
from sovra.sources.base import (
    Connector,
    DocumentError,
    DocumentNotFound,
    DocumentTooLarge,
    EmptyDocument,
    MalformedDocument,
    SourceError,
    SourceUnavailable,
    UnsupportedFormat,
)
from sovra.sources.folder import FolderConnector
from sovra.sources.labels import Labels, glob_match, resolve_labels
from sovra.sources.records import RecordsConnector


def connector_for(source: SourceConfig, config: Config) -> Connector:
    """The connector for one configured source; paths resolve against the config's folder,
    a git source keeps its listing (and a remote's mirror) under `<home>/sources/<name>`."""
    if isinstance(source, FolderSource):
        return FolderConnector(source, config.resolve(source.path), config.scale)
    if isinstance(source, RecordsSource):
        return RecordsConnector(source, config.resolve(source.path), config.scale)
    if isinstance(source, SqlSource):
        from sovra.sources.sql import SqlConnector  # SQLAlchemy only when a database is used

        return SqlConnector(source, config.scale, base_dir=config.base_dir)
    if isinstance(source, GitSource):
        from sovra.sources.git import GitConnector  # libgit2 only when a repository is used

        repo = config.resolve(source.path) if source.path is not None else None
        cache = config.home / "sources" / source.name
        return GitConnector(source, repo, config.scale, cache_dir=cache)
    raise SourceError(f"source {source.name!r}: unsupported kind {source.kind!r}")


__all__ = [
    "Connector",
    "DocumentError",
    "DocumentNotFound",
    "DocumentTooLarge",
    "EmptyDocument",
    "FolderConnector",
    "Labels",
    "MalformedDocument",
    "RecordsConnector",
    "SourceError",
    "SourceUnavailable",
    "UnsupportedFormat",
    "connector_for",
    "glob_match",
    "resolve_labels",
]
