"""Egress refusals reach the user as one generation error naming endpoint, host and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovra.config import EndpointConfig
from sovra.egress import EgressDenied, EgressGuard, openai_http_client
from sovra.models.base import ModelError
from sovra.models.generation import GenerationError
from sovra.models.openai_compat import EgressRefused, OpenAICompatibleGenerator
from sovra.workspace import generator_for
from tests.support.models import Reply, ScriptedServer, chunk_json, free_port

MSGS = [{"role": "user", "content": "Say hello."}]


def endpoint(url: str, hosting: str = "on_prem", name: str = "ep") -> EndpointConfig:
    return EndpointConfig(
        name=name, kind="openai", model="m", base_url=url, hosting=hosting, max_retries=2
    )


def served() -> ScriptedServer:
    return ScriptedServer([Reply(sse=[chunk_json("hi"), chunk_json(None, "stop"), "[DONE]"])])


def test_generator_for_sends_through_the_egress_guard(tmp_path: Path) -> None:
    with served() as srv:
        gen = generator_for(endpoint(srv.url), tmp_path)
        assert "".join(gen.stream(MSGS)) == "hi"
        assert len(srv.requests) == 1
        # Air-gap mode refuses a cloud endpoint before a byte is sent, without retries.
        cloud = generator_for(
            endpoint(srv.url, "regional_cloud", "eu-cloud"), tmp_path, airgap=True
        )
        with pytest.raises(GenerationError) as info:
            "".join(cloud.stream(MSGS))
        assert len(srv.requests) == 1
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"endpoint eu-cloud at {srv.url}:")
    assert "127.0.0.1" in message and "air-gap mode allows only on_prem" in message
    assert "to allow it: answer with an on_prem endpoint, or set [egress] airgap = false" in message
    # Both kinds: the CLI prints ModelErrors as one `error:` line; policy code sees EgressDenied.
    assert isinstance(info.value, EgressRefused)
    assert isinstance(info.value, ModelError) and isinstance(info.value, EgressDenied)


def test_unregistered_host_names_the_fix() -> None:
    with served() as srv:
        registered = endpoint(srv.url)
        guard = EgressGuard([registered])
        stray_url = f"http://127.0.0.1:{free_port()}/v1"
        stray = OpenAICompatibleGenerator(
            stray_url, "m", name="stray", http_client=openai_http_client(guard)
        )
        with pytest.raises(EgressRefused) as info:
            "".join(stray.stream(MSGS))
        assert srv.requests == []
    message = str(info.value)
    assert message.startswith(f"endpoint stray at {stray_url}: egress to http://127.0.0.1:")
    assert "not a registered endpoint" in message
    assert "to allow it: register the host as an endpoint (`sovra endpoint add" in message


def test_airgap_on_prem_endpoint_on_a_public_address_is_refused(tmp_path: Path) -> None:
    # A public address: the guard refuses it before any connection is tried.
    gen = generator_for(endpoint("http://1.1.1.1:8000/v1"), tmp_path, airgap=True)
    with pytest.raises(EgressRefused) as info:
        "".join(gen.stream(MSGS))
    message = str(info.value)
    assert "non-local address 1.1.1.1" in message
    assert "register the on-prem endpoint by a loopback or private IP address" in message
