"""Small protocols the rest of sovra uses to talk to models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sovra.errors import Invalid, Unavailable

Vectors = npt.NDArray[np.float32]


class ModelError(Invalid):
    """A model cannot be loaded or used; the message names the model or file and the fix."""


class ModelUnavailable(Unavailable, ModelError):
    """The runtime or package a model needs is not installed here; the message says what to install."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def languages(self) -> frozenset[str]:
        """ISO 639-1 codes the model was trained for; fusion skips the vector channel elsewhere."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Shape (len(texts), dimension), rows normalised to unit length."""
        ...


class WrappedEmbedder:
    """Base for an embedder that adds behaviour around another (caching, batching, another
    runtime): the wrapped model's name, dimension and languages are its own."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def languages(self) -> frozenset[str]:
        return self.inner.languages
