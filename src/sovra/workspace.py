"""Opens the data directory and wires the components together — the only module that does.

Everything stateful lives under `config.home` (default `./sovra-data`, or `SOVRA_HOME`):
`directory.json` (users/groups), `index/` (search index), `state.db` (sync state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sovra.config import Config
from sovra.directory import Directory
from sovra.domain import Principal, SearchFilter
from sovra.index.base import Index
from sovra.models.base import Embedder
from sovra.models.embedding import SentenceTransformerEmbedder
from sovra.search import FusionSettings, Searcher, SearchResult
from sovra.search.hybrid import Mode


def directory_for(config: Config) -> Directory:
    config.home.mkdir(parents=True, exist_ok=True)
    return Directory.in_home(config.home)


def embedder_for(config: Config) -> SentenceTransformerEmbedder:
    emb = config.embedding
    return SentenceTransformerEmbedder(
        config.resolve(emb.path) if emb.path else None,
        name=emb.name,
        languages=emb.languages,
        batch_size=emb.batch_size,
        threads=emb.threads,
    )


class Workspace:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.home: Path = config.home
        self.directory = Directory.in_home(self.home)
        self._embedder: SentenceTransformerEmbedder | None = None
        self._index: Index | None = None
        self._state: Any = None

    @classmethod
    def open(cls, config: Config) -> Workspace:
        config.home.mkdir(parents=True, exist_ok=True)
        return cls(config)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = embedder_for(self.config)
        return self._embedder

    @property
    def index(self) -> Index:
        if self._index is None:
            from sovra.index import open_index

            self._index = open_index(
                self.home / "index",
                backend=self.config.index.backend,
                dimension=self.embedder.dimension,
            )
        return self._index

    def principal(self, user_id: str) -> Principal:
        return self.directory.principal(user_id)

    def filter_for(
        self,
        principal: Principal,
        sources: Sequence[str] | None = None,
        languages: Sequence[str] | None = None,
    ) -> SearchFilter:
        for name in sources or []:
            self.config.source(name)  # unknown source → clear error
        return SearchFilter.for_principal(
            principal,
            region=self.config.workspace.region,
            sources=frozenset(sources) if sources else None,
            languages=frozenset(languages) if languages else None,
            classification_labels=self.config.workspace.classifications,
        )

    def searcher(self) -> Searcher:
        s = self.config.search
        return Searcher(
            self.index,
            self.embedder,
            FusionSettings(fusion=s.fusion, rrf_k=s.rrf_k, candidates=s.candidates),
        )

    def search(
        self,
        query: str,
        user_id: str,
        *,
        k: int = 10,
        mode: Mode = "hybrid",
        sources: Sequence[str] | None = None,
        language: str | None = None,
    ) -> SearchResult:
        # Resolve the principal on every query so a revoked membership applies immediately.
        principal = self.principal(user_id)
        flt = self.filter_for(principal, sources)
        return self.searcher().search(query, flt, k=k, mode=mode, language=language)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._state is not None and hasattr(self._state, "close"):
            self._state.close()
            self._state = None
