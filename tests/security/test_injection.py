"""Indirect prompt injection (issue 14 §2): a few hundred hostile documents in a source the
asker may read, a confidential page the asker may not read, and a model that obeys every
instruction in its prompt.

Every injected document is asked about (so it is retrieved, usually with other injected
documents beside it) on the extractive path and on the generative path, in-process as a stream
and through the server: REST JSON, REST Server-Sent Events, the OpenAI-compatible API with and
without `stream`, and MCP (each document takes one server channel per path, in rotation, which
keeps the suite within its time bound). Pass: no output, and no prefix of a stream, renders an
image, raw HTML or a link to a host other than the rule allows (the sources' own hosts, or a
URL quoted verbatim from a readable source); the confidential page's marker is in no output
and in no prompt sent to the model; a stream's deltas add up to the checked answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import mcp
import pytest
from fastapi.testclient import TestClient

from sovra.server import ServerSettings, create_app
from sovra.server.accounts import AccountStore
from sovra.server.mcp_server import build_mcp, fixed_user
from sovra.server.slots import ModelSlots
from sovra.workspace import Workspace
from tests.support.answer import RESTRICTED_SOURCE, make_site, open_workspace
from tests.support.injection import (
    SECRET_DOC,
    SECRET_MARKER,
    InjectedDoc,
    ObedientModel,
    corpus,
    sse_events,
)
from tests.support.injection_render import external_fetches, rendered

DOCS = corpus(int(__import__("os").environ.get("INJ_N", "240")))
ASKER = "alice"  # sre: reads the runbooks (where the injections are), not the people pages
_URL = re.compile(r"(?i)\b(?:https?|ftp)://[^\s<>()\]]+")
VERBATIM = {u.rstrip(".,;:") for d in DOCS for u in _URL.findall(d.text)}
CHANNELS = ("rest", "rest-sse", "openai", "openai-stream", "mcp")
EXTRACTIVE = ("in-process", "mcp", "openai-stream", "rest", "openai", "rest-sse")


def endpoint(url: str) -> str:
    return f"""
[answer]
endpoint = "obedient"
k = 4
max_answer_tokens = 256

[routing]
pii_scan = false

# Hybrid search fuses only vector hits in languages the model covers; with the packaged
# English model a Spanish document that is the best text match then ranks below English
# documents that match both ways. Declaring the corpus languages keeps every asked document
# retrievable, which is what this suite needs (ranking is not under test here).
[embedding]
languages = ["en", "de", "es", "ar"]

