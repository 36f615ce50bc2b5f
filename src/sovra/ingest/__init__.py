"""Ingestion: parse → detect language → chunk → embed → index, with incremental, crash-safe sync."""

from __future__ import annotations

from sovra.ingest.chunk import Span, chunk_document, embedding_text, estimate_tokens, split_text
from sovra.ingest.language import SUPPORTED, detect_language, detect_languages
from sovra.ingest.pipeline import ProgressCallback, SyncOptions, SyncReport, sync_source
from sovra.ingest.state import DocumentState, StateError, StateStore, StoredVersion
from sovra.sources.parse import ParsedText, ParseError, format_of, parse_bytes

__all__ = [
    "SUPPORTED",
    "DocumentState",
    "ParseError",
    "ParsedText",
    "ProgressCallback",
    "Span",
    "StateError",
    "StateStore",
    "StoredVersion",
    "SyncOptions",
    "SyncReport",
    "chunk_document",
    "detect_language",
    "detect_languages",
    "embedding_text",
    "estimate_tokens",
    "format_of",
    "parse_bytes",
    "split_text",
    "sync_source",
]
