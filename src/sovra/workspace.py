"""Opens the data directory, wires the components together — the only module that does — and
offers the one permission path every surface uses.

Everything stateful lives under `config.home` (default `./sovra-data`, or `SOVRA_HOME`):
`directory.db` (users/groups and their history), `index/` (search index), `state.db` (sync state), the audit
log, `feedback.sqlite`, the workflow stores. The principal-taking operations (`search`, `ask`,
`document`, `feedback`, `flows`) are the only way a question reaches the index: the CLI, the
server's REST/OpenAI/MCP/web routes and workflow steps all call them with a Principal and one
`QueryOptions`, so the permission filter and the audit record are built in one place.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from sovra.answer.recent import RecentQuestions
    from sovra.audit import AuditEvent
    from sovra.directory.ldap import LdapSettings
    from sovra.flows.base import ActionAdapter
    from sovra.flows.service import Flows
    from sovra.ingest import ProgressCallback, StateStore, SyncReport
    from sovra.ingest.ray_engine import RayOptions
    from sovra.models.generation import Generator
    from sovra.policy.pii import PiiDetector
    from sovra.policy.redact import Pseudonyms
    from sovra.policy.router import Router
    from sovra.policy.usage import UsageLedger
    from sovra.search.grouping import DocumentHit
    from sovra.search.query_log import QueryVectorLog

from sovra.answer import Answer, Answerer, AnswerEvent, AnswerSettings
from sovra.answer.feedback import Feedback, FeedbackStore
from sovra.answer.routing import config_choice
from sovra.audit import AuditError, AuditLog
from sovra.audit.keys import KEY_ENV
from sovra.audit.log import RETENTION_ENV, SCHEMA_ENV, URL_ENV
from sovra.audit.subjects import Digests
from sovra.config import Config, ConfigError, EndpointConfig, SourceConfig
from sovra.directory import Change, Directory, DirectoryError, IdentityMapping
from sovra.domain import (
    Chunk,
    DomainError,
    Principal,
    QueryOptions,
    SearchFilter,
    as_utc,
    content_hash,
)
from sovra.index.base import Index
from sovra.models.base import Embedder, Vectors
from sovra.models.embedding import build_embedder, monitored_model_name, monitored_part
from sovra.search import FusionSettings, Searcher, SearchResult
from sovra.search.hybrid import full_query_vector
from sovra.storage import private_dir


@dataclass(frozen=True)
class _Hit:
    """A chunk in the shape `_log_decision` reads (a search hit's `.chunk`)."""

    chunk: Chunk


def directory_for(
    config: Config, audit: Callable[[], AuditLog] | None = None, engine: Engine | str | None = None
) -> Directory:
    """The directory with the config's explicit mappings; every change it makes goes to the
    audit log (the open log `audit` returns, or the configured one opened for each change).
    `engine` (a SQLAlchemy engine or URL): the shared database instead of `<home>/directory.db`."""
    private_dir(config.home)
    mapping = IdentityMapping(
        group_map=dict(config.directory.group_map),
        adopt_users=frozenset(config.directory.adopt_users),
    )

    def on_change(change: Change) -> None:
        if audit is not None:
            audit().append(directory_event(change))
            return
        log = open_audit_log(config)
        try:
            log.append(directory_event(change))
        finally:
            log.close()

    if engine is None:
        engine = config.shared_database_url()  # `[workspace] database_url`: one directory for all
    return Directory.in_home(config.home, engine=engine, on_change=on_change, mapping=mapping)


def ldap_settings(config: Config) -> LdapSettings:
    """`[directory.ldap]` with its bind password read from the env var or file it names."""
    from sovra.directory.ldap import LdapSettings

    ldap = config.directory.ldap
    if ldap is None:
        raise ConfigError(
            "no [directory.ldap] section in sovra.toml; add url, bind_dn, password_env,"
            " user_base and group_base (docs/identity.md)"
        )
    password = ""
    if ldap.password_env:
        password = os.environ.get(ldap.password_env, "")
        if not password:
            raise ConfigError(
                f"directory.ldap.password_env names ${ldap.password_env}, which is not set"
            )
    elif ldap.password_file:
        password = config.resolve(ldap.password_file).read_text(encoding="utf-8").strip()
    fields = ldap.model_dump(exclude={"password_env", "password_file", "interval_s"})
    return LdapSettings(**fields, password=password)


def directory_event(change: Change) -> AuditEvent:
    """The audit event of one directory change; the user id is personal data (encrypted under
    the user's subject key), the group and the change's sequence number are not."""
    from sovra.audit import AuditEvent

    return AuditEvent(
        actor=f"directory:{change.origin}",
        action=f"directory.{change.action}",
        decision="allow",
        request_id=uuid.uuid4().hex,
        details={"seq": change.seq, "group": change.group, **change.detail},
        subject=change.user_id,
        personal={"user": change.user_id} if change.user_id else {},
    )


def embedder_for(config: Config, *, serving: bool = False) -> Embedder:
    """`serving` (the server): micro-batch concurrent query embeddings, one thread per call."""
    return build_embedder(
        config.embedding, config.resolve, cache_dir=onnx_cache_dir(config), serving=serving
    )


def onnx_cache_dir(config: Config) -> Path:
    """Where ONNX exports of the embedding models live (keyed by each model's sha256):
    `SOVRA_ONNX_CACHE` when set (homes that share one, e.g. tests), else the home's cache."""
    shared = os.environ.get("SOVRA_ONNX_CACHE")
    return Path(shared) if shared else config.home / "cache" / "onnx"


@dataclass(frozen=True)
class DocumentView:
    """The chunks of one document that a principal may read, in order."""

    id: str
    source: str
    title: str
    uri: str
    language: str
    classification: str
    chunks: list[Chunk]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "title": self.title,
            "uri": self.uri,
            "language": self.language,
            "classification": self.classification,
            "chunks": [
                {
                    "id": c.id,
                    "position": c.position,
                    "heading_path": list(c.heading_path),
                    "text": c.text,
                    "start": c.start,
                    "end": c.end,
                }
                for c in self.chunks
            ],
        }


