"""Shared fixtures: the shared data folder and an offline model environment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.demo_site import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every test home would otherwise export the embedding model to ONNX again (10-20 s each); the
# cache is keyed by the model's sha256, so one per machine is safe (sovra.workspace).
os.environ.setdefault(
    "SOVRA_ONNX_CACHE", str(Path(tempfile.gettempdir()) / f"sovra-test-onnx-{os.getuid()}")
)

# Property tests assert behaviour, never timing: hypothesis's default 200 ms deadline failed a
# fusion property on a busy 2-core box (250 ms on its first, cold call). Speed is bench/'s job.
settings.register_profile("sovra", deadline=None)
settings.load_profile("sovra")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"shared test data not found at {SHARED_DATA}; CI places ../shared beside the repo"
        )
    return SHARED_DATA
