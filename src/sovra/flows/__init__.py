"""Workflows: definitions, the durable runner, approvals and actions (see flows/base.py).

`Flows` (in `flows.service`) is the entry point for the CLI and the server; it is imported
lazily here so that `sovra.flows.base` stays cheap for the adapters and classifiers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sovra.flows.base import (
    ActionAdapter,
    ActionError,
    ActionResult,
    Classifier,
    FlowError,
    Prediction,
)

if TYPE_CHECKING:
    from sovra.flows.service import Flows

__all__ = [
    "ActionAdapter",
    "ActionError",
    "ActionResult",
    "Classifier",
    "FlowError",
    "Flows",
    "Prediction",
]


def __getattr__(name: str) -> Any:
    if name == "Flows":
        from sovra.flows.service import Flows

        return Flows
    raise AttributeError(name)
