"""Build the Generator for a configured endpoint (embedded GGUF from the registry, or OpenAI)."""

from __future__ import annotations

from pathlib import Path

from sovra.config import EndpointConfig
from sovra.models.generation import Generator


def generator_for(endpoint: EndpointConfig, home: Path) -> Generator:
    """The backend an `[[endpoints]]` entry describes; checksums verified for local models."""
    from sovra.models.registry import open_generator

    return open_generator(endpoint, home)
