"""Model backends behind small protocols: embeddings, generation (embedded llama.cpp or any
OpenAI-compatible endpoint) and the local model registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sovra.models.base import Embedder, ModelError, Vectors
from sovra.models.embedding import SentenceTransformerEmbedder, default_model_dir
from sovra.models.generation import (
    Generation,
    GenerationError,
    GenerationStats,
    Generator,
    Message,
)
from sovra.models.llamacpp import LlamaCppGenerator
from sovra.models.registry import (
    ChecksumMismatch,
    ModelEntry,
    ModelRegistry,
    RegistryError,
    ensure_default_gguf,
    open_generator,
)

if TYPE_CHECKING:
    from sovra.models.openai_compat import OpenAICompatibleGenerator

__all__ = [
    "ChecksumMismatch",
    "Embedder",
    "Generation",
    "GenerationError",
    "GenerationStats",
    "Generator",
    "LlamaCppGenerator",
    "Message",
    "ModelEntry",
    "ModelError",
    "ModelRegistry",
    "OpenAICompatibleGenerator",
    "RegistryError",
    "SentenceTransformerEmbedder",
    "Vectors",
    "default_model_dir",
    "ensure_default_gguf",
    "open_generator",
]


def __getattr__(name: str) -> Any:
    # The openai client takes about a second to import: only pay for it when it is used.
    if name == "OpenAICompatibleGenerator":
        from sovra.models.openai_compat import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator
    raise AttributeError(f"module 'sovra.models' has no attribute {name!r}")
