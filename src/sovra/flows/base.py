"""Contracts shared by the workflow runner, its action adapters and its classifiers.

The runner (`flows.runner`) never talks to a helpdesk, a mail server or a web hook directly: it
calls an `ActionAdapter` with an idempotency key derived from the run and step, and the adapter
guarantees that a second call with the same key changes nothing and returns the first result.
That is what makes "exactly once" hold across `kill -9` and a DBOS replay.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sovra.answer import AnswerEvent
    from sovra.domain import Chunk, Principal, QueryOptions
    from sovra.index.base import Index
    from sovra.models.base import Embedder
    from sovra.search import SearchResult

from sovra.errors import Conflict, Invalid, NotFound, Unavailable


class FlowError(Invalid):
    """A workflow cannot be defined, started or continued; the message says what and how to fix it."""


class FlowNotFound(NotFound, FlowError):
    """No such run, workflow or classifier (or one the caller may not see)."""


class FlowConflict(Conflict, FlowError):
    """The run's state does not allow this (not waiting, already decided, kill switch on)."""


class ActionError(Unavailable, FlowError):
    """An action failed. `retryable` = the runner may try again (server down, timeout, 5xx)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ActionResult:
    """What an action changed. `replayed` = this idempotency key had already run; nothing new."""

    adapter: str
    idempotency_key: str
    outcome: Mapping[str, Any]
    replayed: bool = False


@runtime_checkable
class ActionAdapter(Protocol):
    """Something a workflow may change in the world.

    `changes` names what it can change (e.g. ``{"ticket.update"}``, ``{"email.send"}``,
    ``{"http.post"}``) so a Cedar policy can allow or deny the adapter per workflow.
    """

    name: str
    changes: frozenset[str]

    def execute(self, params: Mapping[str, Any], *, idempotency_key: str) -> ActionResult: ...


@dataclass(frozen=True)
class Prediction:
    """One label chosen by a classifier, with its confidence in [0, 1] and every label's score."""

    label: str
    confidence: float
    scores: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Classifier(Protocol):
    """Assigns one of `labels` to each text."""

    labels: tuple[str, ...]

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...


class ReadableDocument(Protocol):
    """The chunks of one document that a principal may read (the workspace's DocumentView)."""

    @property
    def id(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def classification(self) -> str: ...

    @property
    def chunks(self) -> list[Chunk]: ...


class Host(Protocol):
    """What workflows need from the workspace that runs them (the wiring module's `Workspace`).

    Retrieve and draft steps search and answer through the host's permission path as the run's
    requester, so a workflow can never read more than the person who started it.
    """

    home: Path

    @property
    def embedder(self) -> Embedder: ...

    @property
    def index(self) -> Index: ...

    def principal(self, user_id: str) -> Principal: ...

    def principal_for(self, user_id: str, action: str, text: str) -> Principal: ...

    def search(
        self, principal: Principal, query: str, options: QueryOptions | None = None
    ) -> SearchResult: ...

    def ask(
        self, principal: Principal, question: str, options: QueryOptions | None = None
    ) -> Iterator[AnswerEvent]: ...

    def document(self, principal: Principal, document_id: str) -> ReadableDocument | None: ...

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
    ) -> dict[str, Any]: ...

    def digest(self, text: str) -> str:
        """The installation's keyed digest of personal text, the same on every replica."""
        ...

    def action_adapters(self) -> Mapping[str, ActionAdapter]:
        """Every action adapter a step may call, by name, built from the configuration."""
        ...

    def close(self) -> None: ...
