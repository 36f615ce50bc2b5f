"""A connector synced into the real embedded index (BM25 only) and searched as a principal:
what a user would find after `sovra source sync`, without loading a model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sovra.domain import Chunk, Principal, SearchFilter
from sovra.index import open_index
from sovra.ingest import StateStore, SyncReport, sync_source
from sovra.models.base import Vectors
from sovra.search import Searcher
from sovra.sources import Connector

DIM = 8


class NoVectors:
    """The searcher's embedder in text mode: never asked for a vector."""

    name = "none"
    dimension = DIM
    languages = frozenset({"en"})

    def embed(self, texts: Iterable[str]) -> Vectors:
        return np.zeros((len(list(texts)), DIM), dtype=np.float32)


class Synced:
    def __init__(self, tmp_path: Path, connector: Connector) -> None:
        self.index = open_index(tmp_path / "index", dimension=DIM)
        self.state = StateStore(tmp_path / "state.db")
        self.connector = connector

    def sync(self) -> SyncReport:
        return sync_source(self.connector, None, self.index, None, self.state)

    def search(self, query: str, groups: Iterable[str] = (), k: int = 50) -> list[Chunk]:
        principal = Principal("tester", frozenset(groups))
        result = Searcher(self.index, NoVectors()).search(  # type: ignore[arg-type]
            query, SearchFilter.for_principal(principal), k=k, mode="text"
        )
        return [h.chunk for h in result.hits]

    def documents(self, query: str, groups: Iterable[str] = ()) -> set[str]:
        return {c.document_id for c in self.search(query, groups)}

    def close(self) -> None:
        self.state.close()
