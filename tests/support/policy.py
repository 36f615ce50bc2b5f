"""Shared builders for the policy tests: endpoints, chunks and the demo principals."""

from __future__ import annotations

from typing import Any

from sovra.config import EndpointConfig
from sovra.domain import Chunk, Principal

DEMO_GROUPS: dict[str, frozenset[str]] = {
    "alice": frozenset({"staff", "sre"}),
    "bob": frozenset({"staff", "it-support"}),
    "carol": frozenset({"staff"}),
    "dana": frozenset({"staff", "people"}),
    "erin": frozenset({"staff", "it-support"}),
    "root": frozenset({"staff", "admins"}),
}


def user(name: str) -> Principal:
    return Principal(name, DEMO_GROUPS[name])


def endpoint(name: str, **kw: Any) -> EndpointConfig:
    kind = kw.pop("kind", "openai" if kw.get("hosting", "on_prem") != "on_prem" else "embedded")
    if kind == "openai":
        kw.setdefault("base_url", f"https://{name}.example/v1")
    return EndpointConfig(name=name, kind=kind, model=kw.pop("model", "m"), **kw)


def chunk(
    classification: str,
    residency: str = "eu",
    *,
    text: str = "The VPN gateway restarts nightly.",
    source: str = "runbooks",
    doc: str = "runbooks:vpn.md",
    n: int = 0,
) -> Chunk:
    return Chunk(
        id=f"{doc}#{n}",
        document_id=doc,
        source=source,
        position=n,
        text=text,
        title="t",
        uri="u",
        heading_path=(),
        language="en",
        access=("group:staff",),
        classification=classification,
        residency=residency,
    )
