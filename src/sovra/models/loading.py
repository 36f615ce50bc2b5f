"""Build the Generator for a configured endpoint (embedded GGUF from the registry, or OpenAI).

An OpenAI-compatible endpoint always gets the egress guard's client: its requests may reach only
registered endpoints (by default just its own `base_url`), and in air-gap mode only on-prem ones
on local addresses. No generator built here can talk to a host the guard has not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sovra.config import EndpointConfig
from sovra.models.generation import Generator


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
    from sovra.models.registry import open_generator

    if endpoint.kind != "openai":
        return open_generator(endpoint, home)
    from sovra.policy.egress import EgressGuard, openai_http_client

    guard = EgressGuard(registered if registered is not None else [endpoint], airgap=airgap)
    return open_generator(endpoint, home, http_client=openai_http_client(guard))
