"""Connectors: one module per source kind behind the small `Connector` interface (docs/architecture.md)."""

from __future__ import annotations

from sovra.config import Config, FolderSource, RecordsSource, SourceConfig
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
    """The connector for one configured source; paths resolve against the config's folder."""
    path = config.resolve(source.path)
    if isinstance(source, FolderSource):
        return FolderConnector(source, path, config.scale)
    if isinstance(source, RecordsSource):
        return RecordsConnector(source, path, config.scale)
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
