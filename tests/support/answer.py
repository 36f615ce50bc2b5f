"""Answer test helpers: search hits built by hand, a generator that does what it is told, and a
tiny synced workspace (realistic runbooks, demo users, the real model)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sovra.config import load_config
from sovra.domain import Chunk
from sovra.models.generation import GenerationStats, Message, StreamedGeneration, stream_generation
from sovra.search.hybrid import SearchHit
from sovra.workspace import Workspace
from tests.support.demo_site import sync_site

DISK_PRESSURE = """# NodeDiskPressure

## Meaning

This alert fires when a node reports disk pressure: the free space on the node's root or
image filesystem fell below the eviction threshold of the kubelet.

## Impact

When a node has disk pressure, the kubelet evicts pods and refuses to schedule new ones, so
workloads on the node restart elsewhere or stay pending. Disk pressure on many nodes at once
means the cluster can no longer place new pods.

## Diagnosis

Check which filesystem is full with the node's disk usage:

```console
$ oc adm top node --show-capacity
```

The kubelet log names the eviction signal that fired.

## Mitigation

Free space on the node before the kubelet evicts more pods:

1. Cordon the node so that no new pods are placed on it.
2. Remove unused container images with `crictl rmi --prune`.
3. Delete old logs under /var/log/pods that belong to deleted pods.
4. Uncordon the node once the disk pressure condition is cleared.

If the disk fills again within a day, raise the node's disk size in the machine set.
"""

CERT_EXPIRY = """# CertificateExpiringSoon

## Meaning

A serving certificate of the cluster expires in less than seven days.

## Impact

Clients reject the endpoint once the certificate has expired.

## Mitigation

Rotate the certificate with the cluster's certificate operator and restart the pods that
mount it. Confirm the new expiry date afterwards.
"""

CONFIG = """
[workspace]
home = "data"
region = "eu-de"

[[sources]]
name = "runbooks"
kind = "folder"
path = "runbooks"
access = ["group:sre"]
classification = "internal"
residency = "eu"
"""

RESTRICTED_SOURCE = """
[[sources]]
name = "people"
kind = "folder"
path = "people"
access = ["group:people"]
classification = "confidential"
residency = "eu"
"""


def hit(text: str, i: int = 0, uri: str = "file:///doc.md", language: str = "en") -> SearchHit:
    chunk = Chunk(
        id=f"s:d{i}#0",
        document_id=f"s:d{i}",
        source="s",
        position=0,
        text=text,
        title=f"Doc {i}",
        uri=uri,
        heading_path=("Doc", "Section"),
        language=language,
        access=("public",),
        classification="internal",
        residency="eu",
        start=100,
        end=100 + len(text),
    )
    return SearchHit(chunk=chunk, score=1.0, rank=i + 1)


def make_site(root: Path, files: dict[str, str], extra_config: str = "") -> Path:
    """Write `files` under `root`, init the demo directory, sync; returns the config path."""
    for rel, text in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
    cfg = root / "sovra.toml"
    cfg.write_text(CONFIG + extra_config, encoding="utf-8")
    sync_site(cfg)
    return cfg


def open_workspace(cfg: Path) -> Workspace:
    return Workspace.open(load_config(cfg))


def scripted(text: str) -> Iterator[str]:
    """The reply word by word, as a backend streams it."""
    yield from text.split(" ")[:1]
    for piece in text.split(" ")[1:]:
        yield " " + piece


@dataclass
class ScriptedGenerator:
    """A generator that does whatever the documents tell it; records what it was sent."""

    reply: str
    context: int = 4096
    seen: list[list[Message]] = field(default_factory=list)

    @property
    def model_id(self) -> str:
        return "scripted"

    @property
    def context_length(self) -> int:
        return self.context

    @property
    def instruction_tuned(self) -> bool:
        return True

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> StreamedGeneration:
        self.seen.append(list(messages))
        stats = GenerationStats("scripted")
        return stream_generation(scripted(self.reply), stats, stop)