[[endpoints]]
name = "obedient"
kind = "openai"
base_url = "{url}"
model = "obedient"
jurisdiction = "eu-de"
hosting = "on_prem"
max_classification = "confidential"
pii = "allow"
max_retries = 0
"""


@dataclass
class Lab:
    ws: Workspace
    client: TestClient
    model: ObedientModel
    key: str
    mcp: Any
    cases: int = 0
    verbatim_links: int = 0
    failures: list[str] = field(default_factory=list)

    def judge(self, where: str, doc: InjectedDoc, text: str) -> None:
        self.cases += 1
        case = f"{where.removesuffix('-prefix')} {doc.path}"
        if any(f.startswith(case + ":") for f in self.failures[-3:]):
            return  # one failure per case: a stream's later prefixes fail alike
        bad = external_fetches(text, (), VERBATIM)
        if bad:
            self.failures.append(f"{case}: {bad[:3]}")
        if SECRET_MARKER in text:
            self.failures.append(f"{case}: confidential marker in the output")
        self.verbatim_links += sum(tag == "a" for tag, _ in rendered(text).urls)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("injection")
    files = {f"runbooks/{d.path}": d.text for d in DOCS}
    # The page alice may not read names every part, so it would be retrieved for every
    # question if the permission filter failed.
    codes = " ".join(d.code for d in DOCS)
    files["people/board-memo.md"] = SECRET_DOC + f"\nValve calibration for {codes}.\n"
    with ObedientModel(DOCS) as model:
        cfg = make_site(root, files, RESTRICTED_SOURCE + endpoint(model.url))
        ws = open_workspace(cfg)
        accounts = AccountStore.in_home(ws.config.home)
        try:
            key = accounts.create_key(ASKER, "injection", ("ask",))[0]
        finally:
            accounts.close()
        settings = ServerSettings(rate_limit_per_minute=1_000_000, rate_limit_burst=100_000)
        api = create_app(ws.config, settings, ws)
        server = build_mcp(ModelSlots(ws), fixed_user(lambda: ws.principal(ASKER)))
        with TestClient(api, raise_server_exceptions=False) as client:
            yield Lab(ws, client, model, key, server)
        ws.close()


def _in_process(lab: Lab, doc: InjectedDoc, extractive: bool) -> None:
    from sovra.domain import QueryOptions

    where = "ws-extractive" if extractive else "ws-stream"
    principal = lab.ws.principal_for(ASKER, "ask", doc.question)
    deltas, final = [], None
    for event in lab.ws.ask(principal, doc.question, QueryOptions(extractive=extractive)):
        if event.answer is not None:
            final = event.answer
        elif event.delta:
            deltas.append(event.delta)
            lab.judge(where + "-prefix", doc, "".join(deltas))
            lab.cases -= 1  # a prefix is part of its case, not a case of its own
    assert final is not None
    if "".join(deltas) != final.text:
        lab.failures.append(f"{where} {doc.path}: deltas differ from the checked answer")
    lab.judge(where, doc, final.text)


def _server(lab: Lab, doc: InjectedDoc, channel: str, extractive: bool) -> None:
    where = f"{channel}{'-extractive' if extractive else ''}"
    auth = {"Authorization": f"Bearer {lab.key}"}
    q = doc.question
    if channel in ("rest", "rest-sse"):
        body = {"question": q, "extractive": extractive, "stream": channel == "rest-sse"}
        r = lab.client.post("/api/v1/ask", json=body, headers=auth)
        assert r.status_code == 200, r.text
        if channel == "rest":
            lab.judge(where, doc, r.json()["text"])
            return
        events = sse_events(r.text)
        deltas = "".join(d["text"] for e, d in events if e == "delta")
        final = next(d for e, d in events if e == "answer")
        if deltas != final["text"]:
            lab.failures.append(f"{where} {doc.path}: deltas differ from the checked answer")
        lab.judge(where, doc, deltas)
        return
    if channel.startswith("openai"):
        model = "sovra-extractive" if extractive else "sovra"
        body = {"model": model, "messages": [{"role": "user", "content": q}]}
        body["stream"] = channel == "openai-stream"
        r = lab.client.post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 200, r.text
        if channel == "openai":
            lab.judge(where, doc, r.json()["choices"][0]["message"]["content"])
            return
        chunks = [d for _, d in sse_events(r.text) if d != "[DONE]"]
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        lab.judge(where, doc, content)
        return
    raise AssertionError(channel)


def _user_text(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"])


def _asked(request: dict[str, Any]) -> str:
    """The part code the question asks about (the last word-like token of the question)."""
    question = _user_text(request).rpartition("\n\nQuestion: ")[2]
    return next(d.code for d in DOCS if d.code in question)


def _sources_part(request: dict[str, Any]) -> str:
    return _user_text(request).rpartition("\n\nQuestion: ")[0]


async def _mcp_calls(lab: Lab, todo: list[tuple[InjectedDoc, bool]]) -> None:
    async with mcp.Client(lab.mcp) as client:
        for doc, extractive in todo:
            result = await client.call_tool(
                "ask", {"question": doc.question, "extractive": extractive}
            )
            assert not result.is_error, result
            data = result.structured_content or json.loads(result.content[0].text)
            lab.judge("mcp" + ("-extractive" if extractive else ""), doc, data["text"])


def test_injected_documents_cannot_exfiltrate_or_leak(lab: Lab) -> None:
    started = time.perf_counter()
    mcp_todo: list[tuple[InjectedDoc, bool]] = []
    for i, doc in enumerate(DOCS):
        # Generative: every document as an in-process stream and through one server channel;
        # extractive (the embedding model's time dominates) through one channel of all six.
        _in_process(lab, doc, extractive=False)
        for extractive, channel in ((False, CHANNELS[i % 5]), (True, EXTRACTIVE[i % 6])):
            if channel == "in-process":
                _in_process(lab, doc, extractive)
            elif channel == "mcp":
                mcp_todo.append((doc, extractive))
            else:
                _server(lab, doc, channel, extractive)
    asyncio.run(_mcp_calls(lab, mcp_todo))
    took = time.perf_counter() - started
    prompts = [json.dumps(r["json"]) for r in lab.model.requests]
    leaked_prompts = sum(SECRET_MARKER in p for p in prompts)
    obeyed = sum("evil" in p.lower() or "attacker" in p for p in prompts)
    # The asked document was among the sources sent (not only named in the question).
    retrieved = sum(_asked(r["json"]) in _sources_part(r["json"]) for r in lab.model.requests)
    print(
        f"\ninjection suite: {len(DOCS)} documents, {lab.cases} outputs judged, "
        f"{len(lab.failures)} failures, {len(prompts)} prompts sent ({leaked_prompts} with the "
        f"confidential marker), {obeyed} prompts carrying an attack, {retrieved} prompts "
        f"holding the asked document, {lab.verbatim_links} verbatim links kept, "
        f"{took:.0f} s"
    )
    assert lab.failures == [], "\n".join(lab.failures[:20])
    assert leaked_prompts == 0
    # The attack was real: the model saw the injections and the asked documents were found.
    assert obeyed >= 0.9 * len(prompts) and len(prompts) == 2 * len(DOCS)
    assert retrieved >= 0.85 * len(prompts)  # 430 of 480 when measured


GGUF_SAMPLE = DOCS[:: max(1, len(DOCS) // 8)][:8]
GGUF_ENDPOINT = """
[answer]
endpoint = "local-gemma"
k = 3
max_answer_tokens = 48

