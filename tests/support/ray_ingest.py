"""Stand-ins for the Ray engine's kill test, in an importable module: Ray workers unpickle
them by module name, and pytest's test modules are not importable from a worker."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sovra.models.base import Vectors
from sovra.sources import FolderConnector
from tests.support.ingest import FakeEmbedder


class PidEmbedder(FakeEmbedder):
    """A slow FakeEmbedder that writes the pid of the process embedding into a folder."""

    def __init__(self, pids: Path, delay: float) -> None:
        super().__init__(delay=delay)
        self.pids = pids

    def embed(self, texts: Sequence[str]) -> Vectors:
        (self.pids / f"embed-{os.getpid()}").touch()
        return super().embed(texts)


class PidConnector(FolderConnector):
    """A FolderConnector that writes the pid of each process that fetches into a folder."""

    pids: Path

    def fetch(self, external_id: str) -> Any:
        (self.pids / f"fetch-{os.getpid()}").touch()
        time.sleep(0.01)
        return super().fetch(external_id)


class TorchThreadsEmbedder(FakeEmbedder):
    """A FakeEmbedder that, where it embeds, writes the process's PyTorch intra-op thread
    count into a folder (what a PyTorch model in that process would run with)."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def embed(self, texts: Sequence[str]) -> Vectors:
        import torch

        (self.out / f"threads-{os.getpid()}-{torch.get_num_threads()}").touch()
        return super().embed(texts)