# -- construction from the config -----------------------------------------------------------


def open_audit_log(config: Config, *, read_only: bool = False) -> AuditLog:
    """Open the log the way sovra.toml's `[audit]` table says; `SOVRA_AUDIT_*` variables win."""
    settings = config.audit
    url = os.environ.get(URL_ENV) or None
    if url is None and settings.database_url_env:
        url = os.environ.get(settings.database_url_env) or None
        if url is None:
            raise AuditError(
                f"[audit] database_url_env names ${settings.database_url_env}, which is not set; "
                "export the PostgreSQL URL in it, or remove database_url_env to keep the log "
                "in the data directory"
            )
    if url is None:
        url = config.shared_database_url()
    key_path = None
    if settings.key_path is not None and not os.environ.get(KEY_ENV):
        key_path = config.resolve(settings.key_path)
    return AuditLog.open(
        config.home,
        url,
        key_path=key_path,
        retention_days=None if os.environ.get(RETENTION_ENV) else settings.retention_days,
        schema=os.environ.get(SCHEMA_ENV) or settings.pg_schema,
        read_only=read_only,
    )


def generator_for(
    endpoint: EndpointConfig,
    home: Path,
    *,
    registered: Sequence[EndpointConfig] | None = None,
    airgap: bool = False,
) -> Generator:
    """The backend an `[[endpoints]]` entry describes; checksums verified for local models.

    `registered`: the endpoints the egress guard allows (default: this one alone, which is all
    this generator needs). `airgap`: the config's `[egress] airgap`.
    """
    from sovra.egress import EgressGuard, openai_http_client
    from sovra.models.registry import open_generator

    if endpoint.kind != "openai":
        return open_generator(endpoint, home)
    guard = EgressGuard(registered if registered is not None else [endpoint], airgap=airgap)
    return open_generator(endpoint, home, http_client=openai_http_client(guard))


