"""Opens the data directory and wires the components together — the only module that does.

Everything stateful lives under `config.home` (default `./sovra-data`, or `SOVRA_HOME`):
`directory.json` (users/groups), `index/` (search index), `state.db` (sync state).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sovra.ingest import ProgressCallback, StateStore, SyncReport

from sovra.answer import Answerer, AnswerEvent, AnswerSettings
from sovra.answer.routing import config_choice
from sovra.config import Config, SourceConfig
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
        self._state: StateStore | None = None

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

    @property
    def state(self) -> StateStore:
        if self._state is None:
            from sovra.ingest import StateStore

            self._state = StateStore(self.home / "state.db")
        return self._state

    def sync(
        self,
        source: SourceConfig,
        progress: ProgressCallback | None = None,
        *,
        bm25_only: bool = False,
    ) -> SyncReport:
        """Bring the index in line with one configured source (incremental, resumable)."""
        from sovra.ingest import sync_source
        from sovra.sources import connector_for

        connector = connector_for(source, self.config)
        embedder = None if bm25_only else self.embedder
        return sync_source(connector, source.name, self.index, embedder, self.state, progress)

    def remove_source_data(self, name: str) -> int:
        """Delete every indexed document of a source and its sync state; returns chunks removed."""
        prefix = name + ":"
        ids = [d for d in self.index.document_ids() if d.startswith(prefix)]
        removed = self.index.delete_documents(ids)
        self.state.forget_source(name)
        return removed

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

    def answerer(self) -> Answerer:
        a = self.config.answer
        settings = AnswerSettings(k=a.k, max_answer_tokens=a.max_answer_tokens)
        settings = replace(settings, extractive=replace(settings.extractive, min_score=a.min_score))
        return Answerer(
            self.searcher(), self.embedder, config_choice(self.config, self.home), settings
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

    def ask(
        self,
        question: str,
        user_id: str,
        *,
        endpoint: str | None = None,
        extractive: bool = False,
    ) -> Iterator[AnswerEvent]:
        """Stream an answer for `user_id` (text deltas, then the final Answer)."""
        principal = self.principal(user_id)
        flt = self.filter_for(principal)
        return self.answerer().stream(question, flt, endpoint=endpoint, extractive=extractive)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._state is not None and hasattr(self._state, "close"):
            self._state.close()
            self._state = None
