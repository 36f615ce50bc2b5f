"""The OpenAI-compatible API with the official `openai` client against a real loopback server."""

from __future__ import annotations

import openai
import pytest

from tests.support.server import RUNBOOK, Issuer, Site

QUESTION = "what should I do when etcd database quota is low?"


def client_for(live_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_models_list_the_assistants(live_url: str, site: Site) -> None:
    ids = {m.id for m in client_for(live_url, site.keys["carol"]).models.list()}
    assert {"sovra", "sovra-extractive"} <= ids


def test_chat_completion_is_governed_and_cited(live_url: str, site: Site) -> None:
    alice = client_for(live_url, site.keys["alice"]).chat.completions.create(
        model="sovra-extractive", messages=[{"role": "user", "content": QUESTION}]
    )
    text = alice.choices[0].message.content or ""
    assert "[1]" in text and "Sources:" in text
    extra = alice.model_extra or {}
    assert extra["sovra"]["citations"][0]["document_id"] == RUNBOOK
    assert extra["sovra"]["ai_generated"] is True and extra["sovra"]["receipt"]["index"] >= 0
    carol = client_for(live_url, site.keys["carol"]).chat.completions.create(
        model="sovra-extractive", messages=[{"role": "user", "content": QUESTION}]
    )
    assert "etcdDatabaseQuotaLowSpace" not in (carol.choices[0].message.content or "")
    assert (carol.model_extra or {})["sovra"]["citations"] == []


def test_chat_completion_streams(live_url: str, site: Site) -> None:
    stream = client_for(live_url, site.keys["alice"]).chat.completions.create(
        model="sovra-extractive",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
        ],
        stream=True,
    )
    pieces: list[str] = []
    finish = None
    last_extra: dict[str, object] = {}
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
            last_extra = chunk.model_extra or {}
    assert finish == "stop" and len(pieces) > 1
    assert "Sources:" in "".join(pieces)
    sovra = last_extra["sovra"]
    assert isinstance(sovra, dict) and sovra["citations"][0]["document_id"] == RUNBOOK


def test_oidc_token_works_with_the_openai_client(live_url: str, issuer: Issuer) -> None:
    token = issuer.token("olivia", ("staff", "sre"))
    reply = client_for(live_url, token).chat.completions.create(
        model="sovra-extractive", messages=[{"role": "user", "content": QUESTION}]
    )
    assert (reply.model_extra or {})["sovra"]["citations"][0]["document_id"] == RUNBOOK


def test_openai_errors(live_url: str, site: Site) -> None:
    with pytest.raises(openai.AuthenticationError):
        client_for(live_url, "sovra_000000000000_nope").models.list()
    with pytest.raises(openai.NotFoundError):
        client_for(live_url, site.keys["alice"]).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": QUESTION}]
        )
    with pytest.raises(openai.PermissionDeniedError):
        client_for(live_url, site.keys["alice-search"]).chat.completions.create(
            model="sovra", messages=[{"role": "user", "content": QUESTION}]
        )
    with pytest.raises(openai.BadRequestError):
        client_for(live_url, site.keys["alice"]).chat.completions.create(
            model="sovra", messages=[{"role": "system", "content": "no question"}]
        )