def adapters_for(config: Config, home: Path) -> dict[str, ActionAdapter]:
    """Every action adapter, by name, storing its state under `home`."""
    from sovra.flows.actions import DeliveryLedger, EmailAction, TicketStore, WebhookAction

    shared = config.shared_database_url()
    ledger = DeliveryLedger.in_home(home, shared)
    adapters: list[ActionAdapter] = [
        TicketStore.in_home(home, shared),
        WebhookAction(ledger, config.flows.webhook_hosts, airgap=config.egress.airgap),
        EmailAction(ledger, config.flows.smtp, base_dir=config.base_dir),
    ]
    return {a.name: a for a in adapters}


def open_flows(config: Config, **kwargs: Any) -> Flows:
    """A workflow service on its own workspace (closed with it): for the CLI and tests."""
    from sovra.flows.service import Flows

    return Flows(config, Workspace.open(config), owns_host=True, **kwargs)


SHARED_STORES: tuple[str, ...] = (
    "audit log",
    "audit subject keys",
    "flows (DBOS)",
    "directory",
    "accounts/API keys/sessions",
    "pending OIDC logins",
    "rate-limit counters",
    "sync state",
    "usage ledger",
    "answer feedback",
    "recent questions",
    "query-vector log (drift monitor)",
    "flows run store",
    "action ledger",
    "tickets",
)
"""Stores that follow `[workspace] database_url` onto PostgreSQL.

Per replica by nature, and so not listed: the embedded index under `<home>/index` (each replica
holds a copy of the same synced index, or all use `[index] backend = "postgres"`), the model
files and `mlflow.db` (an operator's local eval tracking, never written by `sovra serve`).
The flows run store (`flows-state.db` → schema `sovra_flows`), the action ledger
(`action-ledger.db` → `sovra_actions`) and the stand-in ticket system (`tickets.db` →
`sovra_tickets`) follow it too, and the audit subject keys follow the audit log: with a
PostgreSQL log they sit in its schema."""
_T = TypeVar("_T")

LOCAL_ONLY_STORES: tuple[str, ...] = ()
"""Stores still on a local SQLite file: with `database_url` set, the workspace refuses to open
until each moves to SHARED_STORES (issue 18 §2)."""


