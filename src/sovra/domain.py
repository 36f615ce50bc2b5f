"""The shared vocabulary of sovra (docs/concepts.md) as typed values; no I/O here."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sovra.errors import Invalid

PUBLIC = "public"
"""Access string that every principal holds."""

ADMIN_GROUP = "admins"
"""Members of this group may read documents whose access could not be determined."""

AUDITOR_GROUP = "auditors"
"""Members read the governance page and its compliance reports (no other admin page)."""

ADMIN_ONLY = "group:" + ADMIN_GROUP
"""Access string given to a document with no access information (deny by default)."""

DEFAULT_CLASSIFICATIONS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")


class DomainError(Invalid, ValueError):
    """A value that breaks one of the domain's rules; the message names the value and the fix."""


@dataclass(frozen=True)
class ClassificationScale:
    """Ordered classification labels, lowest first. Unknown labels are rejected, never guessed."""

    labels: tuple[str, ...] = DEFAULT_CLASSIFICATIONS

    def __post_init__(self) -> None:
        if not self.labels:
            raise DomainError("classification scale is empty; list at least one label")
        if len(set(self.labels)) != len(self.labels):
            raise DomainError(f"classification labels repeat: {list(self.labels)}")

    def rank(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise DomainError(
                f"unknown classification {label!r}; use one of {', '.join(self.labels)}"
            ) from None

    def strictest(self, labels: Iterable[str]) -> str:
        ranked = [self.rank(label) for label in labels]
        return self.labels[max(ranked)] if ranked else self.labels[0]

    def allows(self, clearance: str, label: str) -> bool:
        """True when data labelled `label` may go where `clearance` is the highest allowed."""
        return self.rank(label) <= self.rank(clearance)


def residency_contains(outer: str, inner: str) -> bool:
    """Region containment on dash-separated tags: `eu` contains `eu-de`; `*` contains all."""
    if outer == "*":
        return True
    return inner == outer or inner.startswith(outer + "-")


def may_process_in(residency: str, region: str) -> bool:
    """May data with `residency` be processed in `region`? Only if the region lies inside it."""
    return residency_contains(residency, region)


def as_utc(moment: datetime) -> datetime:
    """Timestamps compare in UTC; a naive timestamp is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def content_hash(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Principal:
    """A user or service, with the groups it belongs to."""

    id: str
    groups: frozenset[str] = frozenset()
    display_name: str = ""

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    @property
    def is_auditor(self) -> bool:
        return AUDITOR_GROUP in self.groups

    def access_tokens(self) -> frozenset[str]:
        """Access strings this principal holds: its user, its groups, and `public`."""
        tokens = {f"user:{self.id}", PUBLIC}
        tokens.update(f"group:{g}" for g in self.groups)
        return frozenset(tokens)

    def may_read(self, access: Iterable[str]) -> bool:
        return not self.access_tokens().isdisjoint(access)


def validate_access(access: Sequence[str]) -> tuple[str, ...]:
    """Normalise an access list; an empty or unparseable list means admins only."""
    out: list[str] = []
    for item in access:
        item = item.strip()
        if item == PUBLIC or (
            item.partition(":")[0] in ("user", "group") and item.partition(":")[2]
        ):
            out.append(item)
        else:
            raise DomainError(
                f"access entry {item!r} is not understood; write user:<id>, group:<name> or public"
            )
    return tuple(sorted(set(out))) or (ADMIN_ONLY,)


@dataclass(frozen=True)
class DocumentRef:
    """What a source lists: an external id and a version that changes when the item does."""

    external_id: str
    version: str


@dataclass
class Document:
    """One item from a source, with its governance labels."""

    source: str
    external_id: str
    version: str
    title: str
    uri: str
    text: str
    access: tuple[str, ...]
    classification: str
    residency: str
    language: str = "und"
    mime_type: str = "text/plain"
    metadata: dict[str, str] = field(default_factory=dict)
    modified_at: datetime | None = None

    @property
    def id(self) -> str:
        return f"{self.source}:{self.external_id}"


@dataclass
class Chunk:
    """An indexed span of a document; it carries the document's governance labels."""

    id: str
    document_id: str
    source: str
    position: int
    text: str
    title: str
    uri: str
    heading_path: tuple[str, ...]
    language: str
    access: tuple[str, ...]
    classification: str
    residency: str
    start: int = 0
    end: int = 0
    modified_at: datetime | None = None
    embedding: Sequence[float] | None = None


SearchMode = Literal["hybrid", "text", "vector"]


@dataclass(frozen=True)
class QueryOptions:
    """How a question is narrowed and answered: one object for search and ask on every surface
    (CLI, REST, OpenAI API, MCP, web UI, workflow steps).

    Every field only ever narrows what the principal may read; none widens it. `k` is the number
    of search results (answers use the configured `[answer] k`); `endpoint` and `extractive`
    apply to answers only.
    """

    k: int = 10
    mode: SearchMode = "hybrid"
    sources: tuple[str, ...] | None = None
    language: str | None = None
    max_classification: str | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    endpoint: str | None = None
    extractive: bool = False
    context: tuple[Chunk, ...] = ()
    """Chunks the question itself carries (a workflow's input document): routing takes their
    labels with the retrieved ones', so the strictest label of the whole prompt decides."""
    passages: tuple[str, ...] | None = None
    """Answer from exactly these chunks (ids, best first; each still checked against the
    filter) instead of a new search: a workflow's draft uses what its retrieve step found."""


@dataclass(frozen=True)
class SearchFilter:
    """What a principal may see, applied inside the index.

    `access_tokens` is mandatory: the index returns only chunks sharing at least one token.
    The other fields narrow further; None means no narrowing on that field.
    """

    access_tokens: frozenset[str]
    max_classification_rank: int | None = None
    classification_labels: tuple[str, ...] = DEFAULT_CLASSIFICATIONS
    region: str | None = None
    sources: frozenset[str] | None = None
    languages: frozenset[str] | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None

    @classmethod
    def for_principal(cls, principal: Principal, **narrowing: object) -> SearchFilter:
        tokens = principal.access_tokens()
        if principal.is_admin:
            tokens = tokens | {ADMIN_ONLY}
        return cls(access_tokens=tokens, **narrowing)  # type: ignore[arg-type]

    def admits(self, chunk: Chunk) -> bool:
        """Reference semantics of the filter; every Index backend must agree with it."""
        if self.access_tokens.isdisjoint(chunk.access):
            return False
        if self.max_classification_rank is not None:
            if chunk.classification not in self.classification_labels:
                return False
            if (
                self.classification_labels.index(chunk.classification)
                > self.max_classification_rank
            ):
                return False
        if self.region is not None and not may_process_in(chunk.residency, self.region):
            return False
        if self.sources is not None and chunk.source not in self.sources:
            return False
        if self.languages is not None and chunk.language not in self.languages:
            return False
        if self.modified_after is None and self.modified_before is None:
            return True
        if chunk.modified_at is None:
            return False
        moment = as_utc(chunk.modified_at)
        if self.modified_after is not None and moment < as_utc(self.modified_after):
            return False
        return not (self.modified_before is not None and moment > as_utc(self.modified_before))


@dataclass(frozen=True)
class ScoredChunk:
    """A chunk returned by a search, with the score of the channel or fusion that found it."""

    chunk: Chunk
    score: float
    channel: str = "hybrid"
