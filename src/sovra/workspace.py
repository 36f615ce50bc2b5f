"""Opens the data directory and wires the components together — the only module that does.

Everything stateful lives under `config.home` (default `./sovra-data`, or `SOVRA_HOME`):
`directory.json` (users/groups), `index/` (search index), `state.db` (sync state).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sovra.audit import AuditLog
    from sovra.ingest import ProgressCallback, StateStore, SyncReport

from sovra.answer import Answer, Answerer, AnswerEvent, AnswerSettings
from sovra.answer.routing import config_choice
from sovra.config import Config, ConfigError, SourceConfig
from sovra.directory import Directory, DirectoryError
from sovra.domain import Chunk, DomainError, Principal, SearchFilter, content_hash
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
        self._audit: AuditLog | None = None

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

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            from sovra.audit import open_audit_log

            self._audit = open_audit_log(self.config)
        return self._audit

    def record(
        self,
        user_id: str,
        action: str,
        chunks: Sequence[Chunk],
        *,
        decision: str = "allow",
        outcome: str = "ok",
        endpoint: str | None = None,
        jurisdiction: str | None = None,
        details: dict[str, Any] | None = None,
        personal: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one audit event (chunks by id and content hash) and return its receipt.

        The user id and the query text are personal data: they go in encrypted under the
        user's subject key, so `sovra erase --subject` can shred them without breaking the log.
        """
        from sovra.audit import AuditEvent, ResourceRef

        event = AuditEvent(
            actor=f"user:{user_id}",
            action=action,
            resources=tuple(ResourceRef(id=c.id, hash=content_hash(c.text)) for c in chunks),
            decision=decision,  # type: ignore[arg-type]
            endpoint=endpoint,
            jurisdiction=jurisdiction,
            outcome=outcome,
            request_id=uuid.uuid4().hex,
            details=details or {},
            subject=user_id,
            personal=personal or {},
        )
        receipt: dict[str, Any] = self.audit.append(event).to_dict()
        return receipt

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
        max_classification: str | None = None,
    ) -> SearchFilter:
        for name in sources or []:
            self.config.source(name)  # unknown source → clear error
        rank = None
        if max_classification is not None:
            try:
                rank = self.config.scale.rank(max_classification)
            except DomainError as exc:
                raise ConfigError(f"max_classification: {exc}") from None
        return SearchFilter.for_principal(
            principal,
            region=self.config.workspace.region,
            sources=frozenset(sources) if sources else None,
            languages=frozenset(languages) if languages else None,
            max_classification_rank=rank,
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
        settings = replace(
            settings,
            extractive=replace(
                settings.extractive, min_score=a.min_score, min_score_lexical=a.min_score_lexical
            ),
        )
        return Answerer(
            self.searcher(),
            self.embedder,
            config_choice(self.config, self.home, self._log_decision),
            settings,
        )

    def _log_decision(self, principal: Principal, decision: object, hits: Sequence[Any]) -> None:
        """Every routing decision (allow or refuse) goes to the audit log with its policy ids."""
        from sovra.policy import decision_event

        event = decision_event(
            principal,
            decision,  # type: ignore[arg-type]
            [h.chunk for h in hits],
            request_id=uuid.uuid4().hex,
        )
        self.audit.append(event)

    def search(
        self,
        query: str,
        user_id: str,
        *,
        k: int = 10,
        mode: Mode = "hybrid",
        sources: Sequence[str] | None = None,
        language: str | None = None,
        max_classification: str | None = None,
    ) -> SearchResult:
        # Resolve the principal on every query so a revoked membership applies immediately.
        principal = self._principal_or_log(user_id, "search", query)
        flt = self.filter_for(principal, sources, max_classification=max_classification)
        result = self.searcher().search(query, flt, k=k, mode=mode, language=language)
        self.record_search(principal, query, result, k=k)
        return result

    def record_search(
        self, principal: Principal, query: str, result: SearchResult, *, k: int
    ) -> dict[str, Any]:
        """Log a search (returned chunks by id and hash, the query encrypted) → receipt."""
        return self.record(
            principal.id,
            "search",
            [h.chunk for h in result.hits],
            details={"query_sha256": content_hash(query), "mode": result.mode, "k": k},
            personal={"query": query},
        )

    def _principal_or_log(self, user_id: str, action: str, text: str) -> Principal:
        """Resolve the user; an unknown user is denied, and the denial is logged."""
        try:
            return self.principal(user_id)
        except DirectoryError:
            self.record(
                user_id,
                action,
                [],
                decision="deny",
                outcome="unknown_principal",
                details={"query_sha256": content_hash(text)},
            )
            raise

    def ask(
        self,
        question: str,
        user_id: str,
        *,
        endpoint: str | None = None,
        extractive: bool = False,
        sources: Sequence[str] | None = None,
        max_classification: str | None = None,
    ) -> Iterator[AnswerEvent]:
        """Stream an answer for `user_id` (text deltas, then the final Answer), optionally from
        fewer documents than the user may read (some sources, up to a classification)."""
        principal = self._principal_or_log(user_id, "ask", question)
        flt = self.filter_for(principal, sources, max_classification=max_classification)
        for event in self.answerer().stream(
            question, flt, principal=principal, endpoint=endpoint, extractive=extractive
        ):
            if event.answer is not None:
                self.finish_answer(principal, question, event.answer)
            yield event

    def finish_answer(self, principal: Principal, question: str, answer: Answer) -> None:
        """Account a generated answer's usage, log the answer and attach its receipt."""
        if answer.generation == "generative":
            self._record_usage(principal, answer)
        used = [self._cited_chunk(c.chunk_id) for c in answer.citations]
        answer.receipt = self.record(
            principal.id,
            "ask",
            [c for c in used if c is not None],
            outcome="answered" if answer.found else "not_found",
            endpoint=answer.endpoint,
            jurisdiction=answer.jurisdiction,
            details={
                "question_sha256": content_hash(question),
                "answer_sha256": content_hash(answer.text),
                "generation": answer.generation,
                "model": answer.model,
                "hosting": answer.hosting,
                "flags": list(answer.flags),
                "tokens_in": answer.tokens_in,
                "tokens_out": answer.tokens_out,
            },
            personal={"question": question},
        )

    def _record_usage(self, principal: Principal, answer: Answer) -> None:
        from sovra.policy.usage import UsageLedger

        UsageLedger.in_home(self.home).record(
            principal,
            self.config.endpoint(answer.endpoint),
            tokens_in=answer.tokens_in,
            tokens_out=answer.tokens_out,
            latency_ms=answer.took_ms,
        )

    def _cited_chunk(self, chunk_id: str) -> Chunk | None:
        document_id = chunk_id.rpartition("#")[0]
        for chunk in self.index.chunks_of(document_id):
            if chunk.id == chunk_id:
                return chunk
        return None

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._state is not None:
            self._state.close()
            self._state = None
        if self._audit is not None:
            self._audit.close()
            self._audit = None