class Workspace:
    def __init__(self, config: Config, *, serving: bool = False) -> None:
        self.config = config
        self.serving = serving
        self.home: Path = config.home
        self.directory = directory_for(config, lambda: self.audit)
        self._embedder: Embedder | None = None
        self._index: Index | None = None
        self._state: StateStore | None = None
        self._audit: AuditLog | None = None
        self._feedback: FeedbackStore | None = None
        self._usage: UsageLedger | None = None
        self._queries: QueryVectorLog | None = None
        self._recent: RecentQuestions | None = None
        self._generators: dict[str, Generator] = {}
        self._digests: Digests | None = None
        # Re-entrant: opening the index asks for the embedder's dimension.
        self._opening = threading.RLock()

    def _once(self, name: str, make: Callable[[], _T]) -> _T:
        """The store or model held in attribute `name`, made by `make` once per workspace.

        Request threads reach a lazily opened store together on a server's first requests; two
        makers at once created one SQLite table twice and the loser's request failed with a 500
        (the load benchmark's first seconds). Double-checked under one lock: after the first
        open, a read is one attribute lookup."""
        value: _T | None = getattr(self, name)
        if value is None:
            with self._opening:
                value = getattr(self, name)
                if value is None:
                    value = make()
                    setattr(self, name, value)
        return value

    @classmethod
    def open(cls, config: Config, *, serving: bool = False) -> Workspace:
        if config.shared_database_url() is not None and LOCAL_ONLY_STORES:
            # Unknown means deny: a replica that kept any of these on a private SQLite file would
            # diverge from the others silently (sessions, revocations, limits, state).
            raise ConfigError(
                "workspace.database_url is set, but these stores cannot run on PostgreSQL yet: "
                + ", ".join(LOCAL_ONLY_STORES)
                + "; remove database_url to run one replica on the home's SQLite files"
            )
        private_dir(config.home)
        return cls(config, serving=serving)

    @property
    def embedder(self) -> Embedder:
        return self._once("_embedder", lambda: embedder_for(self.config, serving=self.serving))

    @property
    def index(self) -> Index:
        from sovra.index import AnnSettings, open_index

        return self._once(
            "_index",
            lambda: open_index(
                self.home / "index",
                backend=self.config.index.backend,
                dimension=self.embedder.dimension,
                url=self.config.index_url(),
                schema=self.config.index.pg_schema,
                vector_type=self.config.index.vector_type,
                ef_search=self.config.index.ef_search,
                hnsw=self.config.index.hnsw_build,
                ann=AnnSettings(
                    mode=self.config.index.ann, min_chunks=self.config.index.ann_min_chunks
                ),
                # The server only searches: its workers share the embedded index read-only.
                read_only=self.serving,
            ),
        )

    @property
    def state(self) -> StateStore:
        from sovra.ingest import StateStore

        return self._once(
            "_state",
            lambda: StateStore(self.config.shared_database_url() or self.home / "state.db"),
        )

    @property
    def audit(self) -> AuditLog:
        return self._once("_audit", lambda: open_audit_log(self.config))

    def digest(self, text: str) -> str:
        """The installation's keyed digest of personal text (queries, answers) for the audit
        log: it identifies the text without letting a guessed query be confirmed."""
        # From the audit log: replicas of a shared one must digest alike (subjects.py).
        return self._once("_digests", lambda: self.audit.subjects.digests(self.home)).of(text)

    @property
    def feedback_store(self) -> FeedbackStore:
        return self._once(
            "_feedback", lambda: FeedbackStore.in_home(self.home, self.config.shared_database_url())
        )

    @property
    def recent_store(self) -> RecentQuestions:
        from sovra.answer.recent import RecentQuestions

        return self._once(
            "_recent",
            lambda: RecentQuestions.in_home(self.home, self.config.shared_database_url()),
        )

    def recent_questions(self, principal: Principal, limit: int = 10) -> list[str]:
        """The principal's own recent questions, newest first (never another user's)."""
        return self.recent_store.of_user(principal.id, limit)

    @property
    def usage_ledger(self) -> UsageLedger:
        from sovra.policy.usage import UsageLedger

        return self._once(
            "_usage", lambda: UsageLedger.in_home(self.home, self.config.shared_database_url())
        )

    @property
    def query_log(self) -> QueryVectorLog:
        """Query embeddings (no text, no user) for drift monitoring (`sovra monitor`)."""
        from sovra.search.query_log import QueryVectorLog

        g = self.config.govern
        return self._once(
            "_queries",
            lambda: QueryVectorLog.in_home(
                self.home,
                retention_days=g.reference_days + g.current_days,
                engine=self.config.shared_database_url(),
            ),
        )

    @property
    def monitored_model(self) -> str:
        """The model name the query-vector log keeps vectors under (drift monitoring)."""
        return monitored_model_name(self.config.embedding)

    def _log_query_vector(
        self, operation: str, text: str, known: dict[str, Vectors] | None = None
    ) -> None:
        """Keep the question's embedding for drift monitoring; a failure here never fails the
        question it belongs to (the monitor reports a short window instead). `known`: the
        embeddings retrieval computed, by model name.

        Only the primary model's vector is kept, under the name the monitor reads
        (`monitored_model_name`). A fused embedder's other parts (the multilingual channel) would cost a second
        forward pass per question that retrieval routed past them, for no monitor that reads
        them; retrieval's own vector is reused when it computed the primary one."""
        if not self.config.govern.log_query_vectors:
            return
        import sqlite3

        try:
            vector = full_query_vector(monitored_part(self.embedder), text, dict(known or {}))
            self.query_log.add(operation, self.monitored_model, vector)
        except (OSError, sqlite3.Error):
            return

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
        ray: RayOptions | None = None,
    ) -> SyncReport:
        """Bring the index in line with one configured source (incremental, resumable).

        `ray` runs parse/chunk/embed on a Ray cluster (`sovra.ingest.ray_engine`); the result
        is the same chunks and state as the local pipeline's."""
        from sovra.ingest import SyncOptions, sync_source
        from sovra.sources import connector_for

        connector = connector_for(source, self.config)
        embedder = None if bm25_only else self.embedder
        options = SyncOptions(language=source.language)
        if ray is not None:
            from sovra.ingest.ray_engine import sync_source_ray

            # Each embedding actor builds the embedder from the config on its own node.
            factory = None if embedder is None else functools.partial(embedder_for, self.config)
            report = sync_source_ray(
                connector,
                source.name,
                self.index,
                embedder,
                self.state,
                progress,
                options=options,
                ray_options=ray,
                embedder_factory=factory,
            )
        else:
            report = sync_source(
                connector, source.name, self.index, embedder, self.state, progress, options=options
            )
        if embedder is not None and self.config.answer.precompute_sentences:
            self._fill_sentences(report, embedder)
        return report

    def _fill_sentences(self, report: SyncReport, embedder: Embedder) -> None:
        """Sentence vectors of the documents this sync wrote (the extractive answer's input)."""
        from sovra.answer.extractive import fill_sentence_vectors
        from sovra.answer.sentences import SentenceVectorStore

        index = self.index
        if not isinstance(index, SentenceVectorStore) or not (report.added or report.updated):
            return  # LanceDB keeps none: answers embed candidates at question time
        started = time.perf_counter()
        # The report names documents by external id; the index by "source:external id".
        docs = (f"{report.source}:{e}" for e in (*report.added, *report.updated))
        chunks = [c for doc in docs for c in index.chunks_of(doc)]
        fill_sentence_vectors(index, embedder, chunks)
        report.timings["sentences"] = time.perf_counter() - started

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

    def answerer(self, context: Sequence[Chunk] = ()) -> Answerer:
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
            config_choice(
                self.config,
                router=self.router,
                load_generator=self.generator,
                pseudonymise=self.pseudonymise,
                on_decision=self._log_decision,
                context=context,
            ),
            settings,
        )

    @property
    def detector(self) -> PiiDetector:
        """The one PII detector: the router's scan and the redactor use it alike."""
        from sovra.policy.wiring import detector_for

        return detector_for(self.config)

    def router(self) -> Router:
        """A router on the current policies (read anew, so an edited policy applies at once)."""
        from sovra.policy.wiring import router_for

        c = self.config
        return router_for(
            c,
            self.home,
            preference=c.routing.preference,
            categories=c.routing.categories,
            scan_pii=c.routing.pii_scan,
            legal_basis={e.name: e.legal_basis for e in c.endpoints if e.legal_basis},
            detector=self.detector if c.routing.pii_scan else None,
        )

    def pseudonymise(self, texts: Sequence[str]) -> tuple[list[str], Pseudonyms]:
        from sovra.policy.wiring import protect_texts

        return protect_texts(texts, self.detector)

    def generator(self, endpoint: EndpointConfig) -> Generator:
        """The endpoint's generator, loaded once per workspace. Its egress guard allows this
        endpoint's destination alone and, in air-gap mode, re-checks at send time that it is
        local: the router's decision is not the only line of defence."""
        gen = self._generators.get(endpoint.name)
        if gen is None:
            with self._opening:  # one model load, even for concurrent first questions
                gen = self._generators.get(endpoint.name)
                if gen is None:
                    gen = generator_for(endpoint, self.home, airgap=self.config.egress.airgap)
                    self._generators[endpoint.name] = gen
        return gen

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

    # -- the permission path -----------------------------------------------------------------
    # Every surface (CLI, REST, OpenAI API, MCP, web UI, workflow steps) asks through these
    # methods with a Principal and one QueryOptions; none builds a filter or an audit record
    # of its own.

    def principal_for(self, user_id: str, action: str, text: str) -> Principal:
        """The directory's principal for `user_id`, resolved now so that a revoked membership
        applies at once; an unknown user is denied, and the denial is logged."""
        try:
            return self.principal(user_id)
        except DirectoryError:
            self.record(
                user_id,
                action,
                [],
                decision="deny",
                outcome="unknown_principal",
                details={"query_sha256": self.digest(text)},
            )
            raise

    def filter_for_options(self, principal: Principal, options: QueryOptions) -> SearchFilter:
        """The principal's filter narrowed by the options (sources, classification, dates)."""
        flt = self.filter_for(
            principal, options.sources, max_classification=options.max_classification
        )
        if options.modified_after is not None or options.modified_before is not None:
            # Applied inside the index like the access filter (a chunk without a time is out).
            flt = replace(
                flt,
                modified_after=as_utc(options.modified_after) if options.modified_after else None,
                modified_before=(
                    as_utc(options.modified_before) if options.modified_before else None
                ),
            )
        return flt

    def search(
        self,
        principal: Principal,
        query: str,
        options: QueryOptions | None = None,
        *,
        monitored: bool = True,
    ) -> SearchResult:
        """The chunks `principal` may read that match `query`, logged with a receipt.
        `monitored=False` (evaluation runs) keeps the query out of the drift monitor's log."""
        options = options or QueryOptions()
        flt = self.filter_for_options(principal, options)
        result = self.searcher().search(
            query, flt, k=options.k, mode=options.mode, language=options.language
        )
        self.record_search(principal, query, result, k=options.k)
        if monitored:
            self._log_query_vector("search", query, result.query_vectors)
        return result

    def search_documents(
        self,
        principal: Principal,
        query: str,
        options: QueryOptions | None = None,
        *,
        monitored: bool = True,
    ) -> tuple[SearchResult, list[DocumentHit]]:
        """Search grouped by Document: up to `options.k` documents, each with its best passages.
        Passages are drawn from a wider candidate list so one long document cannot crowd the
        others out; the receipt lists the passages shown."""
        from sovra.search.grouping import candidate_passages, group_by_document

        options = options or QueryOptions()
        flt = self.filter_for_options(principal, options)
        result = self.searcher().search(
            query,
            flt,
            k=candidate_passages(options.k),
            mode=options.mode,
            language=options.language,
        )
        documents = group_by_document(result, k=options.k)
        shown = replace(result, hits=[p.hit for d in documents for p in d.passages])
        self.record_search(principal, query, shown, k=options.k)
        if monitored:
            self._log_query_vector("search", query)
        return result, documents

    def record_search(
        self, principal: Principal, query: str, result: SearchResult, *, k: int
    ) -> dict[str, Any]:
        """Log a search (returned chunks by id and hash, the query encrypted) → receipt."""
        return self.record(
            principal.id,
            "search",
            [h.chunk for h in result.hits],
            details={"query_sha256": self.digest(query), "mode": result.mode, "k": k},
            personal={"query": query},
        )

    def ask(
        self,
        principal: Principal,
        question: str,
        options: QueryOptions | None = None,
        *,
        monitored: bool = True,
    ) -> Iterator[AnswerEvent]:
        """Stream an answer for `principal` (text deltas, then the final Answer with its
        receipt), from the documents it may read narrowed by the options."""
        options = options or QueryOptions()
        flt = self.filter_for_options(principal, options)
        vectors: dict[str, Vectors] = {}
        for event in self.answerer(options.context).stream(
            question,
            flt,
            principal=principal,
            endpoint=options.endpoint,
            extractive=options.extractive,
            query_vectors=vectors,
            passages=options.passages,
        ):
            if event.answer is not None:
                self.finish_answer(principal, question, event.answer)
                if monitored:
                    self._log_query_vector("ask", question, vectors)
                    self.recent_store.add(principal.id, question)
            yield event

    def document(self, principal: Principal, document_id: str) -> DocumentView | None:
        """The readable chunks of a document, or None — the same None whether the document
        does not exist or the principal may not read it."""
        flt = self.filter_for(principal)
        chunks = [c for c in self.index.chunks_of(document_id) if flt.admits(c)]
        if not chunks:
            return None
        chunks.sort(key=lambda c: c.position)
        self.record(
            principal.id,
            "read",
            chunks,
            details={"document_sha256": self.digest(document_id)},
        )
        first = chunks[0]
        return DocumentView(
            document_id,
            first.source,
            first.title,
            first.uri,
            first.language,
            first.classification,
            chunks,
        )

    def sample_passages(
        self, principal: Principal, source: str, n: int, *, seed: int = 0
    ) -> list[Chunk]:
        """Up to `n` chunks of `source` that `principal` may read, sampled one per document
        (seeded) for evaluation test sets; the sample is audited like a read."""
        import random

        self.config.source(source)  # unknown source → clear error
        flt = self.filter_for(principal, [source])
        prefix = source + ":"
        ids = sorted(d for d in self.index.document_ids() if d.startswith(prefix))
        random.Random(seed).shuffle(ids)
        picked: list[Chunk] = []
        for document_id in ids:
            readable = [c for c in self.index.chunks_of(document_id) if flt.admits(c)]
            if readable:
                picked.append(random.Random(f"{seed}:{document_id}").choice(readable))
            if len(picked) >= n:
                break
        self.record(
            principal.id,
            "testset.sample",
            picked,
            details={"source": source, "requested": n, "sampled": len(picked)},
        )
        return picked

    def route(self, principal: Principal, chunks: Sequence[Chunk], endpoint: str) -> Any:
        """The router's decision (logged) on sending `chunks` to `endpoint` for `principal`."""
        decision = self.router().decide(principal, chunks, requested=endpoint)
        self._log_decision(principal, decision, [_Hit(c) for c in chunks])
        return decision

    def own_event(self, principal: Principal, index: int) -> dict[str, Any] | None:
        """The audit entry at `index` if `principal` may see it (its actor, or an admin)."""
        if index < 0 or index >= self.audit.size:
            return None
        ev = next(self.audit.events(start=index), None)
        if ev is None or ev.index != index:
            return None
        if not principal.is_admin and ev.view.get("actor") != f"user:{principal.id}":
            return None
        view: dict[str, Any] = ev.view
        return view

    def feedback(
        self, principal: Principal, answer_index: int, rating: str, comment: str = ""
    ) -> Feedback | None:
        """Store and log a rating of one of the principal's own answers (by the index of its
        receipt); None — as for a missing answer — when the entry is not its own answer."""
        view = self.own_event(principal, answer_index)
        if (
            view is None
            or view.get("action") != "ask"
            or view.get("actor") != f"user:{principal.id}"
        ):
            return None
        feedback_id = self.feedback_store.add(principal.id, answer_index, rating, comment)
        receipt = self.record(
            principal.id,
            "feedback",
            [],
            details={"answer_index": answer_index, "rating": rating},
            personal={"comment": comment},
        )
        return Feedback(feedback_id, receipt)

    def action_adapters(self) -> dict[str, ActionAdapter]:
        return adapters_for(self.config, self.home)

    def flows(self, **kwargs: Any) -> Flows:
        """The workflow service acting through this workspace (its runs search and draft
        through the same permission path); close it when done."""
        from sovra.flows.service import Flows

        return Flows(self.config, self, **kwargs)

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
                "question_sha256": self.digest(question),
                "answer_sha256": self.digest(answer.text),
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
        self.usage_ledger.record(
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
        if self._feedback is not None:
            self._feedback.close()
            self._feedback = None
        if self._usage is not None:
            self._usage.close()
            self._usage = None
        if self._queries is not None:
            self._queries.close()
            self._queries = None
        if self._recent is not None:
            self._recent.close()
            self._recent = None
