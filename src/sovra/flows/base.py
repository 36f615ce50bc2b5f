"""Contracts shared by the workflow runner, its action adapters and its classifiers.

The runner (`flows.runner`) never talks to a helpdesk, a mail server or a web hook directly: it
calls an `ActionAdapter` with an idempotency key derived from the run and step, and the adapter
guarantees that a second call with the same key changes nothing and returns the first result.
That is what makes "exactly once" hold across `kill -9` and a DBOS replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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
