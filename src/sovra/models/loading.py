"""Build the Generator for a configured endpoint (embedded GGUF from the registry, or OpenAI)."""

from __future__ import annotations

from pathlib import Path

from sovra.config import EndpointConfig
from sovra.models.base import ModelError
from sovra.models.generation import Generator


def generator_for(endpoint: EndpointConfig, home: Path) -> Generator:
    raise ModelError(
        f"endpoint {endpoint.name!r} ({endpoint.kind}) cannot be loaded: generation backends"
        " are not wired yet; use extractive answers"
    )