[routing]
pii_scan = false

[embedding]
languages = ["en", "de", "es", "ar"]

[[endpoints]]
name = "local-gemma"
kind = "embedded"
model = "gemma3-270m-base"
jurisdiction = "eu-de"
hosting = "on_prem"
max_classification = "confidential"
pii = "allow"
# A small window keeps the base model's time on a 2-core box short.
context_length = 768
"""


def test_packaged_gguf_on_injected_documents(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The packaged GGUF (a base model: it continues its prompt, links and images included)
    on a sample of the corpus, streamed in-process: the same hygiene holds for a real model."""
    from sovra.domain import QueryOptions
    from sovra.models.registry import ensure_default_gguf

    root = tmp_path_factory.mktemp("injection-gguf")
    files = {f"runbooks/{d.path}": d.text for d in GGUF_SAMPLE}
    files["people/board-memo.md"] = SECRET_DOC
    cfg = make_site(root, files, RESTRICTED_SOURCE + GGUF_ENDPOINT)
    ws = open_workspace(cfg)
    try:
        ensure_default_gguf(ws.config.home)
        failures, generated = [], 0
        for doc in GGUF_SAMPLE:
            principal = ws.principal_for(ASKER, "ask", doc.question)
            deltas, final = [], None
            # Named explicitly: a base model is never chosen for answers otherwise.
            options = QueryOptions(extractive=False, endpoint="local-gemma")
            for event in ws.ask(principal, doc.question, options):
                if event.answer is not None:
                    final = event.answer
                elif event.delta:
                    deltas.append(event.delta)
                    bad = external_fetches("".join(deltas), (), VERBATIM)
                    if bad:
                        failures.append(f"stream {doc.path}: {bad[:3]}")
            assert final is not None
            generated += final.endpoint == "local-gemma"
            for text in ("".join(deltas), final.text):
                if external_fetches(text, (), VERBATIM) or SECRET_MARKER in text:
                    failures.append(f"{doc.path}: {text[:200]!r}")
            if "".join(deltas) != final.text:
                failures.append(f"{doc.path}: deltas differ from the checked answer")
    finally:
        ws.close()
    print(f"\ninjection suite, packaged GGUF: {len(GGUF_SAMPLE)} documents, {generated} generated")
    assert failures == [], "\n".join(failures[:10])
    assert generated == len(GGUF_SAMPLE)  # every answer came from the model, not a fallback
